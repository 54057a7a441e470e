"""Provider health before any money moves: the health policies over real signed pongs, and on
the sandbox a provider whose backend is down reports it unhealthy in its pong, so the consumer
skips it under every policy before any transaction, and `wb.bids()` shows it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass

import extra_provider
import pytest

import mor_workbench as mor
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import listing, resolve_model
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.protocol import PongRes, sign
from mor_workbench.protocol.messages import ModelHealth
from mor_workbench.provider import health as health_module
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import health, peer
from mor_workbench.sandbox.model_server import ModelServer
from mor_workbench.sandbox.model_server.profiles import LatencyProfile

MODEL = "llama-3.3-70b"
SANDBOX_MODELS = ("llama-3.3-70b", "qwen3-235b", "mistral-31-24b", "gpt-oss-120b")
KEY = bytes.fromhex("81f44a49c40f206517efbbcca783d808914841200e0ac9a769368e1b2741e227")
MODEL_ID = bytes.fromhex("ab" * 32)


@dataclass(frozen=True)
class Bid:
    provider: str
    endpoint: str = "127.0.0.1:1"
    model_id: bytes = MODEL_ID


def answered(status: str | None, error_kind: str = "") -> health.Checked:
    """A provider's signed pong, as received, reporting `status` for MODEL_ID (None: no report)."""
    models = None if status is None else (ModelHealth(MODEL_ID, status, error_kind=error_kind),)
    pong = sign(PongRes(b"\x01", "v7.9.0", models=models), KEY)
    return health.Checked(PongRes.from_json(json.loads(pong.encode())))


REPORTS = {
    "0xhealthy": answered("healthy"),
    "0xdegraded": answered("degraded", "rate_limited"),
    "0xratelimited": answered("unhealthy", "rate_limited"),  # v7.4-v7.8's form of a 429
    "0xnoreport": answered(None),
    "0xnobid": answered("no_bid"),
    "0xunhealthy": answered("unhealthy", "bad_response"),
    "0xnoconfig": answered("no_model_configured"),
    "0xtee": answered("tee_unverified"),
    "0xsilent": health.Checked(None, "ping failed: timed out"),
}
# In strategy order: the unknown ones first, to show that "preferred" moves them back.
ORDER = [Bid(p) for p in ("0xnoreport", "0xnobid", "0xunhealthy", "0xhealthy", "0xratelimited")]
ORDER += [Bid(p) for p in ("0xnoconfig", "0xtee", "0xsilent", "0xdegraded")]
REFUSED = {"0xunhealthy", "0xnoconfig", "0xtee", "0xsilent"}


def gate(policy: str, *, single: bool = False) -> tuple[list[str], dict[str, str]]:
    plan, skipped = health.gate(ORDER, REPORTS, policy, single_provider=single)  # type: ignore[arg-type]
    return [b.provider for b, _ in plan], dict(skipped)


def test_permissive_skips_only_providers_that_cannot_serve_the_model() -> None:
    asked, skipped = gate("permissive")
    assert asked == ["0xnoreport", "0xnobid", "0xhealthy", "0xratelimited", "0xdegraded"]
    assert set(skipped) == REFUSED
    assert skipped["0xunhealthy"] == "it reported the model unhealthy (bad_response)"
    assert skipped["0xtee"] == "it reported the model tee_unverified"
    assert skipped["0xsilent"] == "ping failed: timed out"


def test_preferred_asks_healthy_and_degraded_first_then_the_unknown() -> None:
    asked, skipped = gate("preferred")
    assert asked == ["0xhealthy", "0xratelimited", "0xdegraded", "0xnoreport", "0xnobid"]
    assert set(skipped) == REFUSED


def test_strict_asks_healthy_only_and_rate_limited_counts_as_degraded() -> None:
    asked, skipped = gate("strict")
    assert asked == ["0xhealthy"]
    assert set(skipped) == REFUSED | {"0xnoreport", "0xnobid", "0xratelimited", "0xdegraded"}
    assert "strict" in skipped["0xratelimited"] and "no health report" in skipped["0xnoreport"]


def test_a_single_provider_model_opens_permissively_but_never_with_a_refusing_provider() -> None:
    for policy in health.POLICIES:
        plan, skipped = health.gate([Bid("0xnoreport")], REPORTS, policy, single_provider=True)
        assert [b.provider for b, _ in plan] == ["0xnoreport"] and not skipped
        plan, skipped = health.gate([Bid("0xunhealthy")], REPORTS, policy, single_provider=True)
        assert not plan and [p for p, _ in skipped] == ["0xunhealthy"]


def test_the_policy_is_a_strategy_option_checked_up_front() -> None:
    assert mor.Strategy().health == "permissive"  # the live default (SESSION_HEALTH_POLICY)
    assert mor.Strategy.of({"health": "strict"}).health == "strict"
    with pytest.raises(mor.ConfigurationError, match=r"'permissive'.*'preferred' or 'strict'"):
        mor.Strategy.of({"health": "careful"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _retire(chain: Chain, provider: Signer) -> None:
    """Delete the extra provider's bids and deregister it: the shared sandbox's market is
    left as other tests expect it (three providers)."""
    (bids,) = await listing(chain, "getProviderActiveBids", [(provider.address,)])
    for bid_id in bids:
        await chain.transact(provider, "deleteModelBid", bid_id)
    await chain.transact(provider, "providerDeregister", provider.address)


@pytest.fixture
async def broken_provider(sandbox_info):
    """An extra provider bidding on MODEL whose backend is down (a closed port), registered
    at its own real provider router; its bid is deleted afterwards."""
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = Signer(os.urandom(32))
    model_id, _ = await resolve_model(chain, MODEL)
    backend = f"http://127.0.0.1:{_closed_port()}/v1/chat/completions"
    server = ProviderServer(
        signer=provider,
        chain=chain,
        models=[ModelConfig(model_id, MODEL, backend)],
        claim_interval=None,
    )
    await server.start()
    try:
        await extra_provider.register(
            chain, sandbox_info.signer("owner"), provider, server.endpoint
        )
        await chain.transact(provider, "postModelBid", provider.address, model_id, 10**12)
        yield {"chain": chain, "server": server, "provider": provider, "model_id": model_id}
    finally:
        await _retire(chain, provider)
        await server.stop()
        await chain.rpc.aclose()


async def test_the_report_covers_configured_models_and_bids_from_the_probe_loop(
    sandbox_info,
) -> None:
    """Configured and bid: probed (a backend answering 500 is unhealthy, a working one
    healthy); configured without a bid: no_bid; a bid with no backend: no_model_configured.
    With an interval the first sweep runs at start, without being asked."""
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = Signer(os.urandom(32))
    ids = {name: (await resolve_model(chain, name))[0] for name in SANDBOX_MODELS}
    failing, working, idle, unserved = SANDBOX_MODELS
    erroring = LatencyProfile(ttft_s=0.0, jitter=0.0, error_rate=1.0)
    try:
        async with (
            ModelServer([failing], profile=erroring) as bad,
            ModelServer([working, idle], profile="instant") as good,
        ):
            configs = [
                ModelConfig(ids[failing], failing, bad.base_url + "/chat/completions"),
                ModelConfig(ids[working], working, good.base_url + "/chat/completions"),
                ModelConfig(ids[idle], idle, good.base_url + "/chat/completions"),
            ]
            await extra_provider.register(
                chain, sandbox_info.signer("owner"), provider, "127.0.0.1:1"
            )
            for name in (failing, working, unserved):
                await chain.transact(provider, "postModelBid", provider.address, ids[name], 10**12)
            async with ProviderServer(
                signer=provider,
                chain=chain,
                models=configs,
                claim_interval=None,
                health_interval=3600,
                health_probe_delay=0,
            ) as server:
                while server.health.report is None:  # the sweep at start, not a refresh
                    await asyncio.sleep(0.05)
                report = {e.model_name: e for e in server.health.report}
    finally:
        await _retire(chain, provider)
        await chain.rpc.aclose()
    assert set(report) == set(SANDBOX_MODELS)
    assert (report[failing].status, report[failing].error_kind) == ("unhealthy", "bad_response")
    assert report[failing].http_status == 500
    assert (report[working].status, report[working].http_status) == ("healthy", 200)
    assert report[idle].status == "no_bid" and not report[idle].bid_id
    assert report[unserved].status == "no_model_configured" and report[unserved].bid_id


async def test_a_provider_with_a_dead_backend_is_skipped_before_any_transaction(
    broken_provider, sandbox_info, sandbox_dir
) -> None:
    m = broken_provider
    consumer = sandbox_info.signer("consumer")
    assert (await peer.ping(m["server"].endpoint, consumer, m["provider"].address)).models is None

    report = await m["server"].refresh_health()
    (entry,) = report
    assert (entry.model_id, entry.status, entry.error_kind) == (
        m["model_id"],
        "unhealthy",
        "unreachable",
    )
    assert entry.model_name == MODEL and entry.bid_id  # the on-chain name and the bid
    pong = await peer.ping(m["server"].endpoint, consumer, m["provider"].address)
    assert pong.health_of(m["model_id"]) == entry

    nonce = await m["chain"].rpc.request("eth_getTransactionCount", [consumer.address, "latest"])
    bad = m["provider"].address
    for policy in health.POLICIES:
        wb = await mor.aconnect(
            "sandbox", sandbox_dir=sandbox_dir, strategy={"allow": [bad], "health": policy}
        )
        try:
            with pytest.raises(mor.NoProviderAvailable) as refused:
                await wb.open_session(MODEL)
        finally:
            await wb.close()
        assert refused.value.tried == [(bad, "it reported the model unhealthy (unreachable)")]
    after = await m["chain"].rpc.request("eth_getTransactionCount", [consumer.address, "latest"])
    assert after == nonce  # nothing was approved, paid or sent


async def test_preferred_opens_with_a_healthy_provider_and_bids_show_health(
    broken_provider, sandbox_info, sandbox_dir
) -> None:
    m = broken_provider
    await m["server"].refresh_health()
    good = sandbox_info.signer("provider:fast").address
    bad = m["provider"].address
    wb = await mor.aconnect(
        "sandbox", sandbox_dir=sandbox_dir, strategy={"allow": [bad, good], "health": "preferred"}
    )
    try:
        frame = await wb.bids(MODEL)
        shown = dict(zip(frame["provider"], frame["health"], strict=True))
        assert shown[bad] == "unhealthy (unreachable)"
        assert shown[good] == "not reported"  # the sandbox providers run no sweeps
        session = await wb.open_session(MODEL, duration="5m")
        assert session.provider == good
        await session.close()
    finally:
        await wb.close()


async def test_live_traffic_flips_a_model_unhealthy_after_three_backend_failures(
    sandbox_info, sandbox_dir
) -> None:
    """As live providers do since v7.5 (MODEL_HEALTH_MAX_CONSECUTIVE_ERRORS = 3): with no
    sweep running, three prompts in a row whose backend answers 500 publish the model
    unhealthy in the pong (the last failure's kind and status), so consumers stop paying it;
    an answered prompt in between restarts the count, and a sweep whose probe answers
    clears it."""
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = Signer(os.urandom(32))
    consumer = sandbox_info.signer("consumer")
    model_id, _ = await resolve_model(chain, MODEL)
    failing = LatencyProfile(ttft_s=0.0, jitter=0.0, error_rate=1.0)
    working = LatencyProfile(ttft_s=0.0, jitter=0.0)
    try:
        async with ModelServer([MODEL], profile=failing) as backend:
            config = ModelConfig(model_id, MODEL, backend.base_url + "/chat/completions")
            async with ProviderServer(
                signer=provider, chain=chain, models=[config], claim_interval=None
            ) as server:
                await extra_provider.register(
                    chain, sandbox_info.signer("owner"), provider, server.endpoint
                )
                await chain.transact(provider, "postModelBid", provider.address, model_id, 10**12)
                wb = await mor.aconnect(
                    "sandbox",
                    sandbox_dir=sandbox_dir,
                    strategy={"allow": [provider.address]},
                    max_failovers=0,
                )

                async def health_after(outcomes: str) -> ModelHealth | None:
                    for outcome in outcomes:  # "x": the backend fails, "o": it answers
                        backend.profile = failing if outcome == "x" else working
                        if outcome == "x":
                            with pytest.raises(mor.ProviderError):
                                await wb.chat("hi", model=MODEL)
                        else:
                            assert await wb.chat("hi", model=MODEL)
                    pong = await peer.ping(server.endpoint, consumer, provider.address)
                    return pong.health_of(model_id)

                try:
                    reset = await health_after("xxo" + "xx")
                    flipped = await health_after("x")
                    with pytest.raises(mor.NoProviderAvailable, match="unhealthy"):
                        await wb.chat("hi", model=MODEL)  # never paid again
                    backend.profile = working
                    swept = {e.model_id: e for e in await server.refresh_health()}[model_id]
                    cleared = await peer.ping(server.endpoint, consumer, provider.address)
                finally:
                    await wb.close()
    finally:
        await _retire(chain, provider)
        await chain.rpc.aclose()
    assert reset is None  # no sweep ran: two failures after an answer flip nothing
    assert (flipped.status, flipped.error_kind, flipped.http_status) == (
        "unhealthy",
        "bad_response",
        500,
    )
    assert flipped.model_name == MODEL and health_module.MAX_CONSECUTIVE_ERRORS == 3
    assert swept.status == "healthy" and cleared.health_of(model_id) == swept
