"""`serve` is observable: one log line per request, the Morpheus details of each call in
`x-morpheus-*` headers and in a `morpheus` object the openai client keeps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import openai
import pytest
from test_serve import KEY, MESSAGES, client, running

import mor_workbench as mor
from mor_workbench.market.tables import short
from mor_workbench.serve import make_app

LOGGER = "mor_workbench.serve"


@pytest.fixture
async def workbench(sandbox_dir, tmp_path, monkeypatch) -> mor.AsyncWorkbench:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    return await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)


@pytest.fixture
async def api(workbench) -> AsyncIterator[openai.AsyncOpenAI]:
    async with running(make_app(workbench, api_key=KEY)) as base_url:
        yield client(base_url)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


async def test_a_completion_carries_its_details_in_headers_and_body(
    api: openai.AsyncOpenAI, workbench, caplog
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    raw = await api.chat.completions.with_raw_response.create(
        model="llama-3.3-70b", messages=MESSAGES, max_tokens=20
    )
    completion = raw.parse()
    details = completion.morpheus  # the extra field the openai client keeps
    session = workbench._sessions["llama-3.3-70b"]
    assert details["provider"] == session.provider and details["session_id"] == session.id
    assert details["bid_id"] == session.info()["bid_id"]
    assert details["cost_mor"] > 0 and details["streamed"] is False
    assert details["completion_tokens"] == completion.usage.completion_tokens
    headers = raw.headers
    assert headers["x-morpheus-provider"] == session.provider
    assert headers["x-morpheus-session-id"] == session.id
    assert headers["x-morpheus-bid-id"] == details["bid_id"]
    assert float(headers["x-morpheus-cost-mor"]) == details["cost_mor"]
    assert headers["x-morpheus-failovers"] == "0"

    (line,) = lines(caplog)  # one line per request
    usage = completion.usage
    assert line.startswith("completion llama-3.3-70b: ")
    assert f"provider {short(session.provider)}" in line and f"session {short(session.id)}" in line
    assert f"{usage.prompt_tokens} + {usage.completion_tokens} tokens" in line
    assert f"{details['cost_mor']:.8f} MOR" in line and line.endswith(" s: ok")


async def test_a_stream_names_its_provider_in_headers_and_ends_with_the_details(
    api: openai.AsyncOpenAI, workbench, caplog
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for include_usage in (True, False):
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        raw = await api.chat.completions.with_raw_response.create(
            model="llama-3.3-70b", messages=MESSAGES, max_tokens=20, stream=True, **options
        )
        session = workbench._sessions["llama-3.3-70b"]
        assert raw.headers["x-morpheus-provider"] == session.provider
        assert raw.headers["x-morpheus-session-id"] == session.id
        assert "x-morpheus-cost-mor" not in raw.headers  # not known when headers go out
        chunks = [chunk async for chunk in raw.parse()]
        *before, last = chunks
        assert all(not (c.model_extra or {}).get("morpheus") for c in before)
        details = last.morpheus
        assert details["session_id"] == session.id and details["streamed"] is True
        assert details["cost_mor"] > 0 and details["ttft_s"] > 0
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text  # holding the last chunk back lost nothing
        if include_usage:
            assert last.usage is not None and last.usage.completion_tokens > 0
    logged = lines(caplog)
    assert len(logged) == 2 and all(line.startswith("stream llama-3.3-70b: ") for line in logged)
    assert all(line.endswith(": ok") for line in logged)


async def test_a_failed_request_is_logged_once_with_why(api: openai.AsyncOpenAI, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with pytest.raises(openai.NotFoundError):
        await api.chat.completions.create(model="no-such-model", messages=MESSAGES)
    (line,) = lines(caplog)
    assert line.startswith("completion no-such-model: provider -, session -")
    assert ": failed (" in line and "no active model 'no-such-model'" in line
