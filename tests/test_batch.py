"""`wb.map` on a sandbox of its own, answered by providers this test runs: each a provider
router process (`mor-workbench provider`) in front of a sandbox model server in this process
that counts the prompts it was asked, so what the providers served is known from their side.

A provider SIGKILLed mid-run is failed over and every row comes back once, each served once
by the provider that answered it; a map whose process is SIGKILLed resumes from its
checkpoint without asking (paying for) done rows again; Ctrl-C stops a map after closing its
sessions; bad input is refused before any session opens. No test leaves a session open."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import extra_provider
import pandas as pd
import pytest
from aiohttp import web
from eth_account import Account

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench._portal import Portal
from mor_workbench.batch import Checkpoint, row_key, session_duration
from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import resolve_model
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router.peer import deposit_for
from mor_workbench.router.router import rank_bids
from mor_workbench.sandbox.model_server import ModelServer

MODEL = "llama-3.3-70b"
PRICE_WEI = 10**12  # per second, below the sandbox's own bids (they are not asked anyway)
MAX_TOKENS = 24


class CountingModelServer(ModelServer):
    """A sandbox model server that also counts each prompt it is asked (by its last user
    message): the provider side's record of what it served."""

    def __init__(self) -> None:
        super().__init__([MODEL], profile="fast")
        self.asked: Counter[str] = Counter()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the server reads it again
        users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
        if users:
            self.asked[users[-1]] += 1
        return await super()._chat(request)


@dataclass
class OwnProvider:
    address: str
    key: str
    server: CountingModelServer
    process: subprocess.Popen | None = None


async def _register(info: sandbox.SandboxInfo, key: str, endpoint: str, bid: bool) -> None:
    """Fund, register and bid for a provider (`bid`), or move its endpoint."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        await extra_provider.register(
            chain,
            info.signer("owner"),
            Signer(key),
            endpoint,
            model=MODEL if bid else None,
            price=PRICE_WEI,
            fund=bid,
        )
    finally:
        await chain.rpc.aclose()


def _start(info: sandbox.SandboxInfo, provider: OwnProvider, config_dir: Path) -> None:
    """Run the provider router as a process of its own, in front of its model server."""
    model_id, _ = asyncio.run(_model_id(info))
    config = config_dir / f"{provider.address}.json"
    entry = {"modelId": "0x" + model_id.hex(), "modelName": MODEL, "apiType": "openai"}
    url = f"{provider.server.base_url}/chat/completions"
    config.write_text(json.dumps({"models": [{**entry, "apiUrl": url}]}))
    command = [sys.executable, "-m", "mor_workbench.cli", "provider", "--config", str(config)]
    command += ["--dir", str(info.directory), "--port", "0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MOR_PRIVATE_KEY": provider.key},
    )
    endpoint = process.stdout.readline().split(" on ")[1].split(";")[0]
    asyncio.run(_register(info, provider.key, endpoint, bid=False))
    provider.process = process


async def _model_id(info: sandbox.SandboxInfo) -> tuple[bytes, dict]:
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        return await resolve_model(chain, MODEL)
    finally:
        await chain.rpc.aclose()


def _stop(provider: OwnProvider) -> None:
    if provider.process is not None:
        if provider.process.poll() is None:
            provider.process.kill()
        provider.process.wait(10)
        provider.process = None


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A sandbox with three providers of this test's: two that stay up ("steady") and one
    that a test may kill ("doomed", started per test by the `doomed` fixture)."""
    directory = tmp_path_factory.mktemp("batch")
    configs = tmp_path_factory.mktemp("batch-configs")
    info = sandbox.start(directory)
    servers = Portal()
    providers = []
    for _ in range(3):
        key = Account.create().key.hex()
        server = servers.run(CountingModelServer().start())
        asyncio.run(_register(info, key, "127.0.0.1:9", bid=True))
        providers.append(OwnProvider(Signer(key).address, key, server))
    steady = providers[:2]
    for provider in steady:
        _start(info, provider, configs)
    yield {"info": info, "steady": steady, "doomed": providers[2], "configs": configs}
    for provider in providers:
        _stop(provider)
        servers.run(provider.server.stop())
    servers.stop()
    sandbox.reset(directory)


@pytest.fixture
def doomed(market) -> Iterator[OwnProvider]:
    provider = market["doomed"]
    _start(market["info"], provider, market["configs"])
    yield provider
    _stop(provider)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A journal home of this test's own (a child process given it shares the journal)."""
    path = tmp_path / "home"
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(path))
    return path


def _connect(market: dict, providers: list[OwnProvider], **options) -> mor.Workbench:
    """A workbench that asks only `providers` (the sandbox's own are left out)."""
    allow = [p.address.lower() for p in providers]
    directory = market["info"].directory
    return mor.connect(
        "sandbox", sandbox_dir=directory, strategy={"allow": allow}, timeout=5.0, **options
    )


def _served(providers: list[OwnProvider], prompts: list[str]) -> Counter[str]:
    """How often the providers were asked each of `prompts`, all together."""
    total: Counter[str] = Counter()
    for provider in providers:
        total.update({p: n for p, n in provider.server.asked.items() if p in set(prompts)})
    return total


def _open_sessions(wb: mor.Workbench) -> int:
    sessions = wb.sessions()
    return int(sessions["is_active"].sum()) if len(sessions) else 0


def _when_rows_done(checkpoint: Path, rows: int, act, timeout_s: float = 120.0) -> threading.Thread:
    """A thread that runs `act()` once `checkpoint` holds `rows` answered rows."""

    def watch() -> None:
        limit = time.monotonic() + timeout_s
        while time.monotonic() < limit:
            if checkpoint.exists() and len(checkpoint.read_text().splitlines()) >= rows:
                act()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("rows", "concurrency", "kill_after"),
    [(200, 6, 60), pytest.param(2000, 16, 600, marks=pytest.mark.soak)],
)
def test_a_provider_killed_mid_run_is_failed_over_and_every_row_served_once(
    market, doomed, home, tmp_path, rows, concurrency, kill_after
) -> None:
    everyone = [*market["steady"], doomed]
    prompts = [f"Row {i}: name a river and a bridge." for i in range(rows)]
    checkpoint = tmp_path / "rows.jsonl"
    killed_at: list[int] = []

    def kill() -> None:
        killed_at.append(len(checkpoint.read_text().splitlines()))
        doomed.process.kill()  # SIGKILL: its connections just drop

    watcher = _when_rows_done(checkpoint, kill_after, kill)
    with _connect(market, everyone) as wb:
        frame = wb.map(
            prompts,
            model=MODEL,
            concurrency=concurrency,
            checkpoint=checkpoint,
            max_tokens=MAX_TOKENS,
            progress=False,
        )
        watcher.join()
        assert killed_at and killed_at[0] < rows  # the provider died mid-run

        # every row once, in the input's order, answered
        assert list(frame.index) == list(range(rows))
        assert frame["error"].isna().all() and (frame["answer"].str.len() > 0).all()
        assert (frame["tokens"] > 0).all() and (frame["cost_mor"] > 0).all()
        assert set(frame["provider"]) == {p.address for p in everyone}  # spread over all three
        failed_over = frame[frame["failovers"] > 0]
        assert len(failed_over) >= 1 and not (failed_over["provider"] == doomed.address).any()
        written = Checkpoint(checkpoint).done()
        assert len(written) == rows and len(checkpoint.read_text().splitlines()) == rows

        # the providers' side: a provider still up served exactly the rows it answered, once
        for provider in market["steady"]:
            answered = Counter(
                p
                for p, who in zip(prompts, frame["provider"], strict=True)
                if who == provider.address
            )
            assert _served([provider], prompts) == answered
        # the killed one served its rows once, and at most the failed-over rows besides
        by_doomed = [
            p for p, who in zip(prompts, frame["provider"], strict=True) if who == doomed.address
        ]
        asked = _served([doomed], prompts)
        assert all(asked[p] == 1 for p in by_doomed)
        assert len(by_doomed) <= sum(asked.values()) <= len(by_doomed) + len(failed_over)

        assert _open_sessions(wb) == 0  # the dead provider's session was closed too (a dispute)


CHILD = """
import sys
import mor_workbench as mor
directory, allow, checkpoint, rows = sys.argv[1:5]
wb = mor.connect("sandbox", sandbox_dir=directory, strategy={"allow": allow.split(",")})
prompts = [f"Resume row {i}: describe a harbour." for i in range(int(rows))]
wb.map(prompts, model="llama-3.3-70b", concurrency=2, checkpoint=checkpoint, max_tokens=24,
       progress=False)
"""


def test_a_map_killed_mid_run_resumes_without_asking_done_rows_again(
    market, home, tmp_path
) -> None:
    steady, rows = market["steady"], 80
    prompts = [f"Resume row {i}: describe a harbour." for i in range(rows)]
    checkpoint = tmp_path / "rows.jsonl"
    allow = ",".join(p.address.lower() for p in steady)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(market["info"].directory),
            allow,
            str(checkpoint),
            str(rows),
        ]
    )
    watcher = _when_rows_done(checkpoint, 15, child.kill)  # SIGKILL: no cleanup at all
    watcher.join()
    child.wait(10)
    assert child.returncode == -signal.SIGKILL

    done = Checkpoint(checkpoint).done()
    assert 15 <= len(done) < rows
    with _connect(market, steady) as wb:  # connecting closes what the dead child left open
        before = _served(steady, prompts)
        frame = wb.map(
            prompts,
            model=MODEL,
            concurrency=2,
            checkpoint=checkpoint,
            max_tokens=MAX_TOKENS,
            progress=False,
        )
        asked_now = _served(steady, prompts) - before
        done_prompts = {p for i, p in enumerate(prompts) if row_key(i, p) in done}
        # a done row is not asked (paid for) again; any other is asked once, but for the
        # rows the child had in flight (2 at most), which may reach a provider as it dies
        assert all(asked_now[p] == 0 for p in done_prompts)
        others = [asked_now[p] for p in prompts if p not in done_prompts]
        assert all(n >= 1 for n in others) and sum(n - 1 for n in others) <= 2
        for i, prompt in enumerate(prompts):  # done rows come back from the checkpoint
            if prompt in done_prompts:
                assert frame.loc[i, "answer"] == done[row_key(i, prompt)]["answer"]
        assert frame["error"].isna().all() and len(frame) == rows
        assert len(Checkpoint(checkpoint).done()) == rows
        assert _open_sessions(wb) == 0  # the child's sessions too (closed on connect)


def test_ctrl_c_stops_a_map_after_closing_its_sessions(market, home, tmp_path) -> None:
    prompts = [f"Interrupted row {i}: name a lighthouse." for i in range(150)]
    checkpoint = tmp_path / "rows.jsonl"
    with _connect(market, market["steady"]) as wb:
        _when_rows_done(checkpoint, 10, lambda: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            wb.map(
                prompts,
                model=MODEL,
                concurrency=4,
                checkpoint=checkpoint,
                max_tokens=MAX_TOKENS,
                progress=False,
            )
        assert _open_sessions(wb) == 0
        assert 10 <= len(Checkpoint(checkpoint).done()) < len(prompts)


def test_a_template_fills_each_row_and_the_result_keeps_the_index(market, home) -> None:
    table = pd.DataFrame(
        {"text": ["tides", "locks"], "audience": ["children", "engineers"]}, index=["a", "b"]
    )
    with _connect(market, market["steady"]) as wb:
        frame = wb.map(
            table,
            model=MODEL,
            template="Summarise {text} for {audience}",
            max_tokens=MAX_TOKENS,
            progress=False,
        )
        assert list(frame.index) == ["a", "b"]
        assert _open_sessions(wb) == 0
        # answers are deterministic in the prompt: the row's answer is the rendered prompt's
        alone = wb.chat("Summarise locks for engineers", model=MODEL, max_tokens=MAX_TOKENS)
        assert frame.loc["b", "answer"] == alone


@pytest.mark.parametrize(
    ("prompts", "options", "says"),
    [
        (pd.DataFrame({"text": ["x"]}), {}, "needs a template"),
        (pd.DataFrame({"text": ["x"]}), {"template": "About {topic}"}, "{topic} is not a column"),
        (pd.DataFrame({"text": ["x"]}), {"template": "About {}"}, "positional field"),
        (pd.Series(["fine", None]), {}, "row 1 has no prompt"),
        (["fine"], {"template": "{text}"}, "fills in a DataFrame"),
        ("one string", {}, "not a str"),
        (["fine"], {"concurrency": 0}, "concurrency=0"),
        (["fine"], {"stream": True}, "leave out stream="),
    ],
)
def test_bad_input_is_refused_before_any_session_opens(market, home, prompts, options, says):
    with _connect(market, market["steady"]) as wb:
        before = len(wb.sessions())
        with pytest.raises(mor.ConfigurationError, match=re.escape(says)):
            wb.map(prompts, model=MODEL, progress=False, **options)
        assert len(wb.sessions()) == before


async def _fund_for_one_session(info: sandbox.SandboxInfo, key: str) -> int:
    """Give a fresh account ETH and one and a half shortest sessions' stake on our bids;
    what one session's stake is (wei), by the contract's maths."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        shortest = await chain.call("MIN_SESSION_DURATION")
        deposit = await deposit_for(chain, PRICE_WEI, shortest)
        address = Signer(key).address
        await chain.rpc.request("anvil_setBalance", [address, hex(10**21)])
        token = chain.deployment.token
        await chain.transact(info.signer("owner"), "transfer", address, deposit * 3 // 2, to=token)
        return deposit
    finally:
        await chain.rpc.aclose()


def test_a_map_the_account_cannot_stake_is_refused_before_any_session_opens(market, home):
    key = Account.create().key.hex()
    deposit = asyncio.run(_fund_for_one_session(market["info"], key))
    with _connect(market, market["steady"], key=key) as wb:
        with pytest.raises(mor.InsufficientFunds) as refused:
            wb.map(["one", "two"], model=MODEL, concurrency=2, progress=False)
        assert refused.value.needed == 2 * deposit  # both sessions' stake, asked up front
        assert len(wb.sessions()) == 0  # not one opened (and then closed) before the refusal


async def _durations(info: sandbox.SandboxInfo, providers: list[OwnProvider]) -> dict:
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        model_id, _ = await resolve_model(chain, MODEL)
        ours = {p.address for p in providers}
        bids = [b for b in await rank_bids(chain, MODEL) if b.provider in ours]

        async def size(rows: int, concurrency: int) -> int:
            return await session_duration(chain, model_id, bids, rows, concurrency, MAX_TOKENS)

        shortest, longest = await chain.read_many(
            [Call("MIN_SESSION_DURATION"), Call("getMaxSessionDuration")]
        )
        return {
            "shortest": shortest,
            "longest": longest,
            "two_rows": await size(2, 2),
            "endless": await size(10**12, 1),
            "run": await size(4_000, 1),
            "twice_the_rows": await size(8_000, 1),
            "twice_the_sessions": await size(4_000, 2),
        }
    finally:
        await chain.rpc.aclose()


def test_sessions_are_sized_to_the_run_within_the_contracts_limits(market) -> None:
    sized = asyncio.run(_durations(market["info"], market["steady"]))
    assert sized["two_rows"] == sized["shortest"]  # a short run: the contract's minimum
    assert sized["endless"] == sized["longest"]  # a run longer than a session may be: the cap
    assert sized["shortest"] < sized["run"] < sized["longest"]
    assert abs(sized["twice_the_rows"] - 2 * sized["run"]) <= 2  # in proportion to the rows
    assert abs(2 * sized["twice_the_sessions"] - sized["run"]) <= 2  # shared by the sessions


async def _cancel_a_map(market: dict, checkpoint: Path) -> tuple[int, pd.DataFrame]:
    """The async twin: a map cancelled once 10 rows are done; the sessions left open after
    it unwound, and a rerun's result."""
    allow = [p.address.lower() for p in market["steady"]]
    directory = market["info"].directory
    prompts = [f"Async row {i}: name a canal." for i in range(120)]
    async with await mor.aconnect(
        "sandbox", sandbox_dir=directory, strategy={"allow": allow}, timeout=5.0
    ) as wb:
        run = asyncio.create_task(
            wb.map(prompts, model=MODEL, concurrency=3, checkpoint=checkpoint, progress=False)
        )
        while len(Checkpoint(checkpoint).done()) < 10:
            await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        sessions = await wb.sessions()
        still_open = int(sessions["is_active"].sum())
        rerun = await wb.map(prompts[:20], model=MODEL, checkpoint=checkpoint, progress=False)
        return still_open, rerun


def test_the_async_twin_closes_its_sessions_when_cancelled(market, home, tmp_path) -> None:
    still_open, rerun = asyncio.run(_cancel_a_map(market, tmp_path / "rows.jsonl"))
    assert still_open == 0
    assert rerun["error"].isna().all() and len(rerun) == 20
