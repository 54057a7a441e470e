"""The work a prompt does on an open session before it is sent (issue 16 §3): what the journal
is asked (the SQL statements SQLite runs for it) and what the chain is asked (nothing: the
session's end is known from its opening); and the call's deadline over a whole answer, kept
with one timer per answer instead of a timeout scope per chunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import mor_workbench as mor
from mor_workbench.errors import ProviderStalled
from mor_workbench.router.calls import _until

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


async def _chunks(closed: list[str], pause_after: int = 1) -> AsyncIterator[int]:
    """A provider's answer as the router reads it: `pause_after` chunks, then a stall."""
    try:
        for i in range(pause_after):
            yield i
        await asyncio.sleep(3600)
        yield pause_after
    finally:
        closed.append("closed")


async def test_an_answer_past_the_calls_deadline_is_stalled_and_closed() -> None:
    closed: list[str] = []
    answer = _until(time.monotonic() + 0.05, _chunks(closed))
    assert await anext(answer) == 0
    with pytest.raises(ProviderStalled, match="deadline"):
        await anext(answer)
    assert closed == ["closed"]


async def test_a_deadline_passing_while_the_caller_holds_a_chunk_ends_the_answer() -> None:
    closed: list[str] = []
    answer = _until(time.monotonic() + 0.05, _chunks(closed, pause_after=2))
    assert await anext(answer) == 0
    await asyncio.sleep(0.1)  # the caller is busy past the deadline
    with pytest.raises(ProviderStalled, match="deadline"):
        await anext(answer)  # the chunk waiting at the provider is not taken
    assert closed == ["closed"]


async def test_cancelling_the_caller_is_not_taken_for_a_stall() -> None:
    closed: list[str] = []

    async def read() -> list[int]:
        return [chunk async for chunk in _until(time.monotonic() + 3600, _chunks(closed))]

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert closed == ["closed"]
