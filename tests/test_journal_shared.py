"""Workbenches of one account share its session journal: a session one of them closes is
closed for all of them, and none of them closes it a second time.

Seen in a full test run: at the README test's `wb.close()` the router warned "session left
for the next start: a session that is closed cannot be close" — the journal row said closed
while the session was still in the closing router's list of open sessions. Two paths did it:
another workbench of the account closed the session (`close_all`, `close_session`, the
Sessions widget: "from any process", by design), and a close that ran while the workbench was
closing. The README's was the second: its last cell starts a Compare widget, which closes
each session as its answer ends, and `wb.close()` followed at once (the last test here gave
that very warning in each of four runs before the fix).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import extra_provider
import pytest

import mor_workbench as mor
from mor_workbench.router.states import SessionState
from mor_workbench.widgets import Compare

MODEL = "llama-3.3-70b"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One journal home for every workbench of the test: the account's journal is shared."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def left_for_next_start(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "left for the next start" in str(w.message)]


def test_a_session_another_workbench_closed_is_closed_for_its_opener(sandbox_info, home) -> None:
    first = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    events: list[tuple[str, str]] = []
    first.on_sessions_changed(lambda event, session_id: events.append((event, session_id)))
    session = first.open_session(MODEL, duration="5m")
    # a second connect in the same process recovers only what dead processes left
    second = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    try:
        assert session.chat("Hello")
        assert second.closable() == [session.id]  # the account's journal holds it open
        assert second.close_all() == 1

        assert session.closed
        first._portal.run(first.aio.router.housekeep())  # every 30 s by itself
        assert ("closed", session.id) in events  # the opener's listeners learn it
        assert session.aio.opened.session_id not in first.aio.router.opened
        assert first.closable() == []  # not offered for a close that would fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first.close()
        assert left_for_next_start(caught) == []
        entry = first.aio.router.journal.by_session(session.id)
        assert entry is not None and entry.state == SessionState.CLOSED
    finally:
        first.close()
        second.close()


def test_a_close_by_id_from_another_workbench_is_known_to_the_opener(sandbox_info, home) -> None:
    first = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    second = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    try:
        session = first.open_session(MODEL, duration="5m")
        assert second.close_session(session.id) is True  # the provider signed the receipt
        # the opener's own close of it is recognised as done: nothing is sent again
        sent = extra_provider.transaction_count(first.aio.chain.rpc.urls, first.address)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.close()
            first.close()
        assert left_for_next_start(caught) == []
        assert extra_provider.transaction_count(first.aio.chain.rpc.urls, first.address) == sent
    finally:
        first.close()
        second.close()


async def test_a_workbench_closing_while_its_sessions_close_closes_each_once(
    sandbox_info, home
) -> None:
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)
    reader = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)  # stays open
    router = wb.router
    try:
        one = await wb.open_session(MODEL, duration="5m")
        other = await wb.open_session(MODEL, duration="5m")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # as the Compare widget does: its sessions close as their answers end, on the same
            # loop, while the notebook's wb.close() closes the workbench's open sessions
            await asyncio.gather(wb.close(), other.close(), one.close())
        assert left_for_next_start(caught) == []
        assert router.opened == {}
        for session in (one, other):
            entry = router.journal.by_session(session.id)
            assert entry is not None and entry.state == SessionState.CLOSED
            assert (await reader.chain.call("getSession", session.opened.session_id))["closedAt"]
    finally:
        await wb.close()
        await reader.close()


def test_closing_a_workbench_while_a_comparison_closes_its_sessions(sandbox_info, home) -> None:
    """The README's last cell: a Compare widget, closing each session as its answer ends, then
    `wb.close()` closing the workbench's open sessions while those closes still run."""
    wb = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    router = wb.aio.router
    compare = Compare(wb, "Explain RAID 5", model=MODEL, n=3)
    deadline = time.monotonic() + 60
    while not any(row["state"] == "done" for row in compare.rows):  # its close starts
        assert time.monotonic() < deadline, compare.rows
        time.sleep(0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wb.close()
    compare.wait()
    assert left_for_next_start(caught) == []
    assert router.opened == {}
    assert [e.state for e in router.journal.all()] == [SessionState.CLOSED] * 3


async def test_two_workbenches_closing_one_session_at_once_both_see_it_closed(
    sandbox_info, home
) -> None:
    """Both send closeSession; the chain refuses the second (`SessionAlreadyClosed`), which is
    the other's close, not a failure: neither raises nor leaves the session for recovery."""
    opener = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)
    other = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)
    try:
        session = await opener.open_session(MODEL, duration="5m")
        await asyncio.gather(opener.close_session(session.id), other.close_session(session.id))
        assert opener.router.opened == {}
        entry = opener.router.journal.by_session(session.id)
        assert entry is not None and entry.state == SessionState.CLOSED
        assert (await other.chain.call("getSession", session.opened.session_id))["closedAt"]
    finally:
        await opener.close()
        await other.close()
