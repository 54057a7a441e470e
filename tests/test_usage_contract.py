"""What a hop adds for its own accounting never reaches the client: the provider asks its
backend for usage to sign its receipts, and a client that did not ask for usage still gets
none (no `usage` member, no usage-only chunk with empty `choices`); one that asked gets exactly
one usage chunk. Driven with the official openai client through `mor-workbench serve` (and the
raw payloads of the workbench) against the sandbox's real providers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import openai
import pytest
from aiohttp.test_utils import TestServer

import mor_workbench as mor
from mor_workbench.chain import listings
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import Router
from mor_workbench.sandbox.model_server import ModelServer
from mor_workbench.serve import make_app

MODEL = "llama-3.3-70b"
MESSAGES = [{"role": "user", "content": "What is the Morpheus marketplace?"}]


@pytest.fixture
async def workbench(sandbox_dir, tmp_path, monkeypatch) -> AsyncIterator[mor.AsyncWorkbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    workbench = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    await workbench.close()


@pytest.fixture
async def api(workbench: mor.AsyncWorkbench) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official openai client against `mor-workbench serve`'s app on a free port."""
    async with TestServer(make_app(workbench), host="127.0.0.1") as server:
        yield openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)


async def test_a_stream_without_usage_asked_has_no_usage_and_a_choice_in_every_chunk(
    api: openai.AsyncOpenAI,
) -> None:
    stream = await api.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=20
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)  # the plain loop
    assert text
    assert not [c for c in chunks if "usage" in c.model_fields_set]


async def test_a_stream_with_usage_asked_has_exactly_one_usage_chunk(
    api: openai.AsyncOpenAI,
) -> None:
    stream = await api.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        max_tokens=20,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    counted = [c for c in chunks if c.usage is not None]
    assert len(counted) == 1 and counted[0] is chunks[-1] and counted[0].choices == []
    assert counted[0].usage.completion_tokens > 0
    assert all(c.choices for c in chunks[:-1])


async def test_raw_payloads_carry_only_what_the_request_asked_for(
    workbench: mor.AsyncWorkbench,
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 20}
    payloads = [p async for p in workbench.payloads(body)]
    assert payloads and all(p["choices"] and "usage" not in p for p in payloads)
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert len({p["id"] for p in payloads}) == 1  # one completion, ids as the backend set them


async def test_a_text_stream_still_has_the_providers_token_counts(
    workbench: mor.AsyncWorkbench,
) -> None:
    """wb.stream hands out only text, so it asks for usage for its footer."""
    stream = workbench.stream("Count the rivers", model=MODEL, max_tokens=6)
    assert "".join([delta async for delta in stream])
    assert stream.usage["prompt_tokens"] > 0 and stream.usage["completion_tokens"] == 6


async def test_the_providers_own_model_name_never_reaches_the_consumer(
    sandbox_info, tmp_path
) -> None:
    """A provider whose backend knows the model by a file path (as llama.cpp reports it)
    answers with the marketplace's name the consumer asked for, streamed or not."""
    backend_name = "/srv/models/llama-3.2-3b-q4_k_m.gguf"
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = sandbox_info.signer("provider:balanced")
    model_id, _ = await listings.resolve_model(chain, MODEL)
    router = Router(chain, sandbox_info.signer("consumer"), SessionJournal(tmp_path / "journal"))
    async with ModelServer([backend_name], profile="fast") as backend:
        config = ModelConfig(model_id, backend_name, backend.base_url + "/chat/completions")
        async with ProviderServer(
            signer=provider, chain=chain, models=[config], claim_interval=None
        ) as server:
            (bid,) = [b for b in await router.rank(MODEL) if b.provider == provider.address]
            # the router's own opening, at this server rather than the endpoint on chain
            session = await router.open_on(dataclasses.replace(bid, endpoint=server.endpoint), 600)
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}
            streamed = [p async for p in router.stream(session, {**body, "stream": True})]
            (whole,) = [p async for p in router.stream(session, body)]
            assert await router.close(session)
    await chain.rpc.aclose()
    assert {p["model"] for p in streamed} == {MODEL} and whole["model"] == MODEL
