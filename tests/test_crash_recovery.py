"""Money is never lost: kill the router (SIGKILL) at each step; the next start gets it back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router.journal import SessionJournal, journal_path
from mor_workbench.router.router import Router

HERE = Path(__file__).parent


async def holdings(router: Router) -> int:
    """The consumer's MOR wallet balance plus stakes on hold."""
    token = router.chain.deployment.token
    wallet = await router.chain.call("balanceOf", router.signer.address, to=token)
    available, hold = await router.chain.call("getUserStakesOnHold", router.signer.address, 255)
    return wallet + available + hold


@pytest.mark.parametrize("step", ["opening", "opened", "closing"])
def test_sigkill_at_each_step_loses_no_mor(step, sandbox_info, tmp_path) -> None:
    journal = tmp_path / "journal.sqlite3"

    async def measure() -> int:
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        router = Router(chain, sandbox_info.signer("consumer"), SessionJournal(journal))
        value = await holdings(router)
        await chain.rpc.aclose()
        return value

    before = asyncio.run(measure())
    child = subprocess.run(
        [
            sys.executable,
            str(HERE / "crash_router.py"),
            str(sandbox_info.directory),
            str(journal),
            step,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr[-2000:]

    async def recover() -> tuple[dict[str, int], int, list[str]]:
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        router = Router(chain, sandbox_info.signer("consumer"), SessionJournal(journal))
        done = await router.recover()
        value = await holdings(router)
        states = [e.state for e in router.journal.all()]
        await chain.rpc.aclose()
        return done, value, states

    done, after, states = asyncio.run(recover())
    assert after == before, f"{before - after} wei of MOR missing after a crash at {step!r}"
    if step == "opening":
        assert states == ["opening"]  # nothing was sent; abandoned once the approval expires
    else:
        assert states == ["closed"] and done["closed"] == 1
        assert done["found"] == (1 if step == "opened" else 0)


def test_connect_settles_what_a_killed_process_left(sandbox_info, tmp_path, monkeypatch) -> None:
    import mor_workbench as mor

    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    deployment = sandbox_info.deployment
    journal = journal_path(
        tmp_path / "journal",
        deployment.chain_id,
        deployment.diamond,
        sandbox_info.signer("consumer").address,
    )
    journal.parent.mkdir()
    child = subprocess.run(
        [
            sys.executable,
            str(HERE / "crash_router.py"),
            str(sandbox_info.directory),
            str(journal),
            "closing",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert [e.state for e in SessionJournal(journal).unfinished()] == ["closing"]
    with mor.connect("sandbox", sandbox_dir=sandbox_info.directory):
        pass
    assert SessionJournal(journal).unfinished() == []
