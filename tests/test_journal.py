"""The session journal survives the process and lists what may still hold MOR."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mor_workbench.router.journal import JournalEntry, SessionJournal
from mor_workbench.router.states import TRANSITIONS, IllegalTransition, SessionState, advance


def entry(key: str, state: str = "opening") -> JournalEntry:
    return JournalEntry(
        approval_hash=key,
        state=state,
        model_id="0x" + "01" * 32,
        bid_id="0x" + "02" * 32,
        provider="0x" + "03" * 20,
        endpoint="127.0.0.1:3333",
        provider_pubkey="0x04",
        amount=str(123 * 10**18),
        direct_payment=True,
        approval="0xaa",
        approval_signature="0xbb",
    )


def test_entries_round_trip_and_update(tmp_path) -> None:
    journal = SessionJournal(tmp_path / "j.sqlite3")
    stored = journal.record(entry("0x01"))
    assert stored.created_at > 0 and journal.get("0x01") == stored
    opened = journal.transition("0x01", "opened", session_id="0x" + "ff" * 32, ends_at=99)
    assert opened.created_at == stored.created_at and opened.updated_at >= stored.updated_at
    assert journal.by_session("0x" + "ff" * 32) == opened
    assert opened.direct_payment is True and int(opened.amount) == 123 * 10**18
    with pytest.raises(KeyError):
        journal.transition("0x02", "opened")
    with pytest.raises(ValueError, match="unknown journal state"):
        journal.record(entry("0x03", state="lost"))


def test_unfinished_lists_only_sessions_that_may_hold_money(tmp_path) -> None:
    journal = SessionJournal(tmp_path / "j.sqlite3")
    for key, state in [
        ("0xa", "opening"),
        ("0xb", "open"),
        ("0xc", "closing"),
        ("0xd", "closed"),
        ("0xe", "abandoned"),
    ]:
        journal.record(entry(key, state))
    assert [e.approval_hash for e in journal.unfinished()] == ["0xa", "0xb", "0xc"]
    assert len(journal.all()) == 5


def test_a_written_entry_survives_a_killed_writer(tmp_path) -> None:
    path = tmp_path / "j.sqlite3"
    script = (
        "import os, sys; sys.path.insert(0, 'tests');"
        "from test_journal import entry;"
        "from mor_workbench.router.journal import SessionJournal;"
        f"SessionJournal(__import__('pathlib').Path({str(path)!r})).record(entry('0xk'));"
        "os.kill(os.getpid(), 9)"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    assert SessionJournal(path).get("0xk") is not None


def test_only_entries_of_dead_processes_are_orphaned(tmp_path) -> None:
    path = tmp_path / "j.sqlite3"
    writer = (
        "import os, sys, time; sys.path.insert(0, 'tests');"
        "from test_journal import entry;"
        "from mor_workbench.router.journal import SessionJournal;"
        f"journal = SessionJournal(__import__('pathlib').Path({str(path)!r}));"
        "journal.record(entry(sys.argv[1], 'open'));"
        "print('written', flush=True); time.sleep(60)"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", writer, "0xlive"], stdout=subprocess.PIPE, text=True
    )
    dead = subprocess.Popen(
        [sys.executable, "-c", writer, "0xdead"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout.readline() == dead.stdout.readline() == "written\n"
        dead.kill()
        dead.wait()
        journal = SessionJournal(path)
        journal.record(entry("0xmine", "open"))
        assert {e.approval_hash for e in journal.unfinished()} == {"0xlive", "0xdead", "0xmine"}
        # what a new start may settle: neither this process's sessions nor a live one's
        assert [e.approval_hash for e in journal.unfinished(orphaned=True)] == ["0xdead"]
    finally:
        live.kill()
        live.wait()
    assert {e.approval_hash for e in journal.unfinished(orphaned=True)} == {"0xdead", "0xlive"}


def test_owner_lock_files_do_not_pile_up(tmp_path) -> None:
    """Each process's owner file goes with it: removed at a normal exit, and swept by the
    next start when the process was killed."""
    path = tmp_path / "j.sqlite3"
    opener = (
        "import os, sys;"
        "from mor_workbench.router.journal import SessionJournal;"
        f"SessionJournal(__import__('pathlib').Path({str(path)!r}));"
        "sys.argv[1] == 'kill' and os.kill(os.getpid(), 9)"
    )
    for how in ["exit"] * 4 + ["kill"] * 2:
        subprocess.run([sys.executable, "-c", opener, how], check=False)
    owners = tmp_path / "owners"
    # the last killed one could not clean up (the one killed before it was swept by the last)
    assert len(list(owners.glob("*.lock"))) == 1
    SessionJournal(path)
    assert [p.name for p in owners.iterdir()] == [p.name for p in owners.glob("*.lock")]
    assert len(list(owners.glob("*.lock"))) == 1  # this process's own, nothing else


def test_a_session_moves_only_along_its_life(tmp_path) -> None:
    """States and moves are data (router/states.py); the journal applies them and refuses the
    rest: a closed session cannot be opened again, nor a state be set by hand."""
    journal = SessionJournal(tmp_path / "j.sqlite3")
    journal.record(entry("0x01"))
    with pytest.raises(IllegalTransition, match="opening cannot be close"):
        journal.transition("0x01", "close")  # never opened: nothing to close
    assert journal.transition("0x01", "opened").state == "open"
    assert journal.transition("0x01", "close").state == "closing"
    assert journal.transition("0x01", "closed").state == "closed"
    with pytest.raises(IllegalTransition, match="closed cannot be opened"):
        journal.transition("0x01", "opened")
    with pytest.raises(ValueError, match=r"only by journal\.transition"):
        journal.update("0x01", state="open")
    with pytest.raises(ValueError, match="exists"):
        journal.record(entry("0x01"))  # nor by writing the row again
    assert journal.get("0x01").state == "closed"
    # the one way back: the chain shows it open again (a rollback), and recovery closes it
    assert journal.transition("0x01", "reopened").state == "open"


def test_the_table_covers_every_state_and_ends_only_in_closed_or_abandoned() -> None:
    reachable = {SessionState.OPENING}
    frontier = [SessionState.OPENING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source == state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(SessionState)
    for state in SessionState:  # every unfinished state has a way forward
        if state not in (SessionState.CLOSED, SessionState.ABANDONED):
            assert any(s == state and t != s for (s, _), t in TRANSITIONS.items())
    assert advance("open", "close") == SessionState.CLOSING
