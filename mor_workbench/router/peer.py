"""What a consumer does with one provider: get an approval, open and pay for the session on
chain, send prompts and read the verified, decrypted answer, and get the close receipt.

Every reply is checked: the provider's key must belong to the bid's provider address, every
chunk must be signed by that key (on the fast channel, sealed under a key that one signed and
covered by its signed transcript), approvals must be for us, this chain and this bid.

Every exchange takes `transport=`: TCP unless a test passes an in-memory one
(`mor_workbench.router.transport.MockTransport`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import (
    MorError,
    ProviderError,
    RequestRejected,
    RequestTooLarge,
    SessionExpired,
)
from mor_workbench.protocol import (
    ENCRYPTED_PROMPTS,
    PEER_REQUEST_LIMIT,
    PingReq,
    PongRes,
    RemoteProtocolError,
    Request,
    Response,
    RpcError,
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
from mor_workbench.protocol.ecies import BoxOpener, BoxSealer
from mor_workbench.protocol.fastchannel import (
    FAST_CHANNEL,
    KEEP_ALIVE,
    Data,
    End,
    Failure,
    Offer,
    Replies,
)
from mor_workbench.protocol.live_chunks import ChunkLines, SealedChunk
from mor_workbench.protocol.payload_json import parse
from mor_workbench.protocol.signing import keccak, parse_public_key, verify_digest
from mor_workbench.router.transport import (
    CONSUMER_MESSAGE_LIMIT,
    TCP,
    ConnectionPool,
    PeerTransport,
    call,
    call_once,
)

__all__ = [
    "Approved",
    "ChunkReader",
    "ProviderError",
    "SessionExpired",
    "check_prompt_fits",
    "deposit_for",
    "open_session",
    "output_cap",
    "parse_chunk",
    "ping",
    "prompt",
    "prompt_error",
    "prompt_size",
    "report",
    "request_approval",
    "supports_fast_channel",
    "supports_keep_alive",
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


async def ping(
    endpoint: str,
    signer: Signer,
    provider: str,
    *,
    timeout: float = 5.0,
    transport: PeerTransport = TCP,
) -> PongRes:
    """Ping a provider (waiting at most `timeout` s); the pong must be signed by `provider`.

    The pong's health report (`models`, proxy-router v7.4+) is kept whether or not the
    provider's signature covers it (a live provider may append it after signing, so that
    older consumers still verify the pong): it only ever makes the consumer skip or prefer a
    provider, never pay one it would not pay otherwise. Raises `ProviderError` when the
    provider answers with an error, `RemoteProtocolError` when the pong is not `provider`'s
    or answers another ping, `TimeoutError`/`OSError` when it cannot be reached."""
    key = signer.signing_key
    nonce = os.urandom(8)
    replies = await call_once(
        endpoint,
        Request(_request_id(), sign(PingReq(nonce), key)),
        PongRes,
        transport=transport,
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


def supports_fast_channel(pong: PongRes) -> bool:
    """Whether the provider advertised the fast channel (`mor_workbench.protocol.fastchannel`):
    only then is it offered, so live providers never see the offer."""
    return FAST_CHANNEL in pong.version.split()


def supports_keep_alive(pong: PongRes) -> bool:
    """Whether the provider keeps a connection open after a fast-channel answer for the next
    request (`fastchannel.KEEP_ALIVE`): then a router reuses its connections to it."""
    return KEEP_ALIVE in pong.version.split()


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
    endpoint: str,
    signer: Signer,
    provider: str,
    bid_id: bytes,
    spend: int,
    chain_id: int,
    *,
    transport: PeerTransport = TCP,
) -> Approved:
    """session.request: the approval must come from `provider` for us, this chain and bid."""
    key = signer.signing_key
    req = sign(SessionReq(signer.address, signer.public_key_65, spend, _now_ms(), bid_id), key)
    replies = await call_once(
        endpoint,
        Request(_request_id(), req),
        SessionRes,
        transport=transport,
        first_reply_timeout=15.0,
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


@functools.cache
def _empty_prompt_size() -> int:
    """Bytes of a session.prompt request whose message is an empty 0x box (hex and JSON
    escaping free), stamped now: ids, timestamps and signatures are of fixed length."""
    placeholder = SessionPromptReq(b"\0" * 32, "0x", _now_ms(), b"\0" * 65)
    return len(Request(_request_id(), placeholder).encode())


def prompt_size(body: dict[str, Any]) -> int:
    """Bytes of `body` as a session.prompt message, sized as sent encrypted (hex of the ECIES
    box, the larger form): the message grows by two hex digits a byte of the box, with
    nothing else that varies."""
    text = json.dumps(body, separators=(",", ":"))
    return _empty_prompt_size() + 2 * (len(text.encode()) + _ECIES_OVERHEAD)


def check_prompt_fits(body: dict[str, Any], limit: int = PEER_REQUEST_LIMIT) -> None:
    """Raise `RequestTooLarge` when `body` would not fit a provider's request limit as a
    session.prompt message (`prompt_size`), so a request no provider can read is refused
    before any session is opened."""
    size = prompt_size(body)
    if size > limit:
        raise RequestTooLarge(size, limit)


OUTPUT_BYTES_PER_TOKEN = 1024
"""Bytes of decrypted answer allowed per requested token: a streamed token is one chunk of a
few hundred bytes of JSON, so this leaves several times the headroom."""
OUTPUT_BYTES_BASE = 256 * 1024
"""Bytes allowed on top of the per-token budget: role, finish, usage and tool-call chunks."""
OUTPUT_BYTES_UNBOUNDED = 64 * 1024 * 1024
"""Bytes allowed for an answer whose request sets no token limit."""


def output_cap(body: dict[str, Any]) -> int:
    """The most bytes of decrypted answer a provider may send for `body` (an OpenAI request):
    derived from `max_completion_tokens` (or `max_tokens`) times `n`, with generous headroom;
    `OUTPUT_BYTES_UNBOUNDED` when the request sets no limit. A provider sending more is at
    fault (a stream that never ends)."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return OUTPUT_BYTES_UNBOUNDED
    budget = OUTPUT_BYTES_BASE + limit * choices * OUTPUT_BYTES_PER_TOKEN
    return min(budget, OUTPUT_BYTES_UNBOUNDED)


def _box_of(message: str, what: str) -> bytes:
    """The ECIES box a 0x-hex `message` carries; `RemoteProtocolError` when the provider sent
    anything else (plaintext where encryption is required, bad hex)."""
    if not message.startswith("0x"):
        raise RemoteProtocolError(f"the provider sent {what} that is not encrypted to our key")
    try:
        return bytes.fromhex(message[2:])
    except ValueError:
        raise RemoteProtocolError(f"the provider sent {what} that is not hex") from None


def _decrypt_hex(key: bytes | PrivateKey, message: str, what: str) -> bytes:
    """The plaintext of a 0x-hex ECIES box addressed to `key` (see `_box_of`)."""
    return ecies_decrypt(key, _box_of(message, what))


class ChunkReader:
    """The consumer's checks on the chunks of one answer (see `prompt`): each signed by
    `provider_pubkey`, the key bound at approval (verified against it, parsed once, not
    recovered from each signature), seen once (by r ‖ s: a replay with v rewritten, 0 as 27,
    is the same signature), encrypted to our `key` (its ECIES keys derived once for each
    ephemeral key the provider uses), a JSON object or "[DONE]", and in all at most `cap`
    bytes of ECIES boxes."""

    def __init__(self, key: PrivateKey, provider_pubkey: bytes, cap: int) -> None:
        self._boxes = BoxOpener(key)
        self._provider = parse_public_key(provider_pubkey)
        self._seen: set[bytes] = set()
        self._received = 0
        self._cap = cap

    def read(self, chunk: SessionPromptRes) -> dict[str, Any] | str:
        """`chunk`'s payload; `RemoteProtocolError` when it breaks a rule above."""
        verify(chunk, public_key=self._provider)
        self._once(chunk.signature)
        self.count(len(chunk.message) // 2)  # hex: two characters a byte
        return parse_chunk(self._boxes.open(_box_of(chunk.message, "a chunk")))

    def read_sealed(self, chunk: SealedChunk) -> dict[str, Any] | str:
        """The payload of a chunk read from its line (`ChunkLines`), checked as `read` checks
        a parsed one; `RemoteProtocolError` when it breaks a rule above."""
        signature, box = chunk.signature, chunk.box
        if not verify_digest(keccak(chunk.signed), signature, self._provider):
            raise RemoteProtocolError("SessionPromptRes is not signed by the expected key")
        self._once(signature)
        self.count(len(box))
        return parse_chunk(self._boxes.open(box))

    def _once(self, signature: bytes) -> None:
        signed = signature[:64]
        if signed in self._seen:
            raise RemoteProtocolError("the provider replayed a chunk it had already sent")
        self._seen.add(signed)

    def count(self, size: int) -> None:
        """Add `size` bytes of answer (a box here, a fast-channel chunk); `RemoteProtocolError`
        once the answer exceeds the cap."""
        self._received += size
        if self._received > self._cap:
            raise _endless(self._cap)


def parse_chunk(plaintext: bytes) -> dict[str, Any] | str:
    """A chunk's payload from its JSON bytes: a JSON object or the string "[DONE]";
    `RemoteProtocolError` for anything else."""
    try:
        payload = parse(plaintext)
    except ValueError:
        raise RemoteProtocolError("the provider sent a chunk that is not JSON") from None
    if payload != "[DONE]" and not isinstance(payload, dict):
        raise RemoteProtocolError(
            f"the provider sent a chunk that is JSON but not an object ({type(payload).__name__})"
        )
    return payload


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
    transport: PeerTransport = TCP,
    fast_channel: bool = False,
    prompt_boxes: BoxSealer | None = None,
    offer: Offer | None = None,
    pool: ConnectionPool | None = None,
    on_accept: Callable[[], None] | None = None,
) -> AsyncIterator[Any]:
    """Send an OpenAI request body; yield each verified, decrypted payload (chunks, or the
    completion), stopping at "[DONE]". Timeouts in seconds. With `encrypt` the body goes
    ECIES-encrypted to `provider_pubkey`, by `prompt_boxes` when given (the session's sealer:
    one ephemeral key for its prompts), else under a fresh ephemeral key.

    With `fast_channel` (for a provider whose pong advertises it: `supports_fast_channel`) the
    prompt offers the fast channel, with `offer` (an X25519 key the caller made ahead, used
    for this prompt only) or a key made here; a provider that accepts streams sealed frames,
    checked as `mor_workbench.protocol.fastchannel` says (and raising its `ChannelError`s),
    one that does not answers on the live wire, read as below. With `pool` as well (a
    provider that keeps connections alive: `supports_keep_alive`) the request goes on an idle
    connection of the pool when there is one, and its connection goes back to the pool when
    the answer ended cleanly (`transport.call`). `on_accept` is called when the provider
    accepts the offer (the fast channel's signed accept: our provider sends it once its model
    took the prompt); on the live wire there is no such moment.

    Every chunk must be signed by `provider_pubkey`, seen once (a repeated signature is a
    replay), encrypted to us and a JSON object; the answer may not exceed `output_cap(body)`
    bytes. Raises `RemoteProtocolError` when the provider breaks one of these rules,
    `ProviderStalled` / `ProviderError` from the transport, `SessionExpired` when the session
    has ended, `RequestRejected` when the model refused the request, and `ProviderError` for
    any other refusal (see `prompt_error`)."""
    key = signer.signing_key
    text = json.dumps(body, separators=(",", ":"))
    if encrypt:
        plaintext = text.encode()
        box = (
            prompt_boxes.seal(plaintext)
            if prompt_boxes
            else ecies_encrypt(provider_pubkey, plaintext)
        )
        text = "0x" + box.hex()
    offer = (offer or Offer.new()) if fast_channel else None
    offered = offer.public_key if offer is not None else b""
    signed = sign(SessionPromptReq(session_id, text, _now_ms(), fast_channel=offered), key)
    req = Request(_request_id(), signed)
    replies: Replies | ChunkLines = ChunkLines(req.id, CONSUMER_MESSAGE_LIMIT)
    if offer is not None:
        replies = Replies(
            offer,
            session_id,
            req.id,
            signed.signature,
            signer.public_key_65,
            provider_pubkey,
            CONSUMER_MESSAGE_LIMIT,
            on_accept,
        )
    reader = ChunkReader(key, provider_pubkey, output_cap(body))
    finished = False
    exchange = call(
        endpoint,
        req,
        SessionPromptRes,
        transport=transport,
        first_reply_timeout=first_reply_timeout,
        idle_timeout=idle_timeout,
        replies=replies,
        pool=pool if offer is not None else None,
    )
    # closed as the loop ends (at END, a return, an error): a kept connection goes back to
    # the pool before the next prompt can ask for it
    async with contextlib.aclosing(exchange):
        async for reply in exchange:
            if type(reply) is SealedChunk:  # a live-wire chunk, read from its line
                payload = reader.read_sealed(reply)
            elif isinstance(reply, Response | Failure):  # a failure: a live-wire error, sealed
                response = reply if isinstance(reply, Response) else reply.response
                if response.error is not None:
                    raise _refusal(response.error, key, provider_pubkey)
                assert response.result is not None
                payload = reader.read(response.result)
            elif isinstance(reply, End):
                break
            elif isinstance(reply, Data):
                reader.count(len(reply.chunk))
                payload = parse_chunk(reply.chunk)
                if payload == "[DONE]":  # the signed END follows
                    finished = True
                    continue
            else:
                continue  # the fast channel's accept, a checkpoint: checked by its reader
            if payload == "[DONE]":
                return
            if not body.get("stream"):
                finished = True
            yield payload
    if isinstance(replies, Replies):
        replies.finish()
    if not finished:
        raise ProviderError("the provider closed the connection before the answer was complete")


def _refusal(error: RpcError, key: PrivateKey, provider_pubkey: bytes) -> ProviderError:
    """The typed error for a provider's error reply (its message decrypted when sealed)."""
    message = error.message
    if error.signature is not None and message.startswith("0x"):
        verify(error, public_key=provider_pubkey)
        message = _decrypt_hex(key, message, "an error").decode(errors="replace")
    return prompt_error(message, error.code)


def _endless(cap: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"the provider sent over {cap // 1024:,} KiB for a request that allows less "
        "(max_tokens): an answer that does not end"
    )


_EXPIRED = ("session expired", "session is closed")
"""How a provider (ours and the live Go router) words a refusal for an ended session."""
_PROVIDER_SIDE_CODES = {"model_not_found", "invalid_api_key"}
"""OpenAI error codes in an invalid_request_error that mean the provider's backend is
misconfigured, not that the consumer's request is wrong."""


def prompt_error(message: str, status: int = 400) -> ProviderError:
    """The typed error for a provider's refusal `message` (sent with MOR-RPC error `status`):
    a backend's OpenAI error JSON of type `invalid_request_error` means the request is at
    fault (`RequestRejected`, carrying the backend's fields and HTTP status); an ended session
    is `SessionExpired`; anything else is the provider's fault (`ProviderError`)."""
    try:
        error = json.loads(message).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        text = str(error.get("message") or message)
        code = error.get("code")
        kind = error.get("type")
        if kind == "invalid_request_error" and code not in _PROVIDER_SIDE_CODES:
            param = error.get("param")
            return RequestRejected(
                text,
                status=status if 400 <= status < 500 and status not in (401, 403, 429) else 400,
                type=kind,
                param=param if isinstance(param, str) else None,
                code=str(code) if code is not None else None,
            )
        return ProviderError(f"the model failed the request: {text}")
    if message.lower().startswith(_EXPIRED):
        return SessionExpired(f"the session has ended ({message}): open a new one")
    return ProviderError(message)


async def report(
    endpoint: str,
    signer: Signer,
    session_id: bytes,
    provider_pubkey: bytes,
    provider: str,
    *,
    transport: PeerTransport = TCP,
) -> tuple[bytes, bytes]:
    """The provider's signed close receipt: (receipt bytes, EIP-191 signature)."""
    key = signer.signing_key
    req = sign(SessionReportReq("0x" + session_id.hex(), _now_ms()), key)
    replies = await call_once(
        endpoint,
        Request(_request_id(), req),
        SessionReportRes,
        transport=transport,
        first_reply_timeout=15.0,
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
