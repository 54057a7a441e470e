"""Chaos bench (issue 9): SIGKILL consumer processes, and sometimes the providers, at random
moments of random session work on one isolated sandbox; then recover and count what was lost.

Each kill starts a consumer process (the Python API on one shared journal) that opens, chats,
streams and closes sessions at random until it is killed at a random moment; with
`--provider-kills` odds the sandbox daemon, with every provider, is killed at the same moment
and started again. Then recovery: `mor.connect` settles what the dead processes left, the
chain's clock is moved past the on-hold timelocks (anvil's evm_increaseTime) and a second
connect withdraws them. One line of figures, read from the chain and the journal:

    kills, provider kills, sessions opened, wei unaccounted for (MOR of the consumer in no
    wallet, no hold and not paid to a provider from a direct session), of which still staked
    in open sessions, wei left on hold, sessions closed as disputes, journal rows left
    unsettled (by state), anvils a killed daemon left running, seconds

    .venv/bin/python bench/chaos.py --kills 100 [--provider-kills 0.1] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak_ledger import Ledger, ledger, session_count, warp
from soak_processes import kill_pids, orphans

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import MorError
from mor_workbench.router.journal import SessionJournal
from mor_workbench.sandbox.paths import HOME_ENV

MODELS = ("llama-3.3-70b", "qwen3-235b", "mistral-31-24b", "gpt-oss-120b")
PROMPT = "Explain RAID 5 in one line."
READY = "ready"
WORK_S = 2.5  # a kill lands uniformly within this many seconds of a consumer being ready
PAST_TIMELOCKS_S = 86_400 + 120  # on-hold stakes are released at the next UTC day


# ----- the consumer process that gets killed -----
def work(directory: str, seed: int) -> None:
    """Random session work until killed: explicit sessions (some paid directly), automatic
    chat, stream and complete, and closing everything."""
    rng = random.Random(seed)
    wb = mor.connect("sandbox", sandbox_dir=directory, timeout=10.0)
    print(READY, flush=True)
    while True:
        model = rng.choice(MODELS)
        action = rng.choice(("session", "chat", "stream", "complete", "close_all"))
        try:
            if action == "session":
                session = wb.open_session(
                    model, duration=rng.choice(("5m", "10m")), direct_payment=rng.random() < 0.3
                )
                session.chat(PROMPT, max_tokens=8)
                "".join(session.stream(PROMPT, max_tokens=16))
                session.close()
            elif action == "chat":
                wb.chat(PROMPT, model=model, max_tokens=8)
            elif action == "stream":
                "".join(wb.stream(PROMPT, model=model, max_tokens=16))
            elif action == "complete":
                wb.complete([{"role": "user", "content": PROMPT}], model=model, max_tokens=8)
            else:
                wb.close_all()
        except MorError as exc:  # a killed provider or chain: carry on, as a program would
            print(f"{action}: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.2)


# ----- the bench -----
class Chaos:
    """One isolated sandbox, a journal shared by every consumer process, and the figures.

    The next consumer starts while the current one works (as a second notebook would), so a
    consumer is always ready to be killed and its start-up (which settles what earlier ones
    left) overlaps the work of the one before."""

    def __init__(
        self, directory: Path, home: Path, rng: random.Random, provider_kills: float
    ) -> None:
        self.directory = directory
        self.home = home
        self.rng = rng
        self.provider_kills = provider_kills
        self.figures: Counter[str] = Counter()
        info = sandbox.start(directory)
        self.consumer = info.signer("consumer").address

    def read(self, fn):
        info = sandbox.start(self.directory)

        async def run():
            chain = Chain(RpcClient(info.rpc_url), info.deployment)
            try:
                return await fn(chain)
            finally:
                await chain.rpc.aclose()

        return asyncio.run(run())

    def spawn(self) -> subprocess.Popen[bytes]:
        """A consumer process; it prints READY once connected."""
        env = {**os.environ, HOME_ENV: str(self.home)}
        seed = str(self.rng.randrange(2**31))
        command = [sys.executable, __file__, "--worker", str(self.directory), seed]
        with open(self.home / "workers.err", "ab") as errors:
            return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)

    def kill_workers(self, kills: int) -> None:
        """`kills` consumers, each killed at a random moment of its work; with odds the
        daemon (every provider, and the chain) dies at the same moment."""
        upcoming = self.spawn()
        while self.figures["kills"] < kills:
            worker, upcoming = upcoming, None
            try:
                if worker.stdout.readline().decode().strip() != READY:
                    self.figures["workers that failed to start"] += 1
                    if self.figures["workers that failed to start"] > kills:
                        raise SystemExit(f"consumers do not start; see {self.home}/workers.err")
                    continue
                if self.figures["kills"] + 1 < kills:
                    upcoming = self.spawn()
                time.sleep(self.rng.uniform(0, WORK_S))
                if self.rng.random() < self.provider_kills:
                    self.kill_daemon()
                kill_pids([worker.pid])
                self.figures["kills"] += 1
            finally:
                kill_pids([worker.pid])
                worker.wait()
                worker.stdout.close()
                if upcoming is None and self.figures["kills"] < kills:
                    upcoming = self.spawn()
                if sandbox.status(self.directory) is None:
                    self.restart_daemon()
        if upcoming is not None:
            kill_pids([upcoming.pid])
            upcoming.wait()
            upcoming.stdout.close()

    def kill_daemon(self) -> None:
        info = sandbox.status(self.directory)
        if info is None:
            return
        kill_pids([info.pid])
        with contextlib.suppress(ChildProcessError):  # started by this process: reap it
            os.waitpid(info.pid, 0)
        self.figures["provider kills"] += 1

    def restart_daemon(self) -> None:
        info = sandbox.start(self.directory)
        left = orphans(self.directory, info.pid)
        self.figures["anvils left by killed daemons"] += len(left)
        kill_pids(left)  # ours, and left running they would overwrite the chain state

    def recover(self) -> None:
        """What a user does next: connect (settles what the dead left), then once the
        on-hold stakes are released, connect again to withdraw them."""
        with mor.connect("sandbox", sandbox_dir=self.directory):
            pass
        self.read(lambda chain: warp(chain, PAST_TIMELOCKS_S))
        with mor.connect("sandbox", sandbox_dir=self.directory):
            pass

    def unsettled(self) -> Counter[str]:
        rows: Counter[str] = Counter()
        for path in (self.home / "journal").glob("*.sqlite3"):
            journal = SessionJournal(path)
            rows.update(entry.state for entry in journal.unfinished())
            journal.close()
        return rows

    def run(self, kills: int) -> str:
        """The whole bench; its line of figures."""
        started = time.monotonic()
        since = self.read(lambda chain: session_count(chain, self.consumer))
        before: Ledger = self.read(lambda chain: ledger(chain, self.consumer, since))
        self.kill_workers(kills)
        self.recover()
        after: Ledger = self.read(lambda chain: ledger(chain, self.consumer, since))
        rows = self.unsettled()
        staked = after.staked
        return (
            f"kills {self.figures['kills']}, provider kills {self.figures['provider kills']}, "
            f"sessions opened {len(after.sessions)}, "
            f"wei unaccounted for {after.unaccounted(before)} "
            f"(staked in {len(after.open_sessions())} open sessions {staked}), "
            f"wei on hold {after.on_hold}, disputes {len(after.disputed())}, "
            f"journal rows unsettled {sum(rows.values())} {dict(rows) or ''}".rstrip()
            + f", anvils left by killed daemons {self.figures['anvils left by killed daemons']}, "
            f"workers that failed to start {self.figures['workers that failed to start']}, "
            f"{time.monotonic() - started:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="consumer processes to kill")
    parser.add_argument(
        "--provider-kills", type=float, default=0.1, help="odds a kill also kills the providers"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--worker", nargs=2, metavar=("DIR", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work(args.worker[0], int(args.worker[1]))
        return
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    with tempfile.TemporaryDirectory(prefix="mor-chaos-") as scratch:
        directory, home = Path(scratch) / "sandbox", Path(scratch) / "home"
        home.mkdir()
        os.environ[HOME_ENV] = str(home)  # this process's recovery reads the workers' journal
        try:
            chaos = Chaos(directory, home, random.Random(seed), args.provider_kills)
            print(f"chaos (seed {seed}): {chaos.run(args.kills)}")
        finally:
            sandbox.reset(directory)
            kill_pids(orphans(directory, None))


if __name__ == "__main__":
    main()
