"""The sandbox daemon's life: its chain dies with it, one chain per state, signals stop it cleanly.

Real daemons, real anvil processes; the processes on a state file are read from /proc (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from mor_workbench import sandbox
from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import SandboxError
from mor_workbench.sandbox.paths import SandboxPaths

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the processes from /proc"
)


def chains_on(state: Path) -> list[int]:
    """Pids of the anvil processes (not zombies) running on `state`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
        if not zombie and os.path.basename(argv[0]) == b"anvil" and str(state).encode() in argv:
            found.append(int(entry.name))
    return found


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    """Poll `condition` until it holds (the deadline only bounds a hung test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for: {what}")
        time.sleep(0.05)


def reap(pid: int) -> None:
    """Collect a daemon this test process started, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def pay(info: sandbox.SandboxInfo, to: str, amount: int) -> None:
    """Send `amount` MOR wei from the sandbox consumer to `to` (a change to the chain state)."""

    async def send() -> None:
        rpc = RpcClient(info.rpc_url)
        try:
            chain = Chain(rpc, info.deployment)
            await chain.transact(
                info.signer("consumer"), "transfer", to, amount, to=info.deployment.token
            )
        finally:
            await rpc.aclose()

    asyncio.run(send())


def balance(info: sandbox.SandboxInfo, of: str) -> int:
    async def read() -> int:
        rpc = RpcClient(info.rpc_url)
        try:
            return await Chain(rpc, info.deployment).call("balanceOf", of, to=info.deployment.token)
        finally:
            await rpc.aclose()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    """One sandbox directory for this module's tests (each starts or attaches to it)."""
    directory = tmp_path_factory.mktemp("lifecycle")
    yield directory
    sandbox.reset(directory)


def test_a_killed_daemon_takes_its_chain_with_it_and_the_state_survives(box: Path) -> None:
    state = SandboxPaths(box).chain_state
    payee = Account.create().address
    info = sandbox.start(box)
    for kill in range(1, 3):
        assert len(chains_on(state)) == 1
        pay(info, payee, kill)
        os.kill(info.pid, signal.SIGKILL)
        reap(info.pid)
        wait_until(lambda: not chains_on(state), f"the chain of the daemon killed ({kill}) to exit")
        info = sandbox.start(box)
        assert len(chains_on(state)) == 1
        # the chain comes back where it was when the daemon died, not rolled back
        assert balance(info, payee) == sum(range(1, kill + 1))


LEFTOVER = """
import os, sys
from pathlib import Path
from mor_workbench.chain import anvil
anvil._die_with = lambda parent, libc: None  # a platform without a parent-death signal
node = anvil.Anvil(state=Path(sys.argv[1]))
node.start()
print(node.process.pid, node.url, flush=True)
os._exit(0)  # its parent dies without stopping it
"""


def test_a_start_stops_a_leftover_chain_of_this_sandbox_instead_of_running_a_second(
    box: Path,
) -> None:
    info = sandbox.start(box)
    sandbox.stop(box)
    state = SandboxPaths(box).chain_state
    orphan = subprocess.run(
        [sys.executable, "-c", LEFTOVER, str(state)], capture_output=True, text=True, check=True
    )
    pid, url = orphan.stdout.split()
    assert chains_on(state) == [int(pid)]
    payee = Account.create().address
    pay(dataclasses.replace(info, rpc_url=url), payee, 5)  # on the leftover chain
    info = sandbox.start(box)
    (running,) = chains_on(state)
    assert running != int(pid)
    assert balance(info, payee) == 5  # the leftover was stopped so that it saved its state


def test_a_start_never_launches_a_chain_on_a_state_another_process_holds(box: Path) -> None:
    sandbox.stop(box)
    paths = SandboxPaths(box)
    with open(Anvil(state=paths.chain_state).lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SandboxError, match=r"chain-state\.json.*in use"):
            sandbox.start(box, timeout=30)
        assert chains_on(paths.chain_state) == []
    assert sandbox.start(box).rpc_url


def test_sigterm_and_sigint_stop_the_daemon_cleanly_and_save_the_chain(box: Path) -> None:
    state = SandboxPaths(box).chain_state
    payee = Account.create().address
    info = sandbox.start(box)
    for paid, sig in enumerate((signal.SIGTERM, signal.SIGINT), start=1):
        pay(info, payee, 1)  # right before the signal: only a clean shutdown saves it
        os.kill(info.pid, sig)
        reap(info.pid)
        assert chains_on(state) == [], sig.name
        assert sandbox.status(box) is None
        info = sandbox.start(box)
        assert balance(info, payee) == paid, sig.name
