"""`mor-workbench serve`: the official openai client against the marketplace served locally."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import openai
import pytest
from aiohttp import web

import mor_workbench as mor
from mor_workbench.serve import make_app

KEY = "sk-local-serve-test-key"
CLI = [sys.executable, "-m", "mor_workbench.cli"]
MESSAGES = [{"role": "user", "content": "What is the Morpheus marketplace?"}]
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


@asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free port in this test's loop; yields its OpenAI base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def client(base_url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)


@pytest.fixture
async def workbench(sandbox_dir, tmp_path, monkeypatch) -> mor.AsyncWorkbench:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    return await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)


@pytest.fixture
async def api(workbench) -> AsyncIterator[openai.AsyncOpenAI]:
    async with running(make_app(workbench, api_key=KEY)) as base_url:
        yield client(base_url)


async def test_models_are_listed_by_name(api: openai.AsyncOpenAI, workbench) -> None:
    listed = [m async for m in api.models.list()]
    names = [m.id for m in listed]
    assert "llama-3.3-70b" in names and len(names) == len(set(names))
    assert set(names) == set((await workbench.models())["name"])
    assert all(m.object == "model" and m.owned_by == "morpheus" and m.created > 0 for m in listed)


async def test_complete_then_stream_the_same_answer(api: openai.AsyncOpenAI) -> None:
    whole = await api.chat.completions.create(model="llama-3.3-70b", messages=MESSAGES, seed=7)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    stream = await api.chat.completions.create(
        model="llama-3.3-70b",
        messages=MESSAGES,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 2 and all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage is not None and chunks[-1].usage == whole.usage


async def test_tool_calls_come_back(api: openai.AsyncOpenAI) -> None:
    weather = [{"role": "user", "content": "What's the weather in Lisbon?"}]
    called = await api.chat.completions.create(
        model="llama-3.3-70b", messages=weather, tools=[WEATHER], tool_choice="required"
    )
    assert called.choices[0].finish_reason == "tool_calls"
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in call.function.arguments


async def test_unknown_model_is_a_clear_404(api: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await api.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert "no active model 'no-such-model'" in caught.value.message
    assert "llama-3.3-70b" in caught.value.message  # it names the models there are


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
async def test_a_request_the_provider_refuses_is_a_400(
    api: openai.AsyncOpenAI, stream: bool
) -> None:
    # a stream's headers wait for the provider's accept, which waits for its model to take
    # the request: a refusal by the model still gets its HTTP status
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        await api.chat.completions.create(
            model="llama-3.3-70b", messages=MESSAGES, tool_choice="required", stream=stream
        )


async def test_a_streams_headers_come_once_the_model_took_the_request(workbench) -> None:
    """As from OpenAI: the status and headers come while the model works on its first token
    (the provider's accept on the fast channel), not with that token, so the client has
    read them by then; the body follows as the tokens come."""
    body = {"model": "llama-3.3-70b", "messages": MESSAGES, "stream": True, "max_tokens": 8}
    async with running(make_app(workbench)) as base_url, aiohttp.ClientSession() as http:
        for _ in range(2):  # a new session's first prompt, then a prompt on it
            async with http.post(f"{base_url}/chat/completions", json=body) as response:
                assert response.status == 200
                assert response.headers["x-morpheus-provider"].startswith("0x")
                # the sandbox's models take 30 ms or more to their first token: nothing of
                # the body has come with the headers (before, the first chunk did)
                assert response.content.total_bytes == 0
                events = [line async for line in response.content if line.startswith(b"data:")]
            assert events[-1] == b"data: [DONE]\n" and len(events) > 3


async def test_the_api_key_is_required_and_never_echoed(api: openai.AsyncOpenAI) -> None:
    wrong = client(str(api.base_url), key="sk-wrong-key-123456")
    for call in (
        wrong.models.list(),
        wrong.chat.completions.create(model="llama-3.3-70b", messages=MESSAGES),
    ):
        with pytest.raises(openai.AuthenticationError) as caught:
            await call
        assert KEY not in str(caught.value) and "sk-wrong-key-123456" not in str(caught.value)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.base_url}models") as response,  # no header at all
    ):
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"


async def test_bad_json_and_unknown_paths_answer_in_openai_shape(api: openai.AsyncOpenAI) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{api.base_url}chat/completions", data=b"{not json") as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]
        async with http.post(f"{api.base_url}chat/completions", json=["a list"]) as response:
            assert response.status == 400
        async with http.get(f"{api.base_url}nowhere") as response:
            assert response.status == 404 and "error" in await response.json()


async def test_shutdown_closes_the_sessions_it_opened(
    workbench, sandbox_dir, tmp_path, monkeypatch
) -> None:
    async with running(make_app(workbench)) as base_url:  # no key: any client may call
        answer = await client(base_url, key="anything").chat.completions.create(
            model="llama-3.3-70b", messages=MESSAGES
        )
        assert answer.choices[0].message.content
        session_id = workbench._sessions["llama-3.3-70b"].id
    assert workbench._closed
    # another journal, so connecting cannot settle what the server should have closed itself
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "checker"))
    async with await mor.aconnect("sandbox", sandbox_dir=sandbox_dir) as again:
        row = (await again.sessions()).set_index("id").loc[session_id]
        assert not row["is_active"]


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"strategy": {"max_price_per_second": 0}}, 503, "no provider accepted"),
        ({"timeout": 0.001, "deadline": 60, "max_failovers": 0}, 502, "no reply within"),
    ],
)
async def test_router_failures_map_to_http_statuses(
    sandbox_dir, tmp_path, monkeypatch, options: dict, status: int, message: str
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    workbench = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir, **options)
    # the live wire, where nothing comes before the first chunk: a stall before it is the
    # call's failure, however late the machine runs its timers (on the fast channel a stall
    # after the provider's accept comes after the headers, as an error event)
    workbench.router.fast_channel = False
    async with running(make_app(workbench)) as base_url:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                await client(base_url).chat.completions.create(
                    model="llama-3.3-70b", messages=MESSAGES, stream=stream
                )
            assert caught.value.status_code == status
            assert message in caught.value.body["message"]
    assert workbench._closed


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_cli_serves_until_stopped_then_closes_its_sessions(
    sandbox_dir, tmp_path, monkeypatch, stop: signal.Signals
) -> None:
    """Ctrl-C and SIGTERM (what systemd, docker and process managers send) both stop it
    cleanly: its sessions are closed on chain (SIGTERM used to leave them open)."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "checker"))
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as wb:
        sessions = wb.sessions()
        known, active_before = set(sessions["id"]), set(sessions.query("is_active")["id"])
    env = {**os.environ, "MOR_WORKBENCH_HOME": str(tmp_path / "cli"), "SERVE_TEST_KEY": KEY}
    command = [*CLI, "serve", "--dir", str(sandbox_dir), "--port", "0"]
    command += ["--api-key-env", "SERVE_TEST_KEY"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        expected = "serving the Morpheus marketplace at http://127.0.0.1:"
        assert line.startswith(expected), line or proc.stderr.read().decode()
        base_url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert not base_url.endswith(":0/v1")
        api = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        answer = api.chat.completions.create(model="llama-3.3-70b", messages=MESSAGES)
        assert answer.choices[0].message.content
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
        output = line + proc.stdout.read().decode() + proc.stderr.read().decode()
        assert KEY not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as wb:  # the server closed its session
        sessions = wb.sessions()
        opened = set(sessions["id"]) - known
        assert opened and not sessions.set_index("id").loc[list(opened), "is_active"].any()
        assert set(sessions.query("is_active")["id"]) <= active_before


def test_cli_names_a_missing_key_variable(sandbox_dir) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SERVE_TEST_UNSET"}
    done = subprocess.run(
        [*CLI, "serve", "--dir", str(sandbox_dir), "--api-key-env", "SERVE_TEST_UNSET"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "$SERVE_TEST_UNSET" in done.stderr


async def test_a_request_too_large_for_any_provider_is_a_413_and_opens_nothing(
    api: openai.AsyncOpenAI, workbench
) -> None:
    before = len(await workbench.sessions())
    huge = "word " * (300 * 1024)  # over the 1 MiB a provider reads
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            await api.chat.completions.create(
                model="llama-3.3-70b", messages=[{"role": "user", "content": huge}], stream=stream
            )
        assert caught.value.status_code == 413
        assert caught.value.code == "request_too_large"
    assert len(await workbench.sessions()) == before  # no session opened, no failover
