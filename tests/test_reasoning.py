"""Reasoning models end to end (issue 12 §4): the sandbox's reasoning model thinks aloud in
`reasoning_content`, and every surface carries it apart from the answer — the model server
(checked with the openai SDK), `complete()`, `stream()`, ChatMorpheus, `%%mor`, the Chat widget
and `serve`, all on the sandbox's real chain and provider routers."""

from __future__ import annotations

import functools
import html
import operator
import shlex

import openai
import pytest
from aiohttp import web
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

import mor_workbench as mor
from mor_workbench import magic
from mor_workbench.langchain import ChatMorpheus
from mor_workbench.magic import bundle
from mor_workbench.router.calls import CallRecord
from mor_workbench.sandbox.model_server import ModelServer
from mor_workbench.serve import make_app
from mor_workbench.session import AsyncChatStream, StreamPart
from mor_workbench.widgets import Chat

REASONER = "gpt-oss-120b"  # tagged "reasoning" in the sandbox market
PLAIN = "llama-3.3-70b"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


# ----- the simulated reasoning model -----


@pytest.fixture
async def model_server():
    async with ModelServer([PLAIN, REASONER], profile="instant") as server:
        yield openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")


async def test_reasoning_model_thinks_in_reasoning_content_before_answering(model_server):
    whole = await model_server.chat.completions.create(model=REASONER, messages=QUESTION)
    message = whole.choices[0].message
    assert message.reasoning_content and message.content
    assert "sky is blue" not in message.content  # the thinking is not part of the answer
    assert "Why is the sky blue?" in message.reasoning_content  # it thinks about the question
    details = whole.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < whole.usage.completion_tokens

    stream = await model_server.chat.completions.create(
        model=REASONER, messages=QUESTION, stream=True
    )
    order, reasoning, content = [], "", ""
    async for chunk in stream:
        for choice in chunk.choices:
            thought = getattr(choice.delta, "reasoning_content", None)
            if thought:
                order.append("reasoning")
                reasoning += thought
            if choice.delta.content:
                order.append("content")
                content += choice.delta.content
    assert (reasoning, content) == (message.reasoning_content, message.content)
    assert order.index("content") == order.count("reasoning")  # all thinking came first


async def test_plain_model_sends_no_reasoning(model_server):
    whole = await model_server.chat.completions.create(model=PLAIN, messages=QUESTION)
    assert "reasoning_content" not in (whole.choices[0].message.model_extra or {})
    stream = await model_server.chat.completions.create(model=PLAIN, messages=QUESTION, stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            assert "reasoning_content" not in (choice.delta.model_extra or {})


async def test_max_tokens_counts_the_thinking(model_server):
    cut = await model_server.chat.completions.create(
        model=REASONER, messages=QUESTION, max_tokens=6
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 6
    assert cut.usage.completion_tokens_details.reasoning_tokens == 3  # half the budget, at most
    message = cut.choices[0].message
    assert message.content and message.reasoning_content == "Let me think"


async def test_reasoning_model_thinks_before_a_tool_call(model_server):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    stream = await model_server.chat.completions.create(
        model=REASONER, messages=QUESTION, tools=tools, stream=True
    )
    order = []
    async for chunk in stream:
        for choice in chunk.choices:
            if getattr(choice.delta, "reasoning_content", None):
                order.append("reasoning")
            for call in choice.delta.tool_calls or ():
                order.append(call.function.name or "arguments")
    assert order[0] == "reasoning" and "lookup" in order
    assert "reasoning" not in order[order.index("lookup") :]


# ----- the workbench: complete() and stream() -----


@pytest.fixture(scope="module")
def wb(sandbox_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("reasoning-home")  # this module's own session journal
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(home))
        workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
        yield workbench
        workbench.close()


def test_complete_keeps_the_reasoning_on_the_message(wb):
    completion = wb.complete(QUESTION, model=REASONER)
    message = completion.choices[0].message
    assert message.reasoning_content.startswith("Let me think")
    assert message.content and message.reasoning_content not in message.content
    assert completion.morpheus["provider"]  # how the call went is still there
    plain = wb.complete(QUESTION, model=PLAIN).choices[0].message
    assert getattr(plain, "reasoning_content", None) is None


def test_stream_yields_the_answer_and_keeps_the_reasoning_apart(wb):
    whole = wb.complete(QUESTION, model=REASONER, seed=7).choices[0].message
    stream = wb.stream(QUESTION, model=REASONER, seed=7)
    deltas = list(stream)
    assert "".join(deltas) == stream.text == whole.content  # only the answer is yielded
    assert stream.reasoning == whole.reasoning_content
    info = stream.info
    # the thinking counts as output: TTFT is its first token, and its tokens are counted
    assert info["completion_tokens"] == stream.usage["completion_tokens"]
    assert info["completion_tokens"] > len(deltas)

    events = wb.stream(QUESTION, model=REASONER, seed=7).events()
    parts = list(events)
    kinds = [p.kind for p in parts]
    assert kinds[0] == "reasoning" and kinds.index("text") == kinds.count("reasoning")
    assert "".join(p.text for p in parts if p.kind == "reasoning") == whole.reasoning_content
    assert "".join(p.text for p in parts if p.kind == "text") == whole.content
    assert all(isinstance(p, StreamPart) for p in parts)

    plain = wb.stream(QUESTION, model=PLAIN)
    assert "".join(plain) and plain.reasoning == ""


async def test_async_stream_has_the_same_twins(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    async with await mor.aconnect("sandbox", sandbox_dir=sandbox_dir) as awb:
        stream = awb.stream(QUESTION, model=REASONER, seed=3)
        parts = [p async for p in stream.events()]
        assert stream.reasoning and stream.text
        assert stream.reasoning == "".join(p.text for p in parts if p.kind == "reasoning")
        again = awb.stream(QUESTION, model=REASONER, seed=3)
        assert "".join([d async for d in again]) == stream.text
        assert again.reasoning == stream.reasoning


# ----- LangChain -----


def test_chat_morpheus_puts_the_reasoning_where_langchain_expects_it(wb):
    llm = ChatMorpheus(model=REASONER, workbench=wb, model_kwargs={"seed": 11})
    whole = wb.complete(QUESTION, model=REASONER, seed=11).choices[0].message

    message = llm.invoke("Why is the sky blue?")
    assert message.content == whole.content  # the answer alone
    assert message.additional_kwargs["reasoning_content"] == whole.reasoning_content
    blocks = message.content_blocks
    assert blocks[0] == {"type": "reasoning", "reasoning": whole.reasoning_content}
    assert blocks[1]["type"] == "text" and blocks[1]["text"] == whole.content

    chunks = list(llm.stream("Why is the sky blue?"))
    thinking = [c for c in chunks if c.additional_kwargs.get("reasoning_content")]
    assert thinking and all(c.content == "" for c in thinking)
    assert thinking[0].content_blocks[0]["type"] == "reasoning"
    total = functools.reduce(operator.add, chunks)
    assert total.content == whole.content
    assert total.additional_kwargs["reasoning_content"] == whole.reasoning_content
    assert [b["type"] for b in total.content_blocks] == ["reasoning", "text"]

    plain = ChatMorpheus(model=PLAIN, workbench=wb).invoke("Why is the sky blue?")
    assert "reasoning_content" not in plain.additional_kwargs
    assert [b["type"] for b in plain.content_blocks] == ["text"]


async def test_chat_morpheus_async_carries_the_reasoning_too(wb):
    llm = ChatMorpheus(model=REASONER, workbench=wb, model_kwargs={"seed": 12})
    message = await llm.ainvoke("Why is the sky blue?")
    total = None
    async for chunk in llm.astream("Why is the sky blue?"):
        total = chunk if total is None else total + chunk
    assert message.additional_kwargs["reasoning_content"]
    assert total.additional_kwargs == message.additional_kwargs
    assert total.content == message.content


# ----- %%mor -----


@pytest.fixture(scope="module")
def shell(sandbox_dir, tmp_path_factory):
    """A real IPython shell with the extension loaded, on the shared sandbox."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(tmp_path_factory.mktemp("magic-home")))
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "mor_workbench")
        ip.run_line_magic("mor", f"connect sandbox --dir {shlex.quote(str(sandbox_dir))}")
        mags = ip.magics_manager.registry["MorMagics"]
        yield ip, mags
        mags.live_display = None
        if mags.workbench is not None:
            mags.workbench.close()
            mags.workbench = None


def ask(ip, source):
    result = ip.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    return ip.user_ns["_mor"]


def test_magic_prints_the_reasoning_above_the_answer_in_a_terminal(shell, capsys):
    ip, mags = shell
    mags.live_display = False
    answer = ask(ip, "%%mor gpt-oss-120b -p seed=21\nWhy is the sky blue?")
    whole = mags.workbench.complete(QUESTION, model=REASONER, seed=21).choices[0].message
    assert str(answer) == whole.content and answer.reasoning == whole.reasoning_content
    out = capsys.readouterr().out
    assert f"Reasoning:\n{answer.reasoning}\n\n{answer}" in out

    ask(ip, "%%mor gpt-oss-120b --no-stream -p seed=21\nWhy is the sky blue?")
    assert f"Reasoning:\n{answer.reasoning}\n\n{answer}" in capsys.readouterr().out

    plain = ask(ip, "%%mor llama-3.3-70b --max-tokens 10\nWhy is the sky blue?")
    assert plain.reasoning == "" and "Reasoning:" not in capsys.readouterr().out


def test_magic_folds_the_reasoning_above_the_answer_in_a_notebook(shell, monkeypatch):
    ip, mags = shell
    mags.live_display = True
    monkeypatch.setattr(magic, "UPDATE_EVERY_S", 0.0)  # redraw on every part
    monkeypatch.setattr(ip, "display_pub", CapturingDisplayPublisher())
    answer = ask(ip, "%%mor gpt-oss-120b\nWhy is the <b>sky</b> blue?")
    assert answer.reasoning and answer
    first, *updates, _footer = ip.display_pub.outputs
    assert first["data"]["text/markdown"] == "*asking gpt-oss-120b…*"
    final = updates[-1]["data"]["text/markdown"]
    folded = f"<details><summary>Reasoning</summary>\n\n{html.escape(answer.reasoning)}"
    assert final.startswith(folded)  # folded, escaped, above the answer
    assert final.endswith(f"</details>\n\n{answer}")
    thinking = [u["data"]["text/markdown"] for u in updates[:-1]]
    assert any(t.startswith("<details open>") for t in thinking)  # unfolded while it thinks
    assert "&lt;b&gt;sky&lt;/b&gt;" in final  # the question's markup is shown, not rendered

    ask(ip, "%%mor gpt-oss-120b -f html\nWhy is the sky blue?")
    shown = ip.display_pub.outputs[-2]["data"]
    assert shown["text/html"].startswith("<details><summary>Reasoning</summary>")
    assert shown["text/html"].endswith(f"</details>{ip.user_ns['_mor']}")


def test_plain_text_shows_the_reasoning_as_a_paragraph():
    shown = bundle("The answer.", "text", final=True, reasoning="First, think.")
    assert shown == {"text/plain": "Reasoning:\nFirst, think.\n\nThe answer."}
    assert bundle("The answer.", "text", final=True) == {"text/plain": "The answer."}


# ----- the Chat widget -----


def test_chat_widget_streams_the_reasoning_apart_from_the_answer(wb):
    slowest = wb.bids(REASONER).sort_values("price_per_hour").iloc[0]["id"]  # 50 tok/s
    chat = Chat(wb, model=REASONER, bid=slowest, seed=31)
    try:
        chat.wait(30)
        seen = []
        chat.observe(lambda change: seen.append(change["new"][-1]), names="messages")
        chat.send("Why is the sky blue?")
        chat.wait(60)
        assert chat.error == ""
        whole = wb.complete(QUESTION, model=REASONER, seed=31).choices[0].message
        answer = chat.messages[-1]
        assert answer["content"] == whole.content
        assert answer["reasoning"] == whole.reasoning_content
        thinking = [m for m in seen if m.get("streaming") and m["reasoning"] and not m["content"]]
        assert thinking  # the thinking showed while it arrived, before any answer
        assert all(whole.reasoning_content.startswith(m["reasoning"]) for m in thinking)

        chat.send("And at sunset?")  # the thinking is not sent back with the history
        chat.wait(60)
        # answers are deterministic in the messages: the widget sent the answer alone
        history = [
            *QUESTION,
            {"role": "assistant", "content": whole.content},
            {"role": "user", "content": "And at sunset?"},
        ]
        sent = wb.complete(history, model=REASONER, seed=31).choices[0].message
        assert chat.messages[-1]["content"] == sent.content
    finally:
        chat.close()


def test_chat_widget_draws_the_reasoning_in_a_collapsible_block():
    source = Chat._esm
    assert 'h("details", { class: "mor-reasoning"' in source
    assert "m.reasoning" in source and ".mor-reasoning" in Chat._css


# ----- serve -----


async def test_serve_passes_the_reasoning_through(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    app = make_app(await mor.aconnect("sandbox", sandbox_dir=sandbox_dir), api_key="sk-test")
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        api = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
        whole = await api.chat.completions.create(model=REASONER, messages=QUESTION, seed=41)
        message = whole.choices[0].message
        assert message.reasoning_content and message.content
        assert whole.usage.completion_tokens_details.reasoning_tokens > 0

        stream = await api.chat.completions.create(
            model=REASONER, messages=QUESTION, seed=41, stream=True
        )
        reasoning, content = "", ""
        async for chunk in stream:
            for choice in chunk.choices:
                reasoning += getattr(choice.delta, "reasoning_content", None) or ""
                content += choice.delta.content or ""
        assert (reasoning, content) == (message.reasoning_content, message.content)
    finally:
        await runner.cleanup()


async def test_a_provider_that_fails_while_thinking_leaves_only_the_new_thinking():
    record = CallRecord(REASONER)

    async def payloads():
        yield {"choices": [{"delta": {"reasoning_content": "half a tho"}}]}
        record.failovers.append(("0xdead", "connection lost"))  # as run_call notes it
        yield {"choices": [{"delta": {"reasoning_content": "A whole thought."}}]}
        yield {"choices": [{"delta": {"content": "The answer."}}]}

    stream = AsyncChatStream(payloads(), record)
    parts = [p async for p in stream.events()]
    assert [p.text for p in parts] == ["half a tho", "A whole thought.", "The answer."]
    assert (stream.reasoning, stream.text) == ("A whole thought.", "The answer.")
