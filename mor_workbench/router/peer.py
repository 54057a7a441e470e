"""What a consumer does with one provider: get an approval, open and pay for the session on
chain, send prompts and read the verified, decrypted answer, and get the close receipt.

Every reply is checked: the provider's key must belong to the bid's provider address, every
chunk must be signed by that key, approvals must be for us, this chain and this bid.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import MorError, ProviderError, RequestTooLarge, SessionExpired
from mor_workbench.protocol import (
    ENCRYPTED_PROMPTS,
    PEER_REQUEST_LIMIT,
    PingReq,
    PongRes,
    RemoteProtocolError,
    Request,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
    address_of,
    decode_approval,
    decode_receipt,
    ecies_decrypt,
    ecies_encrypt,
    eth_recover,
    sign,
    verify,
)
from mor_workbench.router.transport import call, call_once

__all__ = [
    "Approved",
    "ProviderError",
    "SessionExpired",
    "check_prompt_fits",
    "deposit_for",
    "open_session",
    "ping",
    "prompt",
    "report",
    "request_approval",
]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _request_id() -> str:
    return os.urandom(4).hex()


@dataclass(frozen=True)
class Approved:
    """A provider's signed approval, checked, ready for openSession."""

    provider: str
    pubkey: bytes
    approval: bytes
    signature: bytes
    bid_id: bytes


async def ping(endpoint: str, signer: Signer, provider: str, *, timeout: float = 5.0) -> PongRes:
    """Ping a provider (waiting at most `timeout` s); the pong must be signed by `provider`.

    The pong's health report (`models`, proxy-router v7.4+) is kept whether or not the
    provider's signature covers it (a live provider may append it after signing, so that
    older consumers still verify the pong): it only ever makes the consumer skip or prefer a
    provider, never pay one it would not pay otherwise. Raises `ProviderError` when the
    provider answers with an error, `RemoteProtocolError` when the pong is not `provider`'s
    or answers another ping, `TimeoutError`/`OSError` when it cannot be reached."""
    key = signer.private_key_bytes()
    nonce = os.urandom(8)
    replies = await call_once(
        endpoint,
        Request(_request_id(), sign(PingReq(nonce), key)),
        PongRes,
        connect_timeout=timeout,
        first_reply_timeout=timeout,
    )
    if not replies:
        raise ProviderError("the provider closed the connection without a pong")
    (reply, *_) = replies
    if reply.error is not None or reply.result is None:
        raise ProviderError(reply.error.message if reply.error else "no pong")
    verify(reply.result, address=provider)
    if reply.result.nonce != nonce:
        raise RemoteProtocolError("the pong answers another ping")
    return reply.result


def supports_encrypted_prompts(pong: PongRes) -> bool:
    """Whether the provider advertised that it decrypts ECIES-encrypted prompts."""
    return ENCRYPTED_PROMPTS in pong.version.split()


def encrypt_prompts_for(pong: PongRes, *, require_encrypted_prompts: bool = False) -> bool:
    """Encrypt prompts when the provider can decrypt them; live providers that cannot get
    plaintext (as the live network sends it), unless encryption is required."""
    if supports_encrypted_prompts(pong):
        return True
    if require_encrypted_prompts:
        raise ProviderError(
            "this provider cannot receive encrypted prompts (require_encrypted_prompts=True); "
            "choose another provider or allow plaintext prompts"
        )
    return False


async def request_approval(
    endpoint: str, signer: Signer, provider: str, bid_id: bytes, spend: int, chain_id: int
) -> Approved:
    """session.request: the approval must come from `provider` for us, this chain and bid."""
    key = signer.private_key_bytes()
    req = sign(SessionReq(signer.address, signer.public_key_65, spend, _now_ms(), bid_id), key)
    replies = await call_once(
        endpoint, Request(_request_id(), req), SessionRes, first_reply_timeout=15.0
    )
    if not replies:
        raise ProviderError("the provider closed the connection without answering")
    if replies[0].error is not None:
        raise ProviderError(replies[0].error.message)
    res = replies[0].result
    assert isinstance(res, SessionRes)
    verify(res, public_key=res.pubkey)
    if address_of(res.pubkey) != provider:
        raise RemoteProtocolError("the approving key does not belong to the bid's provider")
    if eth_recover(res.approval, res.approval_sig) != provider:
        raise RemoteProtocolError("the approval is not signed by the bid's provider")
    approval = decode_approval(res.approval)
    if (approval.user, approval.chain_id, approval.bid_id) != (signer.address, chain_id, bid_id):
        raise RemoteProtocolError("the approval is for another user, chain or bid")
    return Approved(provider, res.pubkey, res.approval, res.approval_sig, bid_id)


async def deposit_for(chain: Chain, price_per_second: int, duration_s: int) -> int:
    """The smallest deposit whose session lasts `duration_s`, by the contract's own maths
    (getSessionEnd), in both stake and direct-payment mode: the contract sizes both from the
    stipend of the deposit, so price * duration alone (what the Go router sends for direct
    payment) buys a session of minutes, not the duration asked."""
    now = await chain.block_timestamp()
    amount = await chain.call("stipendToStake", price_per_second * duration_s, now) + 1
    for _ in range(64):
        if await chain.call("getSessionEnd", amount, price_per_second, now) >= now + duration_s:
            return amount
        amount += amount // 10**6 + 1
    raise MorError("could not size a deposit for that duration")


async def open_session(
    chain: Chain,
    signer: Signer,
    approved: Approved,
    amount: int,
    *,
    direct_payment: bool = False,
    standing_allowance: int = 0,
    on_hash: Callable[[str], None] | None = None,
) -> bytes:
    """Open the session on chain (ERC-20 approving first only when the Diamond's allowance is
    short of `amount`, then for max(amount, `standing_allowance`) wei, so later opens need no
    approve of their own); its id. `on_hash` hears the openSession transaction's hash before it
    is broadcast."""
    token, diamond = chain.deployment.token, chain.deployment.diamond
    allowance = await chain.call("allowance", signer.address, diamond, to=token)
    if allowance < amount:
        await chain.transact(signer, "approve", diamond, max(amount, standing_allowance), to=token)
    receipt = await chain.transact(
        signer,
        "openSession",
        signer.address,
        amount,
        direct_payment,
        approved.approval,
        approved.signature,
        on_hash=on_hash,
    )
    session_id = opened_session_id(chain, receipt)
    if session_id is None:
        raise MorError("openSession was mined without a SessionOpened event")
    return session_id


def opened_session_id(chain: Chain, receipt: dict[str, Any]) -> bytes | None:
    """The id in a transaction receipt's SessionOpened log (None when it has none)."""
    for log in receipt.get("logs") or ():
        if log.get("address", "").lower() != chain.deployment.diamond.lower():
            continue
        topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
        decoded = chain.diamond_abi.decode_log(topics, bytes.fromhex(log["data"][2:]))
        if decoded and decoded[0] == "SessionOpened":
            return decoded[1]["sessionId"]
    return None


_ECIES_OVERHEAD = 65 + 16 + 32  # go-ethereum ECIES: ephemeral public key, IV, HMAC-SHA256


def check_prompt_fits(body: dict[str, Any], limit: int = PEER_REQUEST_LIMIT) -> None:
    """Raise `RequestTooLarge` when `body` would not fit a provider's request limit as a
    session.prompt message, sized as sent encrypted (hex of the ECIES box, the larger form),
    so a request no provider can read is refused before any session is opened."""
    text = json.dumps(body, separators=(",", ":"))
    boxed = "0x" + "00" * (len(text.encode()) + _ECIES_OVERHEAD)
    placeholder = SessionPromptReq(b"\0" * 32, boxed, _now_ms(), b"\0" * 65)
    size = len(Request(_request_id(), placeholder).encode())
    if size > limit:
        raise RequestTooLarge(size, limit)


async def prompt(
    endpoint: str,
    signer: Signer,
    session_id: bytes,
    provider_pubkey: bytes,
    body: dict[str, Any],
    *,
    encrypt: bool,
    first_reply_timeout: float = 90.0,
    idle_timeout: float = 60.0,
) -> AsyncIterator[Any]:
    """Send an OpenAI request body; yield each verified, decrypted payload (chunks, or the
    completion), stopping at "[DONE]"."""
    key = signer.private_key_bytes()
    text = json.dumps(body, separators=(",", ":"))
    if encrypt:
        text = "0x" + ecies_encrypt(provider_pubkey, text.encode()).hex()
    req = Request(_request_id(), sign(SessionPromptReq(session_id, text, _now_ms()), key))
    finished = False
    async for reply in call(
        endpoint,
        req,
        SessionPromptRes,
        first_reply_timeout=first_reply_timeout,
        idle_timeout=idle_timeout,
    ):
        if reply.error is not None:
            message = reply.error.message
            if reply.error.signature is not None and message.startswith("0x"):
                verify(reply.error, public_key=provider_pubkey)
                message = ecies_decrypt(key, bytes.fromhex(message[2:])).decode(errors="replace")
            raise prompt_error(message)
        assert reply.result is not None
        verify(reply.result, public_key=provider_pubkey)
        payload = json.loads(
            ecies_decrypt(key, bytes.fromhex(reply.result.message.removeprefix("0x")))
        )
        if payload == "[DONE]":
            return
        if not body.get("stream"):
            finished = True
        yield payload
    if not finished:
        raise ProviderError("the provider closed the connection before the answer was complete")


_EXPIRED = ("session expired", "session is closed")


def prompt_error(message: str) -> ProviderError:
    """The typed error for a provider's refusal: the backend's own OpenAI error JSON says
    whether the request was at fault (then no other provider would take it either)."""
    try:
        error = json.loads(message).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        text = str(error.get("message") or message)
        request_fault = error.get("type") == "invalid_request_error" and error.get("code") not in (
            "model_not_found",
        )
        return ProviderError(f"the model refused the request: {text}", retryable=not request_fault)
    if message.lower().startswith(_EXPIRED):
        return SessionExpired(f"the session has ended ({message}): open a new one")
    return ProviderError(message)


async def report(
    endpoint: str, signer: Signer, session_id: bytes, provider_pubkey: bytes, provider: str
) -> tuple[bytes, bytes]:
    """The provider's signed close receipt: (receipt bytes, EIP-191 signature)."""
    key = signer.private_key_bytes()
    req = sign(SessionReportReq("0x" + session_id.hex(), _now_ms()), key)
    replies = await call_once(
        endpoint, Request(_request_id(), req), SessionReportRes, first_reply_timeout=15.0
    )
    if not replies or replies[0].error is not None:
        raise ProviderError(replies[0].error.message if replies else "no report")
    res = replies[0].result
    assert isinstance(res, SessionReportRes)
    verify(res, public_key=provider_pubkey)
    if eth_recover(res.message, res.signed_report) != provider:
        raise RemoteProtocolError("the receipt is not signed by the session's provider")
    if decode_receipt(res.message).session_id != session_id:
        raise RemoteProtocolError("the receipt is for another session")
    return res.message, res.signed_report
