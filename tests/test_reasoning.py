"""Reasoning models end to end (issue 12 §4): the sandbox's reasoning model thinks aloud in
`reasoning_content`, and every surface carries it apart from the answer — the model server
(checked with the openai SDK), `complete()`, `stream()`, ChatMorpheus, `%%mor`, the Chat widget
and `serve`, all on the sandbox's real chain and provider routers."""

from __future__ import annotations

import openai
import pytest

from mor_workbench.sandbox.model_server import ModelServer

REASONER = "deepseek-r1"  # tagged "reasoning" in the sandbox market
PLAIN = "llama-3.2"
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
        model=REASONER, messages=QUESTION, max_tokens=5
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 5 and cut.choices[0].message.content == ""
    assert len(cut.choices[0].message.reasoning_content.split()) <= 5


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
