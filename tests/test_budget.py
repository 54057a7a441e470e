"""`mor.budget(max_mor=…, per_call=…, max_sessions=…)` on the sandbox: every surface (the
workbench, ChatMorpheus in a LangGraph loop, %%mor, serve through the openai client) is stopped
before a cap is crossed, a stream crossing one is stopped and its session closed, budgets nest
and are shared between threads, and nothing is left open afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import mor_workbench as mor
from mor_workbench.serve import make_app

MODEL = "llama-3.3-70b"
OTHER = "qwen3-235b"


def _call(wb: mor.Workbench, name: str, *args: Any, **options: Any) -> Any:
    return wb._portal.run(wb.aio.chain.call(name, *args, **options))


def _mor_wei(wb: mor.Workbench) -> int:
    return _call(wb, "balanceOf", wb.address, to=wb.aio.chain.deployment.token)


def _nothing_left_open(wb: mor.Workbench) -> None:
    assert wb.closable() == [], "every session this budget saw is closed"
    assert wb.aio.router.journal.unfinished() == []


@pytest.fixture
def one(sandbox_info, tmp_path, monkeypatch) -> Iterator[tuple[mor.Workbench, Any]]:
    """A workbench on one provider (the "balanced" one) and that provider's quote row, so
    the stake of its automatic session is known to the wei before it opens."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    provider = sandbox_info.signer("provider:balanced").address
    wb = mor.connect("sandbox", sandbox_dir=sandbox_info.directory, strategy={"allow": [provider]})
    quote = wb.quote(MODEL)
    yield wb, quote[~quote["excluded"]].iloc[0]
    wb.close()


def test_an_open_whose_stake_would_cross_max_mor_is_refused_before_any_money_moves(one) -> None:
    wb, row = one
    before = _mor_wei(wb)
    cap = row["stake"] / 2
    with mor.budget(max_mor=cap) as b, pytest.raises(mor.BudgetExceeded) as refused:
        wb.chat("Hello", model=MODEL)
    assert refused.value.cap == "max_mor" and refused.value.limit == cap
    assert refused.value.would_be == pytest.approx(row["stake"])
    assert f"over its {cap:.6g} MOR" in str(refused.value)
    assert isinstance(refused.value, mor.RequestError) and refused.value.status == 402
    assert _mor_wei(wb) == before
    assert b.held == 0 and b.spent == 0 and b.sessions == 0 and b.report().empty
    _nothing_left_open(wb)


def test_the_ledger_holds_the_stake_and_counts_each_call(one) -> None:
    wb, row = one
    with mor.budget(max_mor=row["stake"] * 1.5, per_call=1.0, max_sessions=1) as b:
        assert wb.chat("Hello", model=MODEL)
        stream = wb.stream("And more", model=MODEL)
        assert "".join(stream)
        completion = wb.complete([{"role": "user", "content": "Hi"}], model=MODEL)
    assert b.sessions == 1
    assert b.held_wei == row["stake_wei"], "the open's stake, to the wei"
    report = b.report()
    assert list(report["surface"]) == ["workbench"] * 3
    assert set(report["model"]) == {MODEL} and set(report["outcome"]) == {"ok"}
    assert report["tokens"].iloc[1] == stream.usage["completion_tokens"]
    assert report["tokens"].iloc[2] == completion.usage.completion_tokens
    assert (report["mor"] > 0).all()
    assert b.spent == pytest.approx(report["mor"].sum())
    assert report["provider"].iloc[0] == row["provider"]
    wb.close()
    assert b.held == 0, "a closed session's stake is no longer held"
    _nothing_left_open(wb)


def test_max_sessions_refuses_one_session_too_many(one) -> None:
    wb, _ = one
    with mor.budget(max_sessions=1) as b:
        wb.chat("Hello", model=MODEL)
        with pytest.raises(mor.BudgetExceeded, match="max_sessions to 2, over its 1"):
            wb.chat("Hello", model=OTHER)
    assert b.sessions == 1
    assert wb.closable() == [wb.aio._sessions[MODEL].id]


def test_a_stream_crossing_per_call_is_stopped_and_its_session_closed(one) -> None:
    wb, row = one
    prompt = "Tell me a long story about RAID"
    wb.chat("Warm up", model=MODEL)  # the session opens outside the budget
    session = wb.aio._sessions[MODEL]
    timed = wb.stream(prompt, model=MODEL)  # the same answer as below (a seeded simulator)
    whole = "".join(timed)
    per_call = row["price_per_second"] * timed.record.e2e_s / 2  # half of that answer's time
    text = ""
    with mor.budget(per_call=per_call) as b:
        stream = wb.stream(prompt, model=MODEL)
        with pytest.raises(mor.BudgetExceeded, match="per_call"):
            for delta in stream:
                text += delta
    assert session.closed, "the session of the stopped stream is closed"
    closed = _call(wb, "getSession", bytes.fromhex(session.id[2:]))
    assert closed["closedAt"] != 0
    (call,) = b.report().itertuples()
    assert call.outcome == "stopped by the budget" and call.mor > per_call
    assert text and text == stream.text, "what came before the cap was kept"
    assert whole.startswith(text) and len(text) < len(whole), "stopped mid-way"
    _nothing_left_open(wb)


def test_nested_budgets_count_inner_calls_in_both_and_cap_the_inner(one) -> None:
    wb, row = one
    with mor.budget(max_mor=row["stake"] * 2, max_sessions=2) as outer:
        too_big = mor.budget(max_mor=row["stake"] * 3, max_sessions=2)
        with pytest.raises(mor.ConfigurationError, match="exceeds the outer budget's"):
            too_big.__enter__()
        with mor.budget(max_mor=row["stake"] * 1.5, max_sessions=1) as inner:
            wb.chat("Hello", model=MODEL)
        wb.chat("Again", model=MODEL)
    assert inner.outer is outer
    uncapped = mor.budget(max_sessions=1)  # no max_mor of its own: the outer's holds
    with outer, uncapped, pytest.raises(mor.BudgetExceeded, match="max_mor"):
        wb.chat("Hello", model=OTHER)
    assert uncapped.sessions == 0
    assert len(inner.report()) == 1 and len(outer.report()) == 2
    assert inner.sessions == outer.sessions == 1
    assert outer.spent == pytest.approx(inner.spent + outer.report()["mor"].iloc[1])


def test_two_threads_share_one_budget(one) -> None:
    wb, row = one
    shared = mor.budget(max_mor=row["stake"] * 1.5, max_sessions=1)
    refused: list[BaseException] = []

    def work() -> None:
        with shared:
            for _ in range(3):
                wb.chat("Hello", model=MODEL)
            try:
                wb.chat("Hello", model=OTHER)
            except mor.BudgetExceeded as exc:
                refused.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.sessions == 1, "one session for both threads, the second one refused"
    assert len(refused) == 2 and all(e.cap == "max_sessions" for e in refused)
    assert len(shared.report()) == 6
    assert shared.spent == pytest.approx(shared.report()["mor"].sum())
    wb.close()
    _nothing_left_open(wb)


def test_a_langgraph_loop_is_stopped_before_the_cap(one) -> None:
    from langchain_core.messages import HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph

    from mor_workbench.langchain import ChatMorpheus

    wb, row = one
    llm = ChatMorpheus(model=MODEL, workbench=wb)
    graph = StateGraph(MessagesState)  # an agent that never stops on its own
    graph.add_node("agent", lambda state: {"messages": [llm.invoke(state["messages"])]})
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "agent")
    agent = graph.compile()
    # room for the session's stake and its first call: the second call is refused
    with mor.budget(max_mor=row["stake"] + 1e-9) as b, pytest.raises(mor.BudgetExceeded):
        agent.invoke({"messages": [HumanMessage("Loop forever")]}, {"recursion_limit": 50})
    report = b.report()
    assert list(report["surface"]) == ["langchain"]
    wb.close()
    _nothing_left_open(wb)


@pytest.fixture
def shell(sandbox_dir: Path, tmp_path, monkeypatch) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "magic-home"))
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "mor_workbench")
    ip.run_line_magic("mor", f"connect sandbox --dir {sandbox_dir}")
    yield ip
    ip.run_line_magic("mor", "budget off")
    mags = ip.magics_manager.registry["MorMagics"]
    mags.workbench.close()
    mags.workbench = None


def test_mor_magics_quote_and_a_notebook_budget_stop_a_cell(shell) -> None:
    quote = shell.run_cell(f"%mor quote {MODEL} --duration 10m", store_history=True).result
    assert "stake" in quote.columns and len(quote)
    shell.run_line_magic("mor", "budget 0.000001")
    result = shell.run_cell(f"%%mor {MODEL}\nHello", store_history=True)
    assert isinstance(result.error_in_exec, mor.BudgetExceeded)
    wb = shell.magics_manager.registry["MorMagics"].wb
    assert wb.closable() == []
    shell.run_line_magic("mor", "budget off")
    answered = shell.run_cell(f"%%mor {MODEL}\nHello", store_history=True)
    assert answered.success


async def test_serve_refuses_with_402_under_its_budget(sandbox_dir, tmp_path, monkeypatch):
    from aiohttp import web

    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    workbench = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    runner = web.AppRunner(make_app(workbench), shutdown_timeout=1.0)
    await runner.setup()
    served = mor.budget(max_mor=0.000001).activate()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        api = openai.AsyncOpenAI(base_url=base_url, api_key="any", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            await api.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
        assert refused.value.status_code == 402
        assert refused.value.body["code"] == "budget_exceeded"
        assert "max_mor" in refused.value.body["message"]
        assert workbench.backend.closable() == []
    finally:
        served.deactivate()
        await runner.cleanup()


def test_serve_budget_flag_caps_the_server(sandbox_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # the server's journal, read after
    env = {**os.environ}
    command = [sys.executable, "-m", "mor_workbench.cli", "serve", "--dir", str(sandbox_dir)]
    command += ["--port", "0", "--budget", "0.000001"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        assert " at http://" in line, line or proc.stderr.read().decode()
        base_url = line.split(" at ", 1)[1].split(" ", 1)[0]
        api = openai.OpenAI(base_url=base_url, api_key="any", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.status_code == 402
        assert "over its 1e-06 MOR" in refused.value.body["message"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as wb:
        assert wb.closable() == [], "the server opened nothing (its journal is empty)"


async def test_async_with_covers_the_tasks_inside_it_only(sandbox_info, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)
    try:
        async with mor.budget(max_sessions=1) as b:
            answers = await asyncio.gather(*(wb.chat(f"Hi {i}", model=MODEL) for i in range(3)))
            with pytest.raises(mor.BudgetExceeded, match="max_sessions"):
                await wb.chat("Hello", model=OTHER)
        assert all(answers)
        assert await wb.chat("Hello", model=OTHER), "outside the budget nothing is capped"
        assert b.sessions == 1 and len(b.report()) == 3
    finally:
        await wb.close()
    assert wb.backend.closable() == []
