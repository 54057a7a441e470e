"""A real provider router on a real socket, a simulated backend, the real contracts: a raw
MOR-RPC client built from the protocol module gets signed, encrypted, streamed answers, and
forged, replayed, stale and foreign requests are refused."""

from __future__ import annotations

import json
import os
import time

import pytest
from eth_account import Account

from mor_workbench.chain import listings
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.protocol import (
    PingReq,
    PongRes,
    Request,
    Response,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
    ecies_decrypt,
    ecies_encrypt,
    eth_recover,
    public_key_of,
    sign,
    verify,
)
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.router.transport import call_once
from mor_workbench.sandbox.model_server import ModelServer

MODEL = "llama-3.3-70b"


async def rpc(endpoint: str, request: Request | bytes, expect) -> list[Response]:
    """One MOR-RPC call as the live consumer makes it: connect, write, read until closed."""
    return await call_once(endpoint, request, expect)


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def market(sandbox_info):
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = sandbox_info.signer("provider:balanced")
    model_id, _ = await listings.resolve_model(chain, MODEL)
    async with ModelServer([MODEL], profile="fast") as backend:
        # Unlimited slots: capacity counts every session open on chain for this provider, and
        # other tests leave some open on this shared sandbox (test_provider_sessions tests it).
        config = ModelConfig(model_id, MODEL, backend.base_url + "/chat/completions")
        async with ProviderServer(
            signer=provider, chain=chain, models=[config], claim_interval=None
        ) as server:
            bids = await tables.bids(chain, MODEL)
            bid = bids[bids["provider"] == provider.address].iloc[0]
            yield {
                "chain": chain,
                "server": server,
                "provider": provider,
                "backend": backend,
                "consumer": sandbox_info.signer("consumer"),
                "bid": bid,
                "model_id": model_id,
            }
    await chain.rpc.aclose()


async def open_session(m) -> tuple[bytes, bytes]:
    """Approval from the provider, then openSession on chain: (session id, provider key)."""
    price = int(m["bid"]["price_per_second_wei"])
    approved = await peer.request_approval(
        m["server"].endpoint,
        m["consumer"],
        m["provider"].address,
        bytes.fromhex(m["bid"]["id"][2:]),
        10**18,
        m["chain"].deployment.chain_id,
    )
    amount = await peer.deposit_for(m["chain"], price, 900)
    session_id = await peer.open_session(m["chain"], m["consumer"], approved, amount)
    return session_id, approved.pubkey


def prompt(
    m,
    session_id: bytes,
    body: dict,
    *,
    provider_key: bytes | None = None,
    key: bytes | None = None,
    timestamp: int | None = None,
) -> Request:
    key = key or m["consumer"].private_key_bytes()
    text = json.dumps(body)
    if provider_key is not None:
        text = "0x" + ecies_encrypt(provider_key, text.encode()).hex()
    return Request("p1", sign(SessionPromptReq(session_id, text, timestamp or now_ms()), key))


async def test_ping_advertises_encrypted_prompts(market) -> None:
    nonce = os.urandom(8)
    key = market["consumer"].private_key_bytes()
    (reply,) = await rpc(
        market["server"].endpoint, Request("1", sign(PingReq(nonce), key)), PongRes
    )
    verify(reply.result, address=market["provider"].address)
    assert reply.result.nonce == nonce and "encrypted-prompts" in reply.result.version


async def test_streamed_prompt_and_signed_report(market) -> None:
    session_id, provider_key = await open_session(market)
    key = market["consumer"].private_key_bytes()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "seed": 3,
    }
    replies = await rpc(
        market["server"].endpoint,
        prompt(market, session_id, body, provider_key=provider_key),
        SessionPromptRes,
    )
    payloads = []
    for reply in replies:
        verify(reply.result, public_key=provider_key)
        payloads.append(json.loads(ecies_decrypt(key, bytes.fromhex(reply.result.message[2:]))))
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    direct = await _direct(market["backend"], {**body, "stream": False})
    assert streamed == direct and streamed

    plain = {"model": MODEL, "messages": [{"role": "user", "content": "again"}]}
    (reply,) = await rpc(
        market["server"].endpoint, prompt(market, session_id, plain), SessionPromptRes
    )
    completion = json.loads(ecies_decrypt(key, bytes.fromhex(reply.result.message[2:])))
    assert (
        completion["object"] == "chat.completion" and completion["usage"]["completion_tokens"] > 0
    )

    report = sign(SessionReportReq("0x" + session_id.hex(), now_ms()), key)
    (reply,) = await rpc(market["server"].endpoint, Request("r1", report), SessionReportRes)
    verify(reply.result, public_key=provider_key)
    assert (
        eth_recover(reply.result.message, reply.result.signed_report) == market["provider"].address
    )
    chain, consumer = market["chain"], market["consumer"]
    before = await chain.call(
        "getProviderModelStats", market["model_id"], market["provider"].address
    )
    await chain.transact(consumer, "closeSession", reply.result.message, reply.result.signed_report)
    after = await chain.call(
        "getProviderModelStats", market["model_id"], market["provider"].address
    )
    assert after["successCount"] == before["successCount"] + 1  # accepted as the provider's receipt


async def _direct(backend: ModelServer, body: dict) -> str:
    import openai

    client = openai.AsyncOpenAI(base_url=backend.base_url, api_key="x")
    reply = await client.chat.completions.create(**body)
    return reply.choices[0].message.content


async def test_forged_replayed_stale_and_foreign_requests_are_refused(market) -> None:
    session_id, _ = await open_session(market)
    endpoint = market["server"].endpoint
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    forged = prompt(market, session_id, body, key=Account.create().key)
    (reply,) = await rpc(endpoint, forged, SessionPromptRes)
    assert "not signed by the session's user" in reply.error.message

    good = prompt(market, session_id, body)
    (first,) = await rpc(endpoint, good, SessionPromptRes)
    assert first.result is not None
    (again,) = await rpc(endpoint, good, SessionPromptRes)
    assert "replayed" in again.error.message

    stale = prompt(market, session_id, body, timestamp=now_ms() - 10 * 60 * 1000)
    (reply,) = await rpc(endpoint, stale, SessionPromptRes)
    assert "off the provider's clock" in reply.error.message

    (reply,) = await rpc(endpoint, prompt(market, b"\x07" * 32, body), SessionPromptRes)
    assert "unknown session" in reply.error.message

    key = market["consumer"].private_key_bytes()
    other_bid = bytes.fromhex("ee" * 32)
    req = sign(
        SessionReq(market["consumer"].address, public_key_of(key), 1, now_ms(), other_bid), key
    )
    (reply,) = await rpc(endpoint, Request("x", req), SessionRes)
    assert "not an active bid of this provider" in reply.error.message

    impostor = sign(
        SessionReq(
            market["consumer"].address, public_key_of(Account.create().key), 1, now_ms(), other_bid
        ),
        key,
    )
    (reply,) = await rpc(endpoint, Request("y", impostor), SessionRes)
    assert (
        "not signed by the expected key" in reply.error.message
        or "does not belong" in reply.error.message
    )


@pytest.mark.parametrize(
    "junk",
    [
        b"{not json}",
        b'{"id":"1","method":"session.nuke","params":{}}',
        b'{"id":"1","method":"session.prompt","params":{"timestamp":"x"}}',
        b"[1,2,3]",
    ],
)
async def test_malformed_requests_get_an_error_and_the_server_keeps_serving(market, junk) -> None:
    (reply,) = await rpc(market["server"].endpoint, junk, SessionPromptRes)
    assert reply.error is not None and reply.error.signature is not None
    key = market["consumer"].private_key_bytes()
    (pong,) = await rpc(
        market["server"].endpoint, Request("2", sign(PingReq(b"12345678"), key)), PongRes
    )
    assert pong.result is not None


async def test_oversized_message_is_cut_off(market) -> None:
    big = b'{"id":"1","method":"session.prompt","params":{"message":"' + b"x" * (2 * 1024 * 1024)
    (reply,) = await rpc(market["server"].endpoint, big, SessionPromptRes)
    assert "longer than" in reply.error.message


async def test_consumer_peer_calls_end_to_end(market) -> None:
    """The router's peer calls: ping, approval, deposit by the contract's maths, a streamed
    encrypted prompt, the report, and a close the contract accepts as undisputed."""
    m = market
    pong = await peer.ping(m["server"].endpoint, m["consumer"], m["provider"].address)
    assert peer.supports_encrypted_prompts(pong)
    session_id, provider_key = await open_session(m)
    session = await m["chain"].call("getSession", session_id)
    assert session["endsAt"] - session["openedAt"] >= 900
    body = {"model": MODEL, "messages": [{"role": "user", "content": "stream"}], "stream": True}
    chunks = [
        c
        async for c in peer.prompt(
            m["server"].endpoint, m["consumer"], session_id, provider_key, body, encrypt=True
        )
    ]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    receipt, signature = await peer.report(
        m["server"].endpoint, m["consumer"], session_id, provider_key, m["provider"].address
    )
    await m["chain"].transact(m["consumer"], "closeSession", receipt, signature)
    closed = await m["chain"].call("getSession", session_id)
    assert closed["closedAt"] and closed["closeoutType"] == 0


async def test_backend_errors_reach_the_consumer_decrypted(market) -> None:
    session_id, provider_key = await open_session(market)
    body = {"model": MODEL, "messages": []}  # the backend answers 400
    with pytest.raises(peer.ProviderError, match="non-empty array"):
        async for _ in peer.prompt(
            market["server"].endpoint,
            market["consumer"],
            session_id,
            provider_key,
            body,
            encrypt=False,
        ):
            pass


def test_plaintext_only_providers_are_refused_when_encryption_is_required() -> None:
    from mor_workbench.protocol import PongRes

    live = PongRes(b"\x01", "v7.0.0")
    ours = PongRes(b"\x01", "mor-workbench/0.1.0 encrypted-prompts")
    assert peer.encrypt_prompts_for(ours, require_encrypted_prompts=True) is True
    assert peer.encrypt_prompts_for(live) is False  # plaintext, as the live network sends it
    with pytest.raises(peer.ProviderError, match="require_encrypted_prompts"):
        peer.encrypt_prompts_for(live, require_encrypted_prompts=True)
