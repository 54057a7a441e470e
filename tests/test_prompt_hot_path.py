"""The work a prompt does on an open session before it is sent (issue 16 §3): what the journal
is asked (the SQL statements SQLite runs for it) and what the chain is asked (nothing: the
session's end is known from its opening)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mor_workbench as mor

MODEL = "llama-3.3-70b"


def asked_during(wb: mor.Workbench, prompt: Callable[[], Any], monkeypatch) -> tuple[list, list]:
    """The SQL statements the workbench's journal runs and the JSON-RPC payloads its chain
    client posts while `prompt()` runs."""
    statements: list[str] = []
    posts: list[Any] = []
    rpc = wb.aio.chain.rpc
    post = rpc._post

    async def counted(payload: Any) -> Any:
        posts.append(payload)
        return await post(payload)

    monkeypatch.setattr(rpc, "_post", counted)
    db = wb.aio.router.journal._db
    db.set_trace_callback(statements.append)
    try:
        prompt()
    finally:
        db.set_trace_callback(None)
        monkeypatch.undo()
    return statements, posts


def test_a_prompt_on_the_workbench_session_reads_the_journal_once_and_not_the_chain(
    wb, monkeypatch
) -> None:
    assert wb.chat("Hello", model=MODEL, max_tokens=2)  # opens the workbench's session
    prompt = lambda: list(wb.stream("Again", model=MODEL, max_tokens=3))  # noqa: E731
    statements, posts = asked_during(wb, prompt, monkeypatch)
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
    assert posts == []


def test_a_prompt_on_an_opened_session_reads_the_journal_once_and_a_closed_one_is_refused(
    wb, monkeypatch
) -> None:
    session = wb.open_session(MODEL, duration="6m")
    statements, posts = asked_during(wb, lambda: session.chat("Hello", max_tokens=2), monkeypatch)
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
    assert posts == []
    session.close()
    with pytest.raises(mor.ConfigurationError, match="closed"):
        session.chat("again")
