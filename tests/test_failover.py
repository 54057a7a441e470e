"""Failover on a sandbox of its own: an extra provider, run as its own process and ranked
first, is killed (SIGKILL) mid-stream or frozen (SIGSTOP); the router closes its session and
carries on with the next provider, resuming a half-written answer so it reads as one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import extra_provider
import pytest
from eth_account import Account

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient

MODEL = "llama-3.3-70b"
PROMPT = "Tell me about routers and rivers."


async def _register(info: sandbox.SandboxInfo, key: str, endpoint: str, price: int | None) -> str:
    """Fund and register the extra provider (or move its endpoint); bid `price` on MODEL."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        model_id = await extra_provider.register(
            chain,
            info.signer("owner"),
            Signer(key),
            endpoint,
            model=MODEL,
            price=price,
            fund=price is not None,
        )
        return "0x" + model_id.hex()
    finally:
        await chain.rpc.aclose()


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    directory = tmp_path_factory.mktemp("failover")
    info = sandbox.start(directory)
    key = Account.create().key.hex()
    # a hundredth of the cheapest sandbox price: ranked first by the reference score
    model_id = asyncio.run(_register(info, key, "127.0.0.1:9", 10**11))
    yield {"info": info, "key": key, "model_id": model_id, "address": Signer(key).address}
    sandbox.reset(directory)


@pytest.fixture
def doomed(market, tmp_path: Path) -> Iterator[dict]:
    """The extra provider: its own simulated model server and provider router, as processes."""
    backend = subprocess.Popen(
        [sys.executable, "-m", "mor_workbench.sandbox.model_server", "--profile", "slow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    base_url = backend.stdout.readline().strip()
    config = tmp_path / "models-config.json"
    entry = {"modelId": market["model_id"], "modelName": MODEL, "apiType": "openai"}
    config.write_text(json.dumps({"models": [{**entry, "apiUrl": f"{base_url}/chat/completions"}]}))
    provider = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.cli",
            "provider",
            "--config",
            str(config),
            "--dir",
            str(market["info"].directory),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MOR_PRIVATE_KEY": market["key"]},
    )
    endpoint = provider.stdout.readline().split(" on ")[1].split(";")[0]
    asyncio.run(_register(market["info"], market["key"], endpoint, None))
    yield {"process": provider, "address": market["address"]}
    for process in (provider, backend):
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(10)


@pytest.fixture
def wb(market, tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = mor.connect(
        "sandbox", sandbox_dir=market["info"].directory, strategy="best", timeout=3.0
    )
    yield workbench
    workbench.close()


async def _on_chain(wb: mor.Workbench, session_id: str) -> dict:
    chain = Chain(RpcClient(wb.aio.chain.rpc.urls), wb.aio.chain.deployment)
    try:
        return await chain.call("getSession", bytes.fromhex(session_id[2:]))
    finally:
        await chain.rpc.aclose()


def test_a_provider_killed_mid_stream_is_replaced_and_the_answer_resumed(wb, doomed) -> None:
    stream = wb.stream(PROMPT, model=MODEL)
    deltas = iter(stream)
    first = [next(deltas) for _ in range(4)]
    assert stream.info["provider"] == doomed["address"]  # the extra provider answered first
    doomed_session = stream.info["session_id"]
    doomed["process"].kill()  # SIGKILL: no goodbye, the connection just drops
    rest = list(deltas)
    info = stream.info
    assert info["resumed"] is True and rest
    assert [f["provider"] for f in info["failovers"]] == [doomed["address"]]
    assert info["provider"] != doomed["address"]
    # one coherent answer: exactly what a healthy provider says to the same prompt
    healthy = wb.chat(PROMPT, model=MODEL)
    assert "".join(first + rest) == stream.text == healthy
    wb.close()  # waits for the background close of the dead provider's session
    closed = asyncio.run(_on_chain(wb, doomed_session))
    assert closed["closedAt"] and closed["closeoutType"] == 1  # the consumer's dispute close


def test_a_dead_provider_is_skipped_before_the_stream(wb, doomed) -> None:
    doomed["process"].kill()
    doomed["process"].wait(10)
    answer = wb.complete([{"role": "user", "content": PROMPT}], model=MODEL)
    assert answer.choices[0].message.content
    assert answer.morpheus["provider"] != doomed["address"]
    assert answer.morpheus["failovers"] == []  # refused at open time, before any prompt
    assert doomed["address"].lower() in wb.aio.router.cooldowns.cooling(60)


def test_a_frozen_provider_times_out_and_its_session_is_dispute_closed(wb, doomed) -> None:
    session = wb.open_session(MODEL, duration="6m")
    assert session.info()["provider"] == doomed["address"]
    first_id = session.id
    os.kill(doomed["process"].pid, signal.SIGSTOP)  # alive but silent: a stall
    started = time.monotonic()
    stream = session.stream(PROMPT, max_tokens=8)
    text = "".join(stream)
    assert text and time.monotonic() - started >= 3.0  # waited out the 3 s timeout
    assert stream.info["failovers"][0]["reason"].startswith("no reply within 3")
    assert session.info()["provider"] != doomed["address"] and session.id != first_id
    session.close()
    wb.close()  # waits for the background close of the frozen provider's session
    closed = asyncio.run(_on_chain(wb, first_id))
    assert closed["closedAt"] and closed["closeoutType"] == 1  # the consumer's dispute close


def test_a_request_fault_is_reported_not_failed_over(wb) -> None:
    with pytest.raises(mor.ProviderError, match="non-empty array") as caught:
        wb.complete([], model=MODEL)
    assert caught.value.retryable is False


async def test_serve_sends_an_error_event_when_the_stream_dies_without_failover(
    market, doomed, tmp_path, monkeypatch
) -> None:
    import openai
    from aiohttp import web

    from mor_workbench.serve import make_app

    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "serve"))
    workbench = await mor.aconnect(
        "sandbox", sandbox_dir=market["info"].directory, strategy="best", max_failovers=0
    )
    runner = web.AppRunner(make_app(workbench), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        api = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", api_key="-", max_retries=0
        )
        stream = await api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        seen = []
        with pytest.raises(openai.APIError, match="providers failed this call"):
            async for chunk in stream:
                seen.append(chunk)
                if len(seen) == 4:
                    doomed["process"].kill()  # the provider dies mid-answer
        assert len(seen) >= 4
    finally:
        await runner.cleanup()


def test_a_failed_session_is_closed_even_when_no_provider_takes_over(market, doomed) -> None:
    """Only the doomed provider is allowed: when it dies mid-answer nobody can take over. The
    call fails, and its session is closed (not kept, and not reused by the next call)."""
    workbench = mor.connect(
        "sandbox",
        sandbox_dir=market["info"].directory,
        strategy={"allow": [doomed["address"]]},
        timeout=3.0,
    )
    try:
        stream = workbench.stream(PROMPT, model=MODEL)
        deltas = iter(stream)
        next(deltas)
        failed_session = stream.info["session_id"]
        doomed["process"].kill()
        with pytest.raises(mor.NoProviderAvailable):
            list(deltas)
        with pytest.raises(mor.NoProviderAvailable):  # a new open is tried, and refused
            workbench.chat(PROMPT, model=MODEL)
        for _ in range(300):  # closed in the background while the workbench stays open
            closed = asyncio.run(_on_chain(workbench, failed_session))
            if closed["closedAt"]:
                break
            time.sleep(0.1)
        assert closed["closedAt"] and closed["closeoutType"] == 1
    finally:
        workbench.close()
