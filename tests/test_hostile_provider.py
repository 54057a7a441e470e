"""A misbehaving provider (tests/misbehaving_provider.py), ranked first on a sandbox of its
own, cannot hang, crash or cheat the consumer: each fault ends in a typed error, the call
fails over to the next provider, and the bad session is closed on chain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from eth_account import Account
from misbehaving_provider import MisbehavingProvider, running_misbehaving_provider
from test_failover import _on_chain, _register

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient

MODEL = "llama-3.3-70b"
PROMPT = "Tell me about routers and rivers."
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    directory = tmp_path_factory.mktemp("hostile")
    info = sandbox.start(directory)
    key = Account.create().key.hex()
    # registered (and bid on) first, then pointed at the server once it listens
    model_id = asyncio.run(_register(info, key, "127.0.0.1:9", 10**11))
    try:
        with running_misbehaving_provider(
            key,
            lambda: Chain(RpcClient(info.rpc_url), info.deployment),
            bytes.fromhex(model_id[2:]),
            MODEL,
        ) as bad:
            asyncio.run(_register(info, key, bad.endpoint, None))
            yield {"info": info, "bad": bad, "address": Signer(key).address}
    finally:
        sandbox.reset(directory)


@pytest.fixture
def bad(market) -> Iterator[MisbehavingProvider]:
    provider = market["bad"]
    yield provider
    provider.fault = None


@pytest.fixture
def wb(market, tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = mor.connect(
        "sandbox", sandbox_dir=market["info"].directory, strategy="best", timeout=TIMEOUT_S
    )
    yield workbench
    workbench.close()


# fault -> words the failover reason must contain (the typed error's message)
REASONS = {
    "plaintext": "not encrypted",
    "not-json": "not JSON",
    "not-object": "not an object",
    "foreign-key": "not signed by the expected key",
    "replay": "replayed",
    "huge": "longer than",
    "endless": "max_tokens",
    "stall-first": f"no reply within {TIMEOUT_S:g} s",
    "stall-between": f"no reply within {TIMEOUT_S:g} s",
}


@pytest.mark.parametrize(("fault", "reason"), REASONS.items(), ids=list(REASONS))
def test_a_misbehaving_provider_is_failed_over_and_its_session_closed(
    wb, market, bad, fault: str, reason: str
) -> None:
    session = wb.open_session(MODEL, duration="6m")
    assert session.info()["provider"] == market["address"]  # the bad provider is ranked first
    bad_session = session.id
    bad.fault = fault
    stream = session.stream(PROMPT, max_tokens=10)
    text = "".join(stream)
    assert text  # the next provider answered
    assert bad.prompts >= 1  # the fault was served, not skipped
    failover = stream.info["failovers"][0]
    assert failover["provider"] == market["address"]
    assert reason in failover["reason"]
    assert session.info()["provider"] != market["address"]
    session.close()
    wb.close()  # waits for the background close of the bad session
    assert asyncio.run(_on_chain(wb, bad_session))["closedAt"]


def test_a_plain_chat_survives_an_endless_stream(wb, market, bad) -> None:
    """The issue's example: wb.chat(max_tokens=10) against a stream that never ends."""
    bad.fault = "endless"
    assert wb.chat(PROMPT, model=MODEL, max_tokens=10)


async def test_an_answer_past_the_calls_deadline_fails_over(market, bad, tmp_path, monkeypatch):
    """Valid chunks, each well within the idle timeout, but never an end: without max_tokens
    only the overall deadline (connect's `deadline=`) stops it, with `ProviderStalled` as the
    reason, then failover."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = await mor.aconnect(
        "sandbox",
        sandbox_dir=market["info"].directory,
        strategy="best",
        timeout=TIMEOUT_S,
        deadline=4.0,
    )
    try:
        session = await workbench.open_session(MODEL, duration=360)
        assert session.provider == market["address"]
        bad.fault, bad.pace_s = "slow-endless", TIMEOUT_S / 6
        stream = session.stream(PROMPT)
        assert [d async for d in stream]
        failovers = stream.info["failovers"]
        assert failovers[0]["provider"] == market["address"]
        assert "deadline" in failovers[0]["reason"]  # not the output cap, nor a stall
    finally:
        await workbench.close()


def test_the_faults_raise_typed_errors_without_failover(market, bad, tmp_path, monkeypatch):
    """With failover off and only the bad provider allowed, each fault reaches the caller as
    a typed error (never a raw ValueError / JSONDecodeError / AttributeError)."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = mor.connect(
        "sandbox",
        sandbox_dir=market["info"].directory,
        strategy={"allow": [market["address"]]},
        timeout=TIMEOUT_S,
        max_failovers=0,
    )
    try:
        for fault in ("plaintext", "not-json", "not-object", "foreign-key", "replay", "huge"):
            bad.fault = fault
            with pytest.raises(mor.ProviderError, match="providers failed") as caught:
                workbench.chat(PROMPT, model=MODEL, max_tokens=10)
            assert REASONS[fault] in str(caught.value), fault
    finally:
        workbench.close()
