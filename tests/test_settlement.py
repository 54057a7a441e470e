"""Settling without being asked, on sandboxes of their own (these tests move the chain's clock):
a session whose time is up is closed automatically, and on-hold stakes are withdrawn once their
timelock passes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

import mor_workbench as mor
from mor_workbench import sandbox


@pytest.fixture
def wb(tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    sandbox.start(tmp_path / "sandbox")
    workbench = mor.connect("sandbox", sandbox_dir=tmp_path / "sandbox")
    workbench.aio.router.housekeeping_s = 0.2  # look for due work five times a second
    yield workbench
    workbench.close()
    sandbox.reset(tmp_path / "sandbox")


def _warp(wb: mor.Workbench, timestamp: int) -> None:
    """Move the chain's clock to `timestamp` and mine a block there."""
    rpc = wb.aio.chain.rpc
    wb._portal.run(rpc.request("evm_setNextBlockTimestamp", [hex(timestamp)]))
    wb._portal.run(rpc.request("evm_mine", []))


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _on_chain(wb: mor.Workbench, session_id: str) -> dict:
    return wb._portal.run(wb.aio.chain.call("getSession", bytes.fromhex(session_id[2:])))


def test_a_session_whose_time_is_up_is_closed_and_the_stake_returned(wb) -> None:
    before = wb.balance()
    session = wb.open_session("llama-3.3-70b", duration="5m")
    assert session.chat("hi")
    assert wb.balance()["mor_staked"] > 0
    _warp(wb, session.aio.opened.ends_at + 1)
    _wait_for(lambda: _on_chain(wb, session.id)["closedAt"] != 0, "the automatic close")
    assert session.closed
    closed = _on_chain(wb, session.id)
    assert closed["closeoutType"] == 0  # closed with the provider's receipt, undisputed
    after = wb.balance()
    assert after["mor_staked"] == 0
    # a session that ran its course pays the provider from the compute budget: stake all back
    assert after["mor"] + after["mor_on_hold"] + after["mor_on_hold_available"] == pytest.approx(
        before["mor"]
    )
    with pytest.raises(mor.SessionExpired, match="open a new one"):
        session.chat("still there?")


def test_on_hold_stake_is_withdrawn_once_its_timelock_passes(wb) -> None:
    start = wb.balance()
    session = wb.open_session("mistral-31-24b", duration="30m")
    assert session.chat("hello")
    _warp(wb, wb._portal.run(wb.aio.chain.block_timestamp()) + 120)  # two minutes used
    session.close()  # early: today's used stipend, as stake, is held until UTC midnight
    held = wb.balance()
    assert held["mor_on_hold"] > 0 and held["mor_on_hold_available"] == 0
    total = held["mor"] + held["mor_on_hold"]
    assert total == pytest.approx(start["mor"])
    now = wb._portal.run(wb.aio.chain.block_timestamp())
    _warp(wb, now - now % 86400 + 86400 + 60)  # just past the next UTC midnight
    _wait_for(lambda: wb.balance()["mor"] == pytest.approx(total), "the automatic withdrawal")
    after = wb.balance()
    assert after["mor_on_hold"] == 0
    assert after["mor"] == pytest.approx(total)
