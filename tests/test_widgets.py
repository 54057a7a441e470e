"""The widgets' Python side on the sandbox: traits fill in, sorting and filtering, a chat round
trip, closing a session from the Sessions widget, Compare on every provider."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import mor_workbench as mor
from mor_workbench.sandbox.market import MODELS, PROVIDERS
from mor_workbench.widgets import Chat, Compare, Explorer, Sessions, _base

MODEL = "llama-3.3-70b"
BIDS = len(MODELS) * len(PROVIDERS)  # every sandbox provider bids on every model


@pytest.fixture
def wb(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    workbench.close()


@pytest.fixture
def widgets():
    made = []
    yield made.append
    for widget in made:
        widget.close()


def click(widget, **message) -> None:
    """What the browser sends when a button is pressed."""
    widget._on_msg(widget, message, [])


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_importing_the_package_does_not_load_the_widgets() -> None:
    code = (
        "import sys, mor_workbench; "
        "assert 'mor_workbench.widgets' not in sys.modules; assert 'anywidget' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_front_end_sources_ship_in_the_package() -> None:
    for name in ("common.js", "explorer.js", "chat.js", "sessions.js", "compare.js", "widgets.css"):
        assert (_base.STATIC / name).is_file()
    for cls in (Explorer, Chat, Sessions, Compare):
        assert "export default" in cls._esm and "function h(" in cls._esm
        assert ".mor-widget" in cls._css


def test_a_workbench_is_required() -> None:
    with pytest.raises(TypeError, match=r"mor\.connect"):
        Explorer("sandbox")


def test_explorer_fills_models_bids_providers_and_scatter(wb, widgets) -> None:
    explorer = Explorer(wb)
    widgets(explorer)
    explorer.wait(30)
    assert explorer.error == "" and not explorer.busy
    assert explorer.counts == {"models": len(MODELS), "bids": BIDS, "providers": len(PROVIDERS)}
    assert MODEL in explorer.model_names
    assert explorer.columns[0]["key"] == "name"
    llama = next(r for r in explorer.rows if r["name"] == MODEL)
    assert llama["bids"] == 3 and llama["best_price_per_hour"] > 0 and llama["best_score"] > 0
    traces = {trace.name: trace for trace in explorer.plot.data}  # the plotly scatter
    assert set(traces) == set(explorer.model_names)
    assert sum(len(trace.x) for trace in traces.values()) == BIDS
    assert all(x > 0 for trace in traces.values() for x in trace.x)
    explorer.model = MODEL  # its bids stand out, the others fade
    assert {n: t.marker.opacity for n, t in traces.items()}[MODEL] == 1.0
    assert all(t.marker.opacity < 1 for n, t in traces.items() if n != MODEL)
    shown = explorer._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]
    assert shown["model_id"] == explorer._shown.model_id  # the table with the scatter under it
    assert explorer._shown.children == (explorer, explorer.plot)
    explorer.view = "bids"  # each bid says why it ranks where it does
    assert "why" in [c["key"] for c in explorer.columns]
    assert all(r["why"] for r in explorer.rows)
    explorer.view = "providers"
    assert len(explorer.rows) == len(PROVIDERS)
    assert all(r["bids"] == len(MODELS) for r in explorer.rows)


def test_explorer_sorts_and_filters(wb, widgets) -> None:
    explorer = Explorer(wb, model=MODEL)
    widgets(explorer)
    explorer.wait(30)
    assert explorer.view == "bids"
    assert (explorer.sort_by, explorer.descending) == ("score", True)  # the bids view's default
    assert {r["model"] for r in explorer.rows} == {MODEL} and len(explorer.rows) == 3
    scores = [r["score"] for r in explorer.rows]
    assert scores == sorted(scores, reverse=True)

    explorer.sort_by, explorer.descending = "price_per_hour", False
    prices = [r["price_per_hour"] for r in explorer.rows]
    assert prices == sorted(prices) and len(set(prices)) == 3
    explorer.descending = True
    assert [r["price_per_hour"] for r in explorer.rows] == sorted(prices, reverse=True)

    cheapest = explorer.rows[-1]
    explorer.filter = cheapest["provider_short"].lower()  # case does not matter
    assert [r["id"] for r in explorer.rows] == [cheapest["id"]]
    explorer.filter = "no such thing"
    assert explorer.rows == []
    explorer.filter = ""
    explorer.model = ""  # every model's bids
    assert len(explorer.rows) == BIDS and len(explorer.table()) == BIDS

    explorer.view = "models"  # a sort key the view lacks falls back to its default
    assert explorer.sort_by == "name"
    assert [r["name"] for r in explorer.rows] == sorted(explorer.model_names)
    click(explorer, type="refresh")
    explorer.wait(30)
    assert explorer.counts["bids"] == BIDS


def test_chat_round_trip_streams_into_messages_with_a_footer(wb, widgets) -> None:
    chat = Chat(wb, model=MODEL, max_tokens=40)
    widgets(chat)
    chat.wait(30)
    assert MODEL in chat.model_names and len(chat.bids) == 3
    seen = []
    chat.observe(lambda change: seen.append(change["new"]), names="messages")

    click(chat, type="send", prompt="Hello there")
    chat.wait(60)
    assert chat.error == ""
    user, answer = chat.messages
    assert user == {"role": "user", "content": "Hello there", "footer": "", "info": {}}
    assert answer["role"] == "assistant" and answer["content"] and not answer["streaming"]
    partial = [m[-1]["content"] for m in seen if m[-1].get("streaming") and m[-1]["content"]]
    assert partial and all(answer["content"].startswith(p) for p in partial)  # it streamed
    info = answer["info"]
    assert info["provider"] and info["completion_tokens"] > 0 and info["cost_mor"] > 0
    footer = answer["footer"]
    for part in ("session 0x", "TTFT", "tokens/s", "tokens", "MOR", info["provider"][:6]):
        assert part in footer
    assert chat.session["id"] == info["session_id"]
    assert chat.session["ends_at"] > time.time()

    chat.send("And more?")  # the history goes along, the session is reused
    chat.wait(60)
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.messages[-1]["info"]["session_id"] == info["session_id"]
    assert chat._session is not None and len(chat._session.lease.opened.session_id) == 32

    chat.model = "qwen3-235b"  # another model: a new session, the old one closed
    chat.wait(30)
    assert {b["provider"] for b in chat.bids} and chat.bid == ""
    chat.send("Write a loop")
    chat.wait(60)
    coder = chat.messages[-1]["info"]["session_id"]
    assert coder != info["session_id"] and chat.session["model"] == "qwen3-235b"
    on_chain = wb.sessions().set_index("id")
    assert not on_chain.loc[info["session_id"]]["is_active"]

    click(chat, type="end_session")
    chat.wait(30)
    assert chat.session == {} and chat.status == "session closed"
    assert not wb.sessions().set_index("id").loc[coder]["is_active"]


def test_chat_stop_keeps_what_arrived(wb, widgets) -> None:
    slowest = wb.bids(MODEL).sort_values("price_per_hour").iloc[0]["id"]  # "budget": 50 tok/s
    chat = Chat(wb, model=MODEL, bid=slowest)
    widgets(chat)
    chat.wait(30)
    chat.send("Tell me a long story")
    wait_until(lambda: chat.messages and chat.messages[-1]["content"])
    click(chat, type="stop")
    chat.wait(30)
    last = chat.messages[-1]
    assert not last["streaming"] and last["content"] and "stopped" in last["footer"]
    chat.send("Still there?")  # the session still works
    chat.wait(60)
    assert chat.messages[-1]["footer"] and chat.error == ""


def test_work_runs_off_the_kernel_thread_and_slow_steps_say_so(wb, widgets, monkeypatch) -> None:
    monkeypatch.setattr(_base, "SLOW_S", 0.05)  # the budget provider's 0.25 s TTFT is "slow"
    slowest = wb.bids(MODEL).sort_values("price_per_hour").iloc[0]["id"]
    chat = Chat(wb, model=MODEL, bid=slowest)
    widgets(chat)
    chat.wait(30)
    lines = []
    chat.observe(lambda change: lines.append(change["new"]), names="status")
    started = time.monotonic()
    answer = chat.send("Hello")
    assert time.monotonic() - started < 0.05 and answer is not None and not answer.done()
    assert chat.busy
    chat.wait(60)
    assert chat.error == "" and chat.status == "" and not chat.busy
    assert any(line.startswith("opening a session for llama-3.3-70b…") for line in lines)
    waited = [line for line in lines if line.startswith("waiting for 0x")]
    assert any("still waiting (" in line for line in waited)


def test_chat_failure_is_one_line_in_the_widget(wb, widgets) -> None:
    chat = Chat(wb, model="no-such-model")
    widgets(chat)
    chat.wait(30)
    chat.error = ""
    chat.send("Hello")
    chat.wait(30)
    assert chat.error.startswith("answering failed:") and "\n" not in chat.error
    assert chat.messages[-1]["role"] == "error" and "no-such-model" in chat.messages[-1]["content"]
    assert not chat.busy


def test_sessions_close_button_closes_the_session_on_chain(wb, widgets) -> None:
    session = wb.open_session(MODEL, duration="6m")
    sessions = Sessions(wb)
    widgets(sessions)
    sessions.wait(30)
    assert sessions.error == ""
    row = next(r for r in sessions.sessions if r["id"] == session.id)
    assert row["closable"] and row["stake"] > 0 and row["ends_at"] > sessions.chain_now > 0
    assert sessions.balance["mor_staked"] >= row["stake"] * (1 - 1e-12)  # floats of wei

    click(sessions, type="close", id=session.id)
    sessions.wait(30)
    assert sessions.error == "" and "closed session" in sessions.status
    assert session.id not in {r["id"] for r in sessions.sessions}
    assert sessions.closing == []
    assert not wb.sessions().set_index("id").loc[session.id]["is_active"]
    assert session.closed

    click(sessions, type="close", id="0x" + "ab" * 32)  # not ours: one line, no exception
    sessions.wait(30)
    assert "was not opened by this account" in sessions.error

    click(sessions, type="withdraw")
    sessions.wait(30)
    assert sessions.status.startswith(("withdrew", "nothing released yet"))


def test_compare_fills_a_row_per_provider(wb, widgets) -> None:
    compare = Compare(wb, "Say hi", model=MODEL, max_tokens=12)
    widgets(compare)
    compare.wait(90)
    assert compare.error == "" and not compare.running
    bids = wb.bids(MODEL)
    assert sorted(r["id"] for r in compare.rows) == sorted(bids["id"])
    for row in compare.rows:
        assert row["state"] == "done" and row["text"]
        assert row["ttft_s"] > 0 and row["e2e_s"] >= row["ttft_s"]
        assert row["tokens_per_s"] > 0 and row["completion_tokens"] > 0 and row["cost_mor"] > 0
    assert len({r["session_id"] for r in compare.rows}) == len(compare.rows)  # one each
    assert compare.status == f"{len(bids)} of {len(bids)} providers answered"
    on_chain = wb.sessions().set_index("id")
    assert not any(on_chain.loc[r["session_id"]]["is_active"] for r in compare.rows)  # closed
    assert list(compare.frame()["state"]) == ["done"] * len(bids)

    click(compare, type="run", prompt="Again, best two", bids=None)
    compare.wait(90)
    assert compare.prompt == "Again, best two"
    assert all(r["state"] == "done" for r in compare.rows)


def test_on_sessions_changed_tells_every_open_and_close_until_unsubscribed(wb) -> None:
    events: list[tuple[str, str]] = []
    unsubscribe = wb.on_sessions_changed(lambda event, sid: events.append((event, sid)))
    session = wb.open_session(MODEL, duration="6m")
    session.close()
    wb.chat("Hi", model=MODEL, max_tokens=4)  # the workbench's own session for the model
    automatic = wb.aio._sessions[MODEL].id
    unsubscribe()
    wb.close_all()  # no longer told
    assert events == [
        ("opened", session.id),
        ("closed", session.id),
        ("opened", automatic),
    ]


def test_sessions_widget_keeps_up_with_the_other_surfaces(wb, widgets) -> None:
    sessions = Sessions(wb)
    widgets(sessions)
    sessions.wait(30)
    assert sessions.loaded and sessions.error == ""  # the table now says "no open sessions"
    staked_before = sessions.balance["mor_staked"]

    def shown() -> set[str]:
        return {row["id"] for row in sessions.sessions}

    chat = Chat(wb, model=MODEL, max_tokens=8)
    widgets(chat)
    chat.wait(30)
    chat.send("Hello")
    chat.wait(30)
    held = chat.session["id"]
    # nobody calls refresh(): the Chat widget's open is enough
    wait_until(lambda: held in shown() and sessions.balance["mor_staked"] > staked_before)
    row = next(r for r in sessions.sessions if r["id"] == held)
    assert sessions.balance["mor_staked"] >= staked_before + row["stake"] * (1 - 1e-12)

    wb.chat("Hi", model=MODEL, max_tokens=4)  # another surface: the workbench itself
    automatic = wb.aio._sessions[MODEL].id
    wait_until(lambda: automatic in shown())

    wb.close_all()  # closed elsewhere: both widgets let go of them
    wait_until(lambda: not {held, automatic} & shown())
    wait_until(lambda: chat.session == {})
    sessions.wait(30)
    assert sessions.error == "" and chat.error == ""


def test_the_chat_widget_offers_only_chat_models(wb) -> None:
    chat = Chat(wb, model=MODEL, max_tokens=20)
    chat.wait(timeout=60)
    types = wb.models().set_index("name")["type"]
    assert chat.model_names and MODEL in chat.model_names
    assert all(types[name] in ("LLM", "UNKNOWN") for name in chat.model_names)
    assert "text-embedding-bge-m3" not in chat.model_names
    chat.close()


def test_a_process_wide_budget_counts_the_widgets_calls_as_theirs(wb, widgets) -> None:
    """`%mor budget 5` makes a process-wide budget: the Chat widget's calls, made on the
    router's loop, are in its ledger under the surface "widget"."""
    spend = mor.budget(max_mor=50).activate()
    try:
        chat = Chat(wb, model=MODEL, max_tokens=20)
        widgets(chat)
        chat.wait(30)
        chat.send("Hello there")
        chat.wait(60)
        assert chat.error == ""
    finally:
        spend.deactivate()
    report = spend.report()
    assert list(report["surface"]) == ["widget"] and spend.spent > 0
    click(chat, type="end_session")
    chat.wait(30)
