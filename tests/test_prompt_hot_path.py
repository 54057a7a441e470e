"""The work a prompt does on an open session before it is sent (issue 16 §3): what the journal
is asked, counted as the SQL statements SQLite runs for it."""

from __future__ import annotations

import pytest

import mor_workbench as mor

MODEL = "llama-3.3-70b"


def sql_during(wb: mor.Workbench, prompt) -> list[str]:
    """The SQL statements the workbench's journal runs while `prompt()` runs."""
    statements: list[str] = []
    db = wb.aio.router.journal._db
    db.set_trace_callback(statements.append)
    try:
        prompt()
    finally:
        db.set_trace_callback(None)
    return statements


def test_a_prompt_on_the_workbench_session_reads_the_journal_once(wb) -> None:
    assert wb.chat("Hello", model=MODEL, max_tokens=2)  # opens the workbench's session
    statements = sql_during(wb, lambda: list(wb.stream("Again", model=MODEL, max_tokens=3)))
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")


def test_a_prompt_on_an_opened_session_reads_the_journal_once_and_a_closed_one_is_refused(
    wb,
) -> None:
    session = wb.open_session(MODEL, duration="6m")
    statements = sql_during(wb, lambda: session.chat("Hello", max_tokens=2))
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
    session.close()
    with pytest.raises(mor.ConfigurationError, match="closed"):
        session.chat("again")
