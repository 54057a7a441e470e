"""The simulated model server, driven by the real openai SDK as any backend would be."""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pytest

from mor_workbench.sandbox.model_server import LatencyProfile, ModelServer

MESSAGES = [{"role": "user", "content": "Say something about markets."}]


@pytest.fixture
async def server():
    async with ModelServer(["llama-3.2"], profile="instant", api_key="sk-test") as s:
        yield s


@pytest.fixture
def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


async def test_models_list(client) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["llama-3.2"]


async def test_streamed_text_equals_the_complete_answer(client) -> None:
    full = await client.chat.completions.create(model="llama-3.2", messages=MESSAGES, seed=7)
    stream = await client.chat.completions.create(
        model="llama-3.2",
        messages=MESSAGES,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == "stop" == full.choices[0].finish_reason
    assert usage == full.usage and usage.completion_tokens > 0
    again = await client.chat.completions.create(model="llama-3.2", messages=MESSAGES, seed=7)
    assert again.choices[0].message.content == full.choices[0].message.content


async def test_max_tokens_and_stop(client) -> None:
    short = await client.chat.completions.create(model="llama-3.2", messages=MESSAGES, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    text = (
        (await client.chat.completions.create(model="llama-3.2", messages=MESSAGES))
        .choices[0]
        .message.content
    )
    word = text.split()[2]
    stopped = await client.chat.completions.create(
        model="llama-3.2", messages=MESSAGES, stop=[word]
    )
    assert word not in stopped.choices[0].message.content


TOOL = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "Price of a model",
        "parameters": {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "unit": {"enum": ["second", "hour"]},
                "limit": {"type": "integer", "minimum": 1},
            },
            "required": ["model", "unit"],
        },
    },
}


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_satisfy_the_schema(client, stream: bool) -> None:
    if stream:
        name, args = "", ""
        async for chunk in await client.chat.completions.create(
            model="llama-3.2", messages=MESSAGES, tools=[TOOL], stream=True
        ):
            for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                name += call.function.name or ""
                args += call.function.arguments or ""
    else:
        reply = await client.chat.completions.create(
            model="llama-3.2", messages=MESSAGES, tools=[TOOL]
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        call = reply.choices[0].message.tool_calls[0]
        name, args = call.function.name, call.function.arguments
    assert name == "get_price"
    jsonschema.validate(json.loads(args), TOOL["function"]["parameters"])


async def test_json_schema_response_format(client) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}},
        "required": ["title", "score"],
    }
    reply = await client.chat.completions.create(
        model="llama-3.2",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


async def test_errors_map_to_the_sdk_exceptions(server) -> None:
    good = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await good.chat.completions.create(model="gpt-9", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        await good.chat.completions.create(model="llama-3.2", messages=[])
    bad = openai.AsyncOpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()


async def test_failing_and_dropping_profiles() -> None:
    async with ModelServer(profile=LatencyProfile(error_rate=1.0)) as failing:
        client = openai.AsyncOpenAI(base_url=failing.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="llama-3.2", messages=MESSAGES)
    async with ModelServer(profile=LatencyProfile(ttft_s=0, disconnect_rate=1.0)) as dropping:
        client = openai.AsyncOpenAI(base_url=dropping.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            async for _ in await client.chat.completions.create(
                model="llama-3.2", messages=MESSAGES, stream=True
            ):
                pass


def test_a_slow_profile_is_slower_than_a_fast_one_sync_client() -> None:
    import asyncio
    import threading

    servers: dict[str, ModelServer] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def run() -> None:
        servers["fast"] = await ModelServer(profile="fast").start()
        servers["slow"] = await ModelServer(profile="slow").start()
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(run()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(5)
    ttft = {}
    for name, server in servers.items():
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        started = time.perf_counter()
        for chunk in client.chat.completions.create(
            model="llama-3.2", messages=MESSAGES, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                ttft[name] = time.perf_counter() - started
                break
    assert ttft["slow"] > ttft["fast"]
    for server in servers.values():
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
