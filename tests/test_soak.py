"""The soak test of issue 9: hours of real use, compressed. Nothing leaks, nothing is paid for by
mistake.

One isolated sandbox stays up while several kinds of client open, use and close many short
sessions: the Python API (explicit sessions, some paid directly, and automatic ones), a
LangChain program that builds a `ChatMorpheus` per call, `mor-workbench serve` driven by the
openai client and stopped by SIGTERM or SIGINT, and one workbench kept connected all along (a
notebook open all afternoon). Between rounds the providers are restarted (the sandbox stopped
and started) and the daemon is killed (SIGKILL) and started again. The last provider run
takes more open/close cycles on one bid than a provider has slots.

At the end, read from the chain only: no session of the consumer is open, a fresh open on every
bid succeeds (every provider's slots are free), every wei of the consumer's MOR is in its
wallet, on hold or paid to a provider from a direct session, and no honest provider was
disputed. Along the way: a closed session gets no answer, each client's sessions are closed
when it is done, the daemon's anvil dies with it, and the chain and providers keep their
ports across restarts.

The test gathers every problem it sees and reports them all at once. `make test` runs the short
version (a few dozen sessions); the long one (hundreds) is marked `soak`, which the default
run deselects:

    .venv/bin/python -m pytest tests/test_soak.py -m soak          # MOR_SOAK_ROUNDS=N rounds
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import openai
import pytest
from soak_ledger import Ledger, ledger, session_count
from soak_processes import anvil_processes, kill_pids, orphans

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench._portal import portal
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import MorError
from mor_workbench.session import Session, chat_body

HERE = Path(__file__).parent
CLI = [sys.executable, "-m", "mor_workbench.cli"]
MODELS = ("llama-3.3-70b", "qwen3-235b", "mistral-31-24b", "gpt-oss-120b")
PROMPT = "In one line: why do long-running services leak?"
SANDBOX_SLOTS = 32  # concurrentSlots of every sandbox provider's models (sandbox/providers.py)
ROUNDS_ENV = "MOR_SOAK_ROUNDS"
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much each round does: `rounds` rounds, each restarting the providers at its end
    (graceful stop/start, or SIGKILL of the daemon every other round)."""

    rounds: int
    python_sessions: int  # explicit sessions through the Python API, per round
    langchain_calls: int  # ChatMorpheus objects built per call, per round
    serve_calls: int  # openai-client calls to `mor-workbench serve`, per round


SHORT = Plan(rounds=2, python_sessions=3, langchain_calls=3, serve_calls=2)


def long_plan() -> Plan:
    return Plan(
        rounds=int(os.environ.get(ROUNDS_ENV, "8")),
        python_sessions=16,
        langchain_calls=6,
        serve_calls=8,
    )


@pytest.fixture
def soak_sandbox(tmp_path: Path) -> Iterator[Path]:
    """A sandbox of this test's own (it is killed and restarted), removed at the end with any
    anvil a killed daemon left behind."""
    directory = tmp_path / "sandbox"
    sandbox.start(directory)
    try:
        yield directory
    finally:
        sandbox.reset(directory)
        kill_pids(anvil_processes(directory))


class Soak:
    """The running soak: its sandbox, the problems seen so far, and which phase opened which
    session."""

    def __init__(self, directory: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        self.home = home
        self.monkeypatch = monkeypatch
        self.problems: list[str] = []
        self.phase_of: dict[str, str] = {}
        info = sandbox.status(directory)
        assert info is not None
        self.consumer = info.signer("consumer").address
        self.providers = {info.signer(f"provider:{n}").address: n for n in info.provider_names()}
        self.serve_runs = 0

    def problem(self, what: str) -> None:
        self.problems.append(what)

    # ----- reading the chain (a client of our own, on the sandbox's current URL) -----
    def read(self, fn: Callable[[Chain], Awaitable[T]]) -> T:
        info = sandbox.status(self.directory)
        if info is None:
            raise AssertionError(f"the sandbox in {self.directory} is not running")

        async def run() -> T:
            chain = Chain(RpcClient(info.rpc_url), info.deployment)
            try:
                return await fn(chain)
            finally:
                await chain.rpc.aclose()

        return asyncio.run(run())

    def count(self) -> int:
        return self.read(lambda chain: session_count(chain, self.consumer))

    def book(self, since: int) -> Ledger:
        return self.read(lambda chain: ledger(chain, self.consumer, since))

    def endpoints(self) -> dict[str, str]:
        async def read(chain: Chain) -> dict[str, str]:
            return {
                name: (await chain.call("getProvider", address))["endpoint"]
                for address, name in self.providers.items()
            }

        return self.read(read)

    @contextlib.contextmanager
    def phase(self, name: str, keeps_open: Callable[[], set[str]] = set) -> Iterator[None]:
        """Run one client's work; afterwards none of the sessions it opened may be open on
        chain (except those in `keeps_open()`). Failures are recorded, not raised."""
        since, started = self.count(), time.monotonic()
        try:
            yield
        except Exception as exc:
            self.problem(f"{name}: {type(exc).__name__}: {exc}")
        print(f"soak phase {name!r}: {time.monotonic() - started:.1f} s")  # where time goes
        book = self.book(since)
        for facts in book.sessions:
            self.phase_of[facts.session_id] = name
        kept = keeps_open()
        left = [s.session_id[:10] for s in book.open_sessions() if s.session_id not in kept]
        if left:
            self.problem(f"{name}: {len(left)} session(s) left open on chain: {', '.join(left)}")

    def connect(self, client: str) -> mor.Workbench:
        """A workbench in this process, journaling under the soak's home."""
        self.monkeypatch.setenv("MOR_WORKBENCH_HOME", str(self.home / client))
        return mor.connect("sandbox", sandbox_dir=self.directory)

    # ----- the clients -----
    def python_api(self, round_no: int, sessions: int) -> None:
        with self.phase(f"round {round_no} python API"), self.connect("python") as wb:
            for i in range(sessions):
                model = MODELS[i % len(MODELS)]
                direct = i % 3 == 2
                with wb.open_session(model, duration="10m", direct_payment=direct) as session:
                    assert session.chat(PROMPT, max_tokens=12)
                    assert "".join(session.stream(PROMPT, max_tokens=12))
                if i == 0:
                    self.ask_closed(wb, session)
            assert wb.chat(PROMPT, model=MODELS[0], max_tokens=12)
            assert "".join(wb.stream(PROMPT, model=MODELS[1], max_tokens=12))
            messages = [{"role": "user", "content": PROMPT}]
            assert wb.complete(messages, model=MODELS[0], max_tokens=12).choices

    def ask_closed(self, wb: mor.Workbench, session: Session) -> None:
        """A prompt for a session closed on chain must get no answer (no free inference)."""
        opened = session.aio.opened
        body = chat_body(session.aio.model, PROMPT, None, {"max_tokens": 8})

        async def ask() -> bool:
            async for _ in wb.aio.router.stream(opened, body, timeout=10):
                return True
            return False

        try:
            answered = portal().run(ask())
        except Exception:  # refused, however the refusal shows: no answer is what counts
            return
        if answered:
            self.problem(
                f"provider {self.providers.get(opened.provider, opened.provider)} answered a "
                f"prompt for session {session.id[:10]} after it was closed on chain"
            )

    def langchain(self, round_no: int, calls: int) -> None:
        models = MODELS[:2]
        with self.phase(f"round {round_no} LangChain per call"):
            env = {**os.environ, "MOR_WORKBENCH_HOME": str(self.home / "langchain")}
            done = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "soak_client.py"),
                    str(self.directory),
                    str(calls),
                    *models,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            if figures["most_open"] > len(models):
                self.problem(
                    f"round {round_no}: {calls} ChatMorpheus objects built per call on "
                    f"{len(models)} models "
                    f"held {figures['most_open']} sessions open at once (one per model expected)"
                )

    def serve(self, round_no: int, calls: int, stop: signal.Signals) -> None:
        self.serve_runs += 1
        home = self.home / f"serve-{self.serve_runs}"
        home.mkdir(parents=True)
        env = {**os.environ, "MOR_WORKBENCH_HOME": str(home)}
        command = [*CLI, "serve", "--dir", str(self.directory), "--port", "0"]
        with (
            self.phase(f"round {round_no} serve stopped by {stop.name}"),
            open(home / "serve.err", "wb") as errors,
        ):
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)
            try:
                line = proc.stdout.readline().decode()
                assert " at http://" in line, line or (home / "serve.err").read_text()[-2000:]
                base_url = line.split(" at ", 1)[1].split(" ", 1)[0]
                api = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
                messages = [{"role": "user", "content": PROMPT}]
                for i in range(calls):
                    model = MODELS[i % 2]
                    if i % 2:
                        chunks = api.chat.completions.create(
                            model=model, messages=messages, max_tokens=12, stream=True
                        )
                        deltas = [c.choices[0].delta.content for c in chunks if c.choices]
                        text = "".join(d for d in deltas if d)
                    else:
                        answer = api.chat.completions.create(
                            model=model, messages=messages, max_tokens=12
                        )
                        text = answer.choices[0].message.content
                    assert text, f"serve call {i} on {model} answered nothing"
                proc.send_signal(stop)
                code = proc.wait(timeout=60)
                if code != 0:
                    self.problem(f"round {round_no}: serve stopped by {stop.name} exited {code}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()

    def long_lived(self, wb: mor.Workbench, when: str) -> None:
        """The workbench connected since the start keeps working (re-attaching if needed)."""

        def its_sessions() -> set[str]:
            with contextlib.suppress(MorError):
                return {"0x" + i.hex() for i in wb.aio.router.closable()}
            return set()

        with self.phase(f"long-lived workbench {when}", keeps_open=its_sessions):
            assert wb.chat(PROMPT, model=MODELS[2], max_tokens=12)

    # ----- the providers and the daemon -----
    def restart(self, *, kill: bool) -> None:
        """Restart the daemon (and with it every provider): gracefully, or by SIGKILL."""
        info = sandbox.status(self.directory)
        assert info is not None
        url, endpoints = info.rpc_url, self.endpoints()
        how = "killed" if kill else "stopped"
        if kill:
            os.kill(info.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # the daemon is our child: reap it
                os.waitpid(info.pid, 0)
        else:
            sandbox.stop(self.directory)
        started = sandbox.start(self.directory)
        left = orphans(self.directory, started.pid)
        if left:
            self.problem(
                f"after the daemon was {how} and started again, {len(left)} anvil processes "
                "of the old daemon still run on its chain state"
            )
            kill_pids(left)  # ours; left running they would keep overwriting the state
        if started.rpc_url != url:
            self.problem(
                f"the daemon {how} and started again moved the chain from {url} to "
                f"{started.rpc_url}"
            )
        moved = [
            f"{n} {endpoints[n]} -> {e}" for n, e in self.endpoints().items() if e != endpoints[n]
        ]
        if moved:
            self.problem(f"the daemon {how} and started again moved providers: {', '.join(moved)}")

    def slots(self, cycles: int) -> None:
        """Open and close more sessions on one bid than its provider has slots (one open at a
        time), then a fresh open (and a chat) on every chat model's bid must succeed."""
        with self.phase("slots"), self.connect("python") as wb:
            bids = wb.bids()
            first = bids[bids["model"] == MODELS[0]].iloc[0]
            for i in range(cycles):
                try:
                    with wb.open_session(MODELS[0], bid=first["id"], duration="10m"):
                        pass
                except MorError as exc:
                    self.problem(
                        f"open/close cycle {i + 1} on one {MODELS[0]} bid of "
                        f"{self.providers.get(first['provider'])} failed: {exc}"
                    )
                    break
            for bid in bids[bids["type"] == "LLM"].itertuples():
                try:
                    with wb.open_session(bid.model, bid=bid.id, duration="10m") as session:
                        session.chat(PROMPT, max_tokens=8)
                except MorError as exc:
                    self.problem(
                        f"a fresh open on the {bid.model} bid of "
                        f"{self.providers.get(bid.provider)} failed: {exc}"
                    )

    # ----- the end -----
    def check_books(self, before: Ledger, since: int) -> None:
        after = self.book(since)
        for facts in after.open_sessions():
            self.problem(
                f"session {facts.session_id[:10]} ({self.phase_of.get(facts.session_id, '?')}) "
                f"is still open on chain at the end, {facts.stake} wei staked"
            )
        for facts in after.disputed():
            self.problem(
                f"session {facts.session_id[:10]} ({self.phase_of.get(facts.session_id, '?')}) "
                f"of honest provider {self.providers.get(facts.provider)} was closed as a dispute"
            )
        missing = after.unaccounted(before)
        if missing:
            self.problem(
                f"{missing} wei of the consumer's MOR unaccounted for: before {before.wallet} "
                f"in the wallet + {before.on_hold} on hold; after {after.wallet} + "
                f"{after.on_hold} on hold + {after.paid_to_providers} paid to providers "
                f"({after.staked} still staked in open sessions)"
            )


def run_soak(directory: Path, home: Path, monkeypatch: pytest.MonkeyPatch, plan: Plan) -> Soak:
    soak = Soak(directory, home, monkeypatch)
    since = soak.count()
    before = soak.book(since)
    assert not before.sessions and before.on_hold == 0  # a fresh sandbox
    notebook = soak.connect("notebook")
    for round_no in range(1, plan.rounds + 1):
        soak.python_api(round_no, plan.python_sessions)
        soak.langchain(round_no, plan.langchain_calls)
        stop = signal.SIGTERM if round_no % 2 else signal.SIGINT
        soak.serve(round_no, plan.serve_calls, stop)
        soak.long_lived(notebook, f"in round {round_no}")
        soak.restart(kill=round_no % 2 == 0)
        soak.long_lived(notebook, f"after the restart of round {round_no}")
    soak.slots(SANDBOX_SLOTS + 2)
    with soak.phase("closing the long-lived workbench"):
        notebook.close()
    with soak.phase("a last connect settles what dead processes left"), soak.connect("python"):
        pass
    soak.check_books(before, since)
    return soak


def test_soak_short(soak_sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    soak = run_soak(soak_sandbox, tmp_path / "home", monkeypatch, SHORT)
    assert not soak.problems, f"{len(soak.problems)} problem(s):\n" + "\n".join(soak.problems)


@pytest.mark.soak
def test_soak_long(soak_sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    soak = run_soak(soak_sandbox, tmp_path / "home", monkeypatch, long_plan())
    assert not soak.problems, f"{len(soak.problems)} problem(s):\n" + "\n".join(soak.problems)
