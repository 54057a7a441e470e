"""The simulated model server, driven by the real openai SDK (and raw httpx) as any backend is."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import jsonschema
import openai
import pytest

from mor_workbench.sandbox.model_server import (
    PROFILES,
    LatencyProfile,
    ModelServer,
    count_tokens,
    schema_value,
    split_tokens,
)

MODEL = "llama-3.2"
KEY = "sk-test-key"
MESSAGES = [{"role": "user", "content": "Say something about markets."}]
PINNED = (  # seed 7: the text must not drift between versions, platforms or Pythons
    "Each signed river routes that stream, because each fair lantern gladly checks each steady "
    "river across each quiet library."
)


@pytest.fixture
async def server() -> ModelServer:
    async with ModelServer([MODEL, "qwen-2.5-coder"], profile="instant", api_key=KEY) as s:
        yield s


@pytest.fixture
def client(server: ModelServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


@contextlib.contextmanager
def in_thread(*servers: ModelServer) -> Iterator[None]:
    """Serve from a background event loop, for the sync client."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for s in servers:
            asyncio.run_coroutine_threadsafe(s.start(), loop).result(5)
        yield
    finally:
        for s in servers:
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def collect(stream: openai.AsyncStream) -> dict:
    """Everything a stream said: role, text, tool call pieces, finish_reason, usage, chunks."""
    out: dict = {"text": "", "chunks": [], "content_chunks": 0, "usage": None, "finish": None}
    async for chunk in stream:
        out["chunks"].append(chunk)
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                out["text"] += choice.delta.content
                out["content_chunks"] += 1
            out["finish"] = choice.finish_reason or out["finish"]
    return out


# ----- models --------------------------------------------------------------------------------


async def test_models_are_listed_and_retrieved(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL, "qwen-2.5-coder"]
    assert all(m.object == "model" for m in models.data)
    assert (await client.models.retrieve("qwen-2.5-coder")).id == "qwen-2.5-coder"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-9")


# ----- text: deterministic, streamed or not ------------------------------------------------


async def test_streamed_text_joins_to_the_complete_answer_with_the_same_usage(
    client: openai.AsyncOpenAI,
) -> None:
    full = await client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=7)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    assert full.model == MODEL and full.choices[0].finish_reason == "stop"
    assert full.choices[0].message.role == "assistant"
    text = full.choices[0].message.content
    assert text.startswith(PINNED)
    assert full.usage.completion_tokens == count_tokens(text)
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    streamed = await collect(
        await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = streamed["chunks"]
    assert streamed["text"] == text and streamed["finish"] == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage  # as OpenAI ends it
    assert all(c.usage is None for c in chunks[:-1])
    assert streamed["content_chunks"] == full.usage.completion_tokens  # one token a chunk
    assert len({c.id for c in chunks}) == 1


async def test_same_seed_same_text_other_seeds_other_texts(client: openai.AsyncOpenAI) -> None:
    async def text(seed: int | None, model: str = MODEL, messages: list = MESSAGES) -> str:
        reply = await client.chat.completions.create(model=model, messages=messages, seed=seed)
        return reply.choices[0].message.content

    assert await text(7) == await text(7)
    assert await text(None) == await text(None)
    others = {await text(7, model="qwen-2.5-coder"), await text(8), await text(None)}
    others.add(await text(7, messages=[{"role": "user", "content": "Something else."}]))
    assert len(others) == 4 and await text(7) not in others
    async with ModelServer([MODEL], profile="fast", seed=99) as another:
        again = openai.AsyncOpenAI(base_url=another.base_url, api_key="x", max_retries=0)
        reply = await again.chat.completions.create(
            model=MODEL, messages=MESSAGES, seed=7, temperature=1.5, top_p=0.5
        )
    assert reply.choices[0].message.content == await text(7)  # servers and profiles agree


def test_sync_client_streams_and_completes() -> None:
    server = ModelServer([MODEL], profile="fast")
    with in_thread(server):
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        full = client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=7)
        usage, pieces = None, []
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        ):
            usage = chunk.usage or usage
            pieces += [c.delta.content or "" for c in chunk.choices]
    assert "".join(pieces) == full.choices[0].message.content
    assert usage == full.usage


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_finish_reason_length(
    client: openai.AsyncOpenAI, param: str
) -> None:
    full = (await client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=7)).choices[0]
    short = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, seed=7, **{param: 5}
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    assert short.choices[0].message.content == "".join(split_tokens(full.message.content)[:5])
    streamed = await collect(
        await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, seed=7, stream=True, **{param: 5}
        )
    )
    assert streamed["text"] == short.choices[0].message.content
    assert streamed["finish"] == "length" and streamed["content_chunks"] == 5
    roomy = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, seed=7, **{param: 10_000}
    )
    assert roomy.choices[0].finish_reason == "stop"


async def test_stop_sequences_cut_before_the_earliest_match(client: openai.AsyncOpenAI) -> None:
    text = (
        (await client.chat.completions.create(model=MODEL, messages=MESSAGES, seed=7))
        .choices[0]
        .message.content
    )
    assert " lantern" in text and " library" in text
    for stop in (" lantern", ["never there", " library", " lantern"]):
        reply = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, seed=7, stop=stop
        )
        assert reply.choices[0].message.content == text[: text.index(" lantern")]
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens == count_tokens(reply.choices[0].message.content)
        streamed = await collect(
            await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, seed=7, stop=stop, stream=True
            )
        )
        assert streamed["text"] == reply.choices[0].message.content


# ----- tools and structured output ----------------------------------------------------------

PRICE = {
    "type": "function",
    "function": {
        "name": "get_price",
        "description": "Price of a model on the market",
        "parameters": {
            "type": "object",
            "properties": {
                "model": {"type": "string", "minLength": 3, "maxLength": 40},
                "unit": {"enum": ["second", "hour"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 5},
                "max_price": {"type": "number", "exclusiveMinimum": 0, "maximum": 2.5},
                "verified": {"type": "boolean"},
                "since": {"type": "string", "format": "date-time"},
                "tags": {
                    "type": "array",
                    "items": {"enum": ["llm", "code", "chat"]},
                    "minItems": 2,
                    "uniqueItems": True,
                },
                "where": {
                    "type": "object",
                    "properties": {"region": {"type": "string"}, "ids": {"type": "array"}},
                    "required": ["region"],
                    "additionalProperties": False,
                },
            },
            "required": ["model", "unit", "where"],
            "additionalProperties": False,
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_tool_calls_satisfy_the_schema_streamed_or_not(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[PRICE, WEATHER], seed=1
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_price"  # the first tool when none is named
    jsonschema.validate(json.loads(call.function.arguments), PRICE["function"]["parameters"])
    assert reply.usage.completion_tokens == count_tokens(call.function.arguments)

    streamed = await collect(
        await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=[PRICE, WEATHER],
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.tool_calls for c in streamed["chunks"] if c.choices]
    deltas = [d[0] for d in deltas if d]
    assert deltas[0].index == 0 and deltas[0].id == call.id  # id and name first
    assert deltas[0].function.name == "get_price" and deltas[0].function.arguments == ""
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:])
    assert len(deltas) - 1 == reply.usage.completion_tokens  # arguments in token fragments
    assert "".join(d.function.arguments for d in deltas) == call.function.arguments
    assert streamed["finish"] == "tool_calls" and streamed["usage"] == reply.usage


async def test_arguments_take_the_literals_the_prompt_gives(client: openai.AsyncOpenAI) -> None:
    asked = [
        {"role": "user", "content": "Earlier: 'nothing'. Ignore it."},
        {"role": "assistant", "content": "OK."},
        {
            "role": "user",
            "content": "Price of 'llama-3.2' per hour, at most 9 results (say 3), "
            "under 1.5 MOR, in '東京'.",
        },
    ]
    reply = await client.chat.completions.create(model=MODEL, messages=asked, tools=[PRICE])
    args = json.loads(reply.choices[0].message.tool_calls[0].function.arguments)
    jsonschema.validate(args, PRICE["function"]["parameters"])
    # the first quoted string, the enum member named, the first number in bounds (9 is not)
    assert (args["model"], args["unit"], args["limit"], args["max_price"]) == (
        "llama-3.2",
        "hour",
        3,
        1.5,
    )
    reply = await client.chat.completions.create(
        model=MODEL, messages=asked, tools=[WEATHER], tool_choice="required"
    )
    arguments = reply.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"city": "llama-3.2"} and "東京" not in arguments
    keyed = [{"role": "user", "content": "Answer as JSON with 'setup' and 'punchline' keys."}]
    loose = await client.chat.completions.create(
        model=MODEL, messages=keyed, response_format={"type": "json_object"}
    )
    assert set(json.loads(loose.choices[0].message.content)) == {"setup", "punchline"}


async def test_tool_choice_names_a_function_or_none(client: openai.AsyncOpenAI) -> None:
    named = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=[PRICE, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    plain = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[PRICE], tool_choice="none"
    )
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.content
    assert plain.choices[0].message.tool_calls is None
    cut = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[PRICE], max_tokens=3
    )
    assert cut.choices[0].finish_reason == "length"
    assert count_tokens(cut.choices[0].message.tool_calls[0].function.arguments) == 3


async def test_a_tool_result_is_answered_in_text_that_quotes_it(
    client: openai.AsyncOpenAI,
) -> None:
    first = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER, PRICE]
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *MESSAGES,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'},
    ]
    answer = await client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, PRICE]
    )
    text = answer.choices[0].message.content
    assert text.startswith('The get_weather tool returned {"temperature_c": 21}.')
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens


async def test_response_formats_give_json_that_satisfies_the_schema(
    client: openai.AsyncOpenAI,
) -> None:
    loose = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1},
        },
        "required": ["title", "score", "items"],
        "additionalProperties": False,
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["name", "qty"],
                "additionalProperties": False,
            }
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=fmt
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    streamed = await collect(
        await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, response_format=fmt, stream=True
        )
    )
    assert streamed["text"] == reply.choices[0].message.content


SCHEMAS = [
    {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
    {"type": "integer", "minimum": -20, "maximum": -10, "multipleOf": 3},
    {"type": "number", "minimum": 0.05, "maximum": 0.95, "multipleOf": 0.1},
    {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "minimum": 1,
        "exclusiveMinimum": True,
        "maximum": 1.5,
    },
    {"type": ["null", "string"], "minLength": 30, "maxLength": 32},
    {"type": "string", "format": "uuid"},
    {"type": "string", "format": "email"},
    {"type": "string", "pattern": "^[0-9]+$"},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}], "minItems": 2},
    {"anyOf": [{"type": "null"}, {"type": "object", "required": ["a"]}]},
    {"oneOf": [{"type": "integer", "minimum": 10}, {"type": "string", "maxLength": 1}]},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"enum": [1, 2]}}, "required": ["b"]},
        ]
    },
    {
        "$ref": "#/definitions/node",
        "definitions": {
            "node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/definitions/node"}}
                },
                "required": ["children"],
            }
        },
    },
    {"type": "object", "minProperties": 3, "additionalProperties": {"type": "integer"}},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[json.dumps(s)[:40] for s in SCHEMAS])
def test_schema_values_validate(schema: dict) -> None:
    for seed in range(5):
        value = schema_value(schema, seed)
        jsonschema.validate(value, schema)
        assert schema_value(schema, seed) == value


# ----- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0]"),
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": "seven"}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tool_choice": "auto"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            None,
        ),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
async def test_bad_requests_are_400_in_openai_shape(
    client: openai.AsyncOpenAI, changes: dict, param: str | None
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, **changes}
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**body)
    error = raised.value
    assert error.status_code == 400 and error.type == "invalid_request_error"
    assert error.param == (param or "tool_choice") and error.message


async def test_malformed_unknown_and_unauthorized(server: ModelServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert raised.value.code == "model_not_found"
    wrong = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        await wrong.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert raised.value.code == "invalid_api_key" and "sk-wrong" not in raised.value.message
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        missing = await http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES})
        garbage = await http.post("/chat/completions", content=b"{not json", headers=headers)
        nowhere = await http.get("/completions/legacy", headers=headers)
        wrong_verb = await http.get("/chat/completions", headers=headers)
    assert missing.status_code == 401 and "didn't provide an API key" in missing.text
    for reply, status in ((garbage, 400), (nowhere, 404), (wrong_verb, 405)):
        assert reply.status_code == status
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


async def test_raw_sse_is_what_openai_sends(server: ModelServer) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "seed": 7, "stream": True, "max_tokens": 4}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        reply = await http.post(server.base_url + "/chat/completions", json=body)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [e for e in reply.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Each"},
        {"content": " signed"},
        {"content": " river"},
        {"content": " routes"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)


# ----- latency profiles ----------------------------------------------------------------------


def test_profiles_are_checked() -> None:
    assert {"fast", "balanced", "slow", "flaky"} <= set(PROFILES)
    assert PROFILES["slow"].ttft_s > PROFILES["balanced"].ttft_s > PROFILES["fast"].ttft_s
    with pytest.raises(ValueError):
        LatencyProfile(error_rate=1.5)
    with pytest.raises(ValueError):
        LatencyProfile(tokens_per_second=0)
    with pytest.raises(ValueError):
        ModelServer(profile="warp-speed")


def test_error_rate_one_is_an_internal_server_error_sync_client() -> None:
    server = ModelServer([MODEL], profile=LatencyProfile(error_rate=1.0))
    with in_thread(server):
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert raised.value.type == "server_error"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)


async def test_a_dropped_connection_makes_the_sdk_raise() -> None:
    profile = LatencyProfile(ttft_s=0.0, tokens_per_second=2000, disconnect_rate=1.0)
    async with ModelServer([MODEL], profile=profile) as dropping:
        client = openai.AsyncOpenAI(base_url=dropping.base_url, api_key="x", max_retries=0)
        received = []
        with pytest.raises(openai.APIConnectionError):
            async for chunk in await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            ):
                received.append(chunk)
        assert received  # dropped mid-stream, not before it
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)


async def test_a_stall_pauses_mid_stream() -> None:
    profile = LatencyProfile(ttft_s=0.0, tokens_per_second=1000, stall_rate=1.0, stall_s=0.3)
    async with ModelServer([MODEL], profile=profile) as stalling:
        client = openai.AsyncOpenAI(base_url=stalling.base_url, api_key="x", max_retries=0)
        arrivals = []
        async for chunk in await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) >= 0.25 and gaps.index(max(gaps)) > 0


async def test_fates_are_reproducible_by_seed() -> None:
    async def outcomes(seed: int) -> list[str]:
        profile = LatencyProfile(ttft_s=0.0, tokens_per_second=1e6, error_rate=0.5)
        async with ModelServer([MODEL], profile=profile, seed=seed) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key="x", max_retries=0)
            results = []
            for _ in range(12):
                try:
                    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                    results.append("ok")
                except openai.InternalServerError:
                    results.append("500")
            assert s.request_count == 12
            return results

    first = await outcomes(1)
    assert first == await outcomes(1) and {"ok", "500"} == set(first)
    assert first != await outcomes(2)


async def test_a_slow_profile_is_slower_than_a_fast_one_side_by_side() -> None:
    async with (
        ModelServer([MODEL], profile="fast") as fast,
        ModelServer([MODEL], profile="slow") as slow,
    ):

        async def ttft(server: ModelServer) -> float:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            started = time.perf_counter()
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    await stream.close()
                    return time.perf_counter() - started
            raise AssertionError("no content")

        async def whole(server: ModelServer) -> float:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            started = time.perf_counter()
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
            return time.perf_counter() - started

        fast_ttft, slow_ttft, fast_whole, slow_whole = await asyncio.gather(
            ttft(fast), ttft(slow), whole(fast), whole(slow)
        )
    assert slow_ttft > fast_ttft and slow_whole > fast_whole


async def test_two_hundred_concurrent_streams() -> None:
    async with ModelServer([MODEL], profile="fast") as server:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as http:

            async def one(i: int) -> int:
                body = {"model": MODEL, "messages": [{"role": "user", "content": str(i)}]}
                events, last = 0, ""
                async with http.stream(
                    "POST", "/chat/completions", json={**body, "stream": True}
                ) as reply:
                    async for line in reply.aiter_lines():
                        if line:
                            events, last = events + 1, line
                assert last == "data: [DONE]"
                return events

            started = time.perf_counter()
            events = await asyncio.gather(*(one(i) for i in range(200)))
            elapsed = time.perf_counter() - started
    assert min(events) > 10 and elapsed < 15


async def test_stop_does_not_wait_for_a_stalled_stream() -> None:
    profile = LatencyProfile(ttft_s=0.0, tokens_per_second=1000, stall_rate=1.0, stall_s=60)
    server = await ModelServer([MODEL], profile=profile).start()
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    await stream.__anext__()
    started = time.perf_counter()
    await server.stop()
    assert time.perf_counter() - started < 5
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass


# ----- command line --------------------------------------------------------------------------


def test_cli_prints_the_base_url_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "mor_workbench.sandbox.model_server", "--model", MODEL]
    command += ["--model", "mistral-small", "--profile", "fast", "--port", "0", "--api-key", KEY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == [MODEL, "mistral-small"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
