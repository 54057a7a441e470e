"""The %mor / %%mor magics in a real IPython shell and a real Jupyter kernel, on the sandbox."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import mor_workbench as mor
from mor_workbench import magic
from mor_workbench.magic import Answer, MorMagics, bundle, expand, extract_code
from mor_workbench.market.tables import short
from mor_workbench.readouts import call_footer

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def shell(sandbox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real IPython shell with the extension loaded and connected to the shared sandbox."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(tmp_path_factory.mktemp("magic-home")))
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "mor_workbench")
        ip.run_line_magic("mor", f"connect sandbox --dir {shlex.quote(str(sandbox_dir))}")
        yield ip
        mags = ip.magics_manager.registry["MorMagics"]
        if mags.workbench is not None:
            mags.workbench.close()
            mags.workbench = None


@pytest.fixture
def mags(shell: Any) -> Iterator[MorMagics]:
    """The extension's magics, with no conversations or aliases left by other tests."""
    found = shell.magics_manager.registry["MorMagics"]
    found.conversations.clear()
    found.aliases.clear()
    found.live_display = None
    yield found
    found.live_display = None


def run(ip: Any, source: str) -> Any:
    """Run a cell as a notebook does (numbered, in the history); its ExecutionResult."""
    return ip.run_cell(source, store_history=True)


def cell_ok(ip: Any, source: str) -> Any:
    result = run(ip, source)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result


# ----- tables -----


def test_tables_are_dataframes(shell, mags) -> None:
    models = cell_ok(shell, "%mor models").result
    assert isinstance(models, pd.DataFrame) and "llama-3.3-70b" in set(models["name"])
    bids = cell_ok(shell, "%mor bids llama-3.3-70b").result
    assert isinstance(bids, pd.DataFrame) and len(bids) and "score" in bids
    providers = cell_ok(shell, "%mor providers").result
    assert isinstance(providers, pd.DataFrame) and len(providers)
    assert isinstance(cell_ok(shell, "%mor sessions").result, pd.DataFrame)
    balance = cell_ok(shell, "%mor balance").result
    assert isinstance(balance, pd.DataFrame) and balance["mor"].iloc[0] > 0
    assert cell_ok(shell, "%mor workbench").result is mags.workbench


def test_mor_amounts_are_rounded_and_wei_stays_exact(shell, mags) -> None:
    session = cell_ok(shell, "%mor open llama-3.3-70b --duration 7m").result
    try:
        shown = cell_ok(shell, "%mor sessions").result
        raw = mags.workbench.sessions()
        assert list(shown["stake_wei"]) == list(raw["stake_wei"])  # exact, untouched
        assert list(shown["stake"]) == [
            round(w / 10**18, magic.MOR_DECIMALS) for w in raw["stake_wei"]
        ]
        assert (shown["price_per_second"] > 0).all()  # tiny prices keep their digits
        balance = cell_ok(shell, "%mor balance").result
        assert balance.loc[mags.workbench.address, "mor_staked"] > 0
        assert (balance == balance.round(magic.MOR_DECIMALS)).all().all()
    finally:
        session.close()


def test_readable_mor_unit() -> None:
    frame = pd.DataFrame(
        {
            "stake": [0.1 + 0.2, 9999.123456789],
            "price_per_second": [1.23456789e-7, 0.1 + 0.2],
            "stake_wei": [300000000000000001, 9999123456789000000000],
        }
    )
    shown = magic.readable_mor(frame, amounts=["stake"], prices=["price_per_second"])
    assert list(shown["stake"]) == [0.3, 9999.123457]
    assert list(shown["price_per_second"]) == [1.23457e-7, 0.3]
    assert list(shown["stake_wei"]) == list(frame["stake_wei"])
    assert frame["stake"].iloc[0] == 0.1 + 0.2  # the caller's frame is left as it was


def test_first_use_connects_to_the_sandbox(shell, mags, monkeypatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_connect(network: str, **options: Any) -> Any:
        calls.append((network, options))
        return mags.workbench

    monkeypatch.setattr(magic, "connect", fake_connect)
    fresh = MorMagics(shell)
    assert isinstance(fresh.mor("providers"), pd.DataFrame)
    fresh.mor("models")
    assert calls == [("sandbox", {})]  # once, on first use, to the sandbox


def test_help_lists_every_command(shell, mags, capsys) -> None:
    cell_ok(shell, "%mor help")
    out = capsys.readouterr().out
    for command in ("connect", "use", "models", "bids", "providers", "sessions", "open", "close"):
        assert f"%mor {command}" in out
    for option in ("--format", "--session", "--no-stream", "--chat", "--output", "--system"):
        assert option in out


# ----- asking -----


def test_cell_answers_stores_and_shows_a_footer(shell, mags, capsys) -> None:
    cell_ok(shell, "%%mor llama-3.3-70b --max-tokens 30 -o answer\nSay hello to the marketplace.")
    answer = shell.user_ns["_mor"]
    assert isinstance(answer, Answer) and answer
    assert shell.user_ns["answer"] is answer
    # the sandbox's models answer deterministically: the same prompt through the API agrees
    expected = mags.workbench.chat(
        "Say hello to the marketplace.", model="llama-3.3-70b", max_tokens=30
    )
    assert str(answer) == expected
    out = capsys.readouterr().out
    assert answer in out  # streamed to the terminal
    footer_line = out.strip().splitlines()[-1]
    assert short(answer.info["provider"]) in footer_line
    assert short(answer.info["session_id"]) in footer_line
    assert f"{answer.usage['completion_tokens']} tokens" in footer_line
    assert "MOR" in footer_line and "TTFT" in footer_line and "tokens/s" in footer_line
    assert answer.usage["completion_tokens"] <= 30


def test_the_answer_streams_into_a_display_handle(shell, mags, monkeypatch) -> None:
    monkeypatch.setattr(magic, "UPDATE_EVERY_S", 0.0)  # redraw on every delta
    monkeypatch.setattr(shell, "display_pub", CapturingDisplayPublisher())
    mags.live_display = True
    cell_ok(shell, "%%mor llama-3.3-70b\nTell me about staking.")
    outputs = shell.display_pub.outputs
    first, *updates, last = outputs
    display_id = first["transient"]["display_id"]
    assert not first["update"]
    assert len(updates) > 2 and all(u["update"] for u in updates)
    assert {u["transient"]["display_id"] for u in updates} == {display_id}
    texts = [u["data"]["text/markdown"] for u in updates]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert texts[-1] == shell.user_ns["_mor"]  # ends as the whole answer, as markdown
    assert not last["update"] and "tokens" in last["data"]["text/plain"]  # the footer


def test_interpolation_expands_known_names_only(shell, mags) -> None:
    numbered = cell_ok(shell, "x = 42")
    cell_ok(shell, "y = [10, 20]")
    failed = run(shell, "{}['missing']")
    assert not failed.success
    source = (
        "%%mor llama-3.3-70b --max-tokens 8\n"
        'x={x} cell={In[N]} y1={y[1]} d={"a": 1} f"{undefined}" {{x}} {Out[9999]}'
    ).replace("N", str(numbered.execution_count))
    cell_ok(shell, source)
    sent = mags.last_request["messages"][-1]["content"]
    assert sent == 'x=42 cell=x = 42 y1=20 d={"a": 1} f"{undefined}" {x} {Out[9999]}'
    assert shell.user_ns["_mor"] == mags.workbench.chat(sent, model="llama-3.3-70b", max_tokens=8)
    cell_ok(shell, f"%%mor llama-3.3-70b --max-tokens 4\nWhy? {{Err[{failed.execution_count}]}}")
    sent = mags.last_request["messages"][-1]["content"]
    assert "KeyError: 'missing'" in sent and "Traceback" in sent


def test_a_history_reference_that_finds_nothing_warns(shell, mags, capsys) -> None:
    fine = cell_ok(shell, "ok = 1")
    capsys.readouterr()
    source = (
        f"%%mor llama-3.3-70b --max-tokens 4\nFix {{Err[{fine.execution_count}]}} in {{Out[9999]}}"
        " and {In[99999]}; {undefined} and {{Out[1]}} are not history"
    )
    cell_ok(shell, source)
    sent = mags.last_request["messages"][-1]["content"]
    assert sent.startswith(f"Fix {{Err[{fine.execution_count}]}} in {{Out[9999]}} and")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert f"{{Err[{fine.execution_count}]}}, {{Out[9999]}}, {{In[99999]}}" in warnings[0]
    assert "undefined" not in warnings[0] and "Out[1]" not in warnings[0].replace("Out[9999]", "")


def test_a_mor_cells_value_is_its_answer(shell, mags, capsys) -> None:
    asked = cell_ok(shell, "%%mor llama-3.3-70b --max-tokens 6\nName a colour.")
    answer = shell.user_ns["_mor"]
    assert asked.result is None  # shown as it streamed, not displayed a second time
    assert shell.user_ns["Out"][asked.execution_count] is answer
    capsys.readouterr()
    cell_ok(shell, f"%%mor llama-3.3-70b --max-tokens 4\nWhy {{Out[{asked.execution_count}]}}?")
    assert mags.last_request["messages"][-1]["content"] == f"Why {answer}?"
    assert capsys.readouterr().err == ""


def test_expand_unit() -> None:
    namespace = {"a": 1, "xs": [1, 2], "Out": {3: "three"}, "err": ValueError("bad")}
    assert expand("{a} {xs[1]} {xs[5]} {Out[3]} {Out[4]} {b} {{a}}", namespace) == (
        "1 2 {xs[5]} three {Out[4]} {b} {a}"
    )
    assert expand("def f():\n    return {'k': a}", namespace) == "def f():\n    return {'k': a}"
    assert expand("{err}", namespace).endswith("ValueError: bad")


def test_chat_keeps_the_conversation(shell, mags) -> None:
    cell_ok(shell, "%%mor llama-3.3-70b --chat --max-tokens 12\nWho are you?")
    first = str(shell.user_ns["_mor"])
    cell_ok(shell, "%%mor llama-3.3-70b --chat --max-tokens 12 --system 'Be brief.'\nAnd then?")
    history = [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And then?"},
    ]
    assert mags.last_request["messages"] == [{"role": "system", "content": "Be brief."}, *history]
    second = shell.user_ns["_mor"]
    assert second == mags.workbench.chat(
        history, model="llama-3.3-70b", system="Be brief.", max_tokens=12
    )
    assert mags.conversations["llama-3.3-70b"][-1] == {"role": "assistant", "content": second}
    cell_ok(shell, "%%mor llama-3.3-70b --max-tokens 5\nAlone?")  # without --chat: no history
    assert mags.last_request["messages"] == [{"role": "user", "content": "Alone?"}]
    cell_ok(shell, "%mor reset llama-3.3-70b")
    assert "llama-3.3-70b" not in mags.conversations


def test_alias_supplies_model_and_options(shell, mags) -> None:
    cell_ok(shell, "%mor alias fast llama-3.3-70b --max-tokens 3 --temperature 0.5")
    cell_ok(shell, "%%mor fast\nHello")
    assert mags.last_request["model"] == "llama-3.3-70b"
    assert mags.last_request["max_tokens"] == 3 and mags.last_request["temperature"] == 0.5
    assert shell.user_ns["_mor"].usage["completion_tokens"] <= 3
    cell_ok(shell, "%%mor fast --max-tokens 6\nHello")  # the cell's options win
    assert mags.last_request["max_tokens"] == 6
    listed = cell_ok(shell, "%mor alias").result
    assert listed.to_dict("records") == [
        {"alias": "fast", "model": "llama-3.3-70b", "options": "--max-tokens 3 --temperature 0.5"}
    ]
    assert not run(shell, "%mor alias broken llama-3.3-70b --max-tokens many").success
    cell_ok(shell, "%mor unalias fast")
    assert "fast" not in mags.aliases


def test_format_code_fills_the_next_cell(shell, mags, monkeypatch) -> None:
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        shell, "set_next_input", lambda s, replace=False: calls.append((s, replace))
    )
    cell_ok(shell, "%%mor qwen3-235b -f code --max-tokens 15\nA loop in Python")
    answer = shell.user_ns["_mor"]
    assert calls == [(answer.data, False)] and answer.data == answer.strip()
    assert answer.format == "code"


def test_format_code_asks_for_code_only_and_strips_fences(shell, mags, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(shell, "set_next_input", lambda s, replace=False: calls.append(s))
    cell_ok(shell, "%%mor qwen3-235b -f code --max-tokens 8 --system 'Use Python.'\nA loop")
    system = mags.last_request["messages"][0]
    assert system == {"role": "system", "content": f"Use Python.\n\n{magic.CODE_ONLY}"}
    assert "code only" in magic.CODE_ONLY and "fences" in magic.CODE_ONLY
    assert calls == [shell.user_ns["_mor"].data] and "```" not in calls[0]


def test_format_json_asks_for_json_mode_and_shows_the_parsed_value(
    shell, mags, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(shell, "display_pub", CapturingDisplayPublisher())
    mags.live_display = True  # as in a notebook
    cell_ok(shell, "%%mor llama-3.3-70b -f json\nTwo facts about the marketplace")
    answer = shell.user_ns["_mor"]
    assert mags.last_request["response_format"] == {"type": "json_object"}
    system = mags.last_request["messages"][0]
    assert system["role"] == "system" and "JSON" in system["content"]  # OpenAI requires it
    assert isinstance(answer.data, dict) and answer.data
    assert "not valid JSON" not in capsys.readouterr().err
    *_, shown, _footer = shell.display_pub.outputs
    pretty = json.dumps(answer.data, indent=2, ensure_ascii=False)
    assert shown["data"]["text/plain"] == pretty  # the parsed value, pretty-printed


def test_format_json_and_params(shell, mags) -> None:
    cell_ok(
        shell, '%%mor llama-3.3-70b -f json -p \'response_format={"type": "json_object"}\'\nJSON'
    )
    answer = shell.user_ns["_mor"]
    assert mags.last_request["response_format"] == {"type": "json_object"}
    assert isinstance(answer.data, dict) and "answer" in answer.data


def test_rendering_units() -> None:
    assert extract_code("Here:\n```js\nlet a = 1;\n```\nand\n```\nb()\n```") == (
        "let a = 1;\n\nb()",
        "js",
    )
    assert bundle("<b>hi</b>", "html", final=True)["text/html"] == "<b>hi</b>"
    pretty = bundle('```json\n{"a": [1]}\n```', "json", final=True)["text/plain"]
    assert pretty == '{\n  "a": [\n    1\n  ]\n}'
    assert bundle("x", "text", final=True) == {"text/plain": "x"}
    info = {"provider": "gateway", "ttft_s": None, "tokens_per_s": None, "cost_mor": 0.0}
    assert (
        call_footer(info, {"completion_tokens": 3}, model="m") == "m | via the gateway | 3 tokens"
    )


def test_the_footer_says_what_tokens_per_second_is_measured_over() -> None:
    streamed = {"streamed": True, "ttft_s": 0.25, "tokens_per_s": 40.0}
    line = call_footer({**streamed, "tokens_per_s_basis": "generation"}, {}, model="m")
    assert "TTFT 0.25 s" in line and "40.0 tokens/s (generation)" in line
    whole = {"streamed": False, "ttft_s": None, "tokens_per_s": 12.5}
    line = call_footer({**whole, "tokens_per_s_basis": "end_to_end"}, {}, model="m")
    assert "TTFT" not in line and "12.5 tokens/s (end to end)" in line


# ----- errors -----


def test_unknown_model_is_one_line_naming_the_models(shell, mags, capsys) -> None:
    result = run(shell, "%%mor no-such-model\nhello")
    assert isinstance(result.error_in_exec, mor.ConfigurationError)
    captured = capsys.readouterr()
    lines = [ln for ln in ANSI.sub("", captured.out + captured.err).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "no-such-model" in lines[0]
    assert "llama-3.3-70b" in lines[0] and "qwen3-235b" in lines[0]


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("%%mor llama-3.3-70b --bogus\nhi", "unrecognized arguments: --bogus"),
        ("%%mor llama-3.3-70b -f yaml\nhi", "invalid choice"),
        ("%%mor llama-3.3-70b\n   ", "the cell is empty"),
        ("%%mor\nhi", "name a model"),
        ("%mor frobnicate", "unknown command 'frobnicate'"),
        ("%mor connect mars", "invalid choice"),
        ("%mor close 0xdeadbeef", "no session '0xdeadbeef'"),
    ],
)
def test_bad_arguments_are_one_usage_line(shell, mags, capsys, source, says) -> None:
    result = run(shell, source)
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    text = ANSI.sub("", captured.out + captured.err)
    assert says in text and "Traceback" not in text
    assert len([ln for ln in text.splitlines() if ln.strip()]) == 1


def test_unexpected_errors_still_raise(shell, mags, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(mags.workbench, "models", broken)
    with pytest.raises(RuntimeError, match="bug"):
        shell.run_line_magic("mor", "models")


# ----- sessions -----


def test_open_ask_and_close_a_session(shell, mags) -> None:
    session = cell_ok(shell, "%mor open mistral-31-24b --duration 6m").result
    assert isinstance(session, mor.Session) and session.id in mags.sessions
    cell_ok(shell, f"%%mor --session {session.id[:12]} --max-tokens 5\nHi")
    assert shell.user_ns["_mor"].info["session_id"] == session.id
    assert shell.user_ns["_mor"].model == "mistral-31-24b"
    cell_ok(shell, f"%mor close {session.id}")
    assert session.closed and session.id not in mags.sessions
    row = mags.workbench.sessions().set_index("id").loc[session.id]
    assert not row["is_active"]


def test_a_cell_asks_through_the_session_opened_for_its_model(shell, mags) -> None:
    """%mor open MODEL then %%mor MODEL: one session (one stake), not a second automatic one."""
    known = set(mags.workbench.sessions()["id"])
    session = cell_ok(shell, "%mor open gpt-oss-120b --duration 6m").result
    cell_ok(shell, "%%mor gpt-oss-120b --max-tokens 3\nHi")
    assert shell.user_ns["_mor"].info["session_id"] == session.id
    assert set(mags.workbench.sessions()["id"]) - known == {session.id}
    cell_ok(shell, f"%mor close {session.id}")
    cell_ok(shell, "%%mor gpt-oss-120b --max-tokens 3\nAgain")  # closed: an automatic one
    assert shell.user_ns["_mor"].info["session_id"] != session.id


def test_the_notebooks_own_workbench_is_used_instead_of_connecting(
    shell, sandbox_dir, tmp_path, monkeypatch, capsys
) -> None:
    """With `wb = mor.connect(...)` in the notebook, %%mor and %mor open use it (and its
    sessions) rather than connecting a workbench of their own."""

    def no_second_workbench(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the magics connected a workbench of their own")

    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    mine = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    monkeypatch.setattr(magic, "connect", no_second_workbench)
    fresh = MorMagics(shell)  # a notebook where the magics have not connected yet
    fresh.live_display = False
    shell.user_ns["wb"] = mine
    try:
        fresh.mor("mistral-31-24b --max-tokens 3", "Hi")
        assert fresh.workbench is mine
        assert "the notebook's workbench wb" in capsys.readouterr().out
        assert shell.user_ns["_mor"].info["session_id"] == mine.aio._sessions["mistral-31-24b"].id
        session = fresh.mor("open llama-3.3-70b --duration 6m")
        assert session.aio.opened.session_id in mine.aio.router.opened  # opened through wb
        fresh.mor("llama-3.3-70b --max-tokens 3", "Hi")
        assert shell.user_ns["_mor"].info["session_id"] == session.id
    finally:
        del shell.user_ns["wb"]
        mine.close()
    assert session.closed  # wb.close() closed it: the notebook's workbench owned it


def test_several_notebook_workbenches_are_picked_with_use(
    shell, sandbox_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    first, second = (mor.connect("sandbox", sandbox_dir=sandbox_dir) for _ in range(2))
    fresh = MorMagics(shell)
    shell.user_ns.update(first_wb=first, second_wb=second)
    try:
        with pytest.raises(UsageError, match=r"several workbenches \(first_wb, second_wb\)"):
            fresh.mor("workbench")
        with pytest.raises(UsageError, match="not an open Workbench"):
            fresh.mor("use nothing_here")
        fresh.mor("use second_wb")
        assert fresh.mor("workbench") is second
        second.close()  # closed by its owner: the magics look again, and find the other
        assert fresh.mor("workbench") is first
    finally:
        del shell.user_ns["first_wb"], shell.user_ns["second_wb"]
        first.close()
        second.close()


# ----- through Jupyter -----


def test_through_a_real_kernel(sandbox_dir: Path, tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "MOR_WORKBENCH_HOME": str(tmp_path)}
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    try:

        def execute(code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            messages: list[dict[str, Any]] = []
            reply = kc.execute_interactive(code, output_hook=messages.append, timeout=300)
            return reply["content"], messages

        reply, _ = execute(
            "%load_ext mor_workbench\n"
            "import mor_workbench.magic\n"
            "mor_workbench.magic.UPDATE_EVERY_S = 0.0\n"
            f"%mor connect sandbox --dir {shlex.quote(str(sandbox_dir))}"
        )
        assert reply["status"] == "ok"
        reply, messages = execute("%%mor llama-3.3-70b\nWhat does a provider stake?")
        assert reply["status"] == "ok"
        kinds = [m["msg_type"] for m in messages]
        shown = [m for m in messages if m["msg_type"] == "display_data"]
        updates = [m for m in messages if m["msg_type"] == "update_display_data"]
        display_id = shown[0]["content"]["transient"]["display_id"]
        assert kinds.index("display_data") < kinds.index("update_display_data")
        assert len(updates) > 2
        assert {u["content"]["transient"]["display_id"] for u in updates} == {display_id}
        final = updates[-1]["content"]["data"]["text/markdown"]
        assert "MOR" in shown[-1]["content"]["data"]["text/plain"]  # the footer, last
        reply, messages = execute("print(repr(str(_mor)))")
        printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
        assert printed.strip() == repr(final)

        reply, messages = execute("%%mor no-such-model\nhi")
        assert reply["status"] == "error" and reply["ename"] == "ModelNotFound"
        assert len(reply["traceback"]) == 1 and "llama-3.3-70b" in reply["traceback"][0]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
