"""Embeddings end to end (issue 15): the simulated backend, the provider, the consumer's
`wb.embed` / `wb.embeddings`, `serve`, gateway mode and `compare`, on real parts: the
sandbox's chain and provider routers on sockets, and the official openai client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import extra_provider
import httpx
import numpy as np
import openai
import pytest
from aiohttp import web
from eth_account import Account
from openai.types import CreateEmbeddingResponse

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench._portal import portal
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import resolve_model
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market.compare import EMBEDDING_COMPARE_COLUMNS
from mor_workbench.protocol import PEER_REQUEST_LIMIT, decode_receipt
from mor_workbench.provider.config import ModelConfig, parse_models_config
from mor_workbench.provider.health import probe_backend
from mor_workbench.router.calls import EMBED_BATCH_INPUTS, embedding_batches, embeddings_request
from mor_workbench.router.peer import prompt, prompt_size, report
from mor_workbench.sandbox.model_server import (
    LatencyProfile,
    ModelServer,
    count_tokens,
    embedding_vector,
)
from mor_workbench.serve import make_app

EMBEDDING = "text-embedding-bge-m3"
CHAT = "llama-3.3-70b"

DOCS = [
    "The river carries boats past the harbor at dawn.",
    "Boats sail along the river toward the harbor in the morning.",
    "Quarterly tax returns are due before the end of April.",
]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----- the simulated backend -----


async def test_model_server_embeds_in_openai_shape_float_and_base64() -> None:
    async with ModelServer([EMBEDDING, CHAT], profile="instant") as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")
        floats = await client.embeddings.create(
            model=EMBEDDING, input=DOCS, encoding_format="float"
        )
        # the client's default: base64 on the wire, decoded by the client
        decoded = await client.embeddings.create(model=EMBEDDING, input=DOCS)
        await client.close()
    assert [d.index for d in floats.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert vectors.shape == (3, 1024)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, np.array([d.embedding for d in decoded.data]), atol=1e-7)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 3 * 8
    assert floats.model == EMBEDDING


async def test_similar_texts_are_closer_than_unrelated_ones_and_deterministic() -> None:
    async with (
        ModelServer([EMBEDDING], profile="instant") as one,
        ModelServer([EMBEDDING], profile="fast", seed=7) as other,
    ):
        clients = [openai.AsyncOpenAI(base_url=s.base_url, api_key="x") for s in (one, other)]
        replies = [
            await c.embeddings.create(model=EMBEDDING, input=DOCS, encoding_format="float")
            for c in clients
        ]
        for client in clients:
            await client.close()
    first, second = (np.array([d.embedding for d in r.data]) for r in replies)
    assert np.array_equal(first, second)  # the same text, the same vector, on any server
    river, boats, taxes = first
    assert _cosine(river, boats) > _cosine(river, taxes) + 0.2


async def test_model_server_refuses_the_wrong_endpoint_and_bad_input() -> None:
    async with ModelServer([EMBEDDING, CHAT], profile="instant") as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")
        with pytest.raises(openai.BadRequestError, match="chat model"):
            await client.embeddings.create(model=CHAT, input="hi")
        with pytest.raises(openai.BadRequestError, match="embedding model"):
            await client.chat.completions.create(
                model=EMBEDDING, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError, match="input"):
            await client.embeddings.create(model=EMBEDDING, input=[""])
        await client.close()


# ----- through the marketplace: real provider routers on the shared sandbox -----


def _nonce(wb: mor.Workbench) -> int:
    return extra_provider.transaction_count(wb.aio.chain.rpc.urls, wb.address)


def test_embed_returns_float32_rows_that_rank_similar_texts_first(wb) -> None:
    vectors = wb.embed(DOCS, model=EMBEDDING)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 1024)
    river, boats, taxes = vectors
    assert _cosine(river, boats) > _cosine(river, taxes) + 0.2
    # the vectors are the backend's, unchanged by the wire (base64 there, float32 here)
    assert np.allclose(vectors[0], embedding_vector(DOCS[0]), atol=1e-7)
    one = wb.embed(DOCS[2], model=EMBEDDING)
    assert one.shape == (1, 1024) and np.allclose(one[0], taxes)


def test_embeddings_returns_openai_response_with_usage_and_call_info(wb) -> None:
    response = wb.embeddings(input=DOCS[:2], model=EMBEDDING, encoding_format="base64")
    assert isinstance(response, CreateEmbeddingResponse)
    assert [d.index for d in response.data] == [0, 1]
    assert all(len(d.embedding) == 1024 for d in response.data)  # decoded to floats
    assert response.usage.prompt_tokens == count_tokens(DOCS[0]) + count_tokens(DOCS[1])
    assert response.model == EMBEDDING
    assert response.morpheus["provider"].startswith("0x")
    assert response.morpheus["session_id"].startswith("0x")


def test_embed_batches_under_the_message_limit_and_the_input_cap(wb) -> None:
    # 60 texts of ~20 KB: ~2.4 MB as sent, so requests cut by size before the 64-text cap
    # (few, long words: the simulated backend's time grows with tokens, not bytes)
    texts = [f"document {i} " + "harbor" * 3300 for i in range(60)]
    body = {"model": EMBEDDING, "encoding_format": "base64"}
    batches = embedding_batches(texts, body)
    assert len(batches) >= 3 and [t for b in batches for t in b] == texts
    assert len(batches[0]) < EMBED_BATCH_INPUTS
    for batch in batches:
        assert prompt_size(embeddings_request({**body, "input": batch})) <= PEER_REQUEST_LIMIT
    assert all(len(b) <= 10 for b in embedding_batches(texts[:50], body, max_inputs=10))
    vectors = wb.embed(texts, model=EMBEDDING)
    assert vectors.shape == (60, 1024)
    assert np.allclose(vectors[59], embedding_vector(texts[59]), atol=1e-7)


def test_one_text_over_the_limit_is_refused_before_any_transaction(wb) -> None:
    before = _nonce(wb)
    with pytest.raises(mor.RequestTooLarge):
        wb.embed(["short", "x" * (600 * 1024)], model=EMBEDDING)
    assert _nonce(wb) == before


def test_embed_on_a_chat_model_is_refused_before_any_transaction(wb) -> None:
    before, sessions_before = _nonce(wb), len(wb.sessions())
    calls = {
        "embed": lambda: wb.embed(DOCS, model=CHAT),
        "embeddings": lambda: wb.embeddings(input="hi", model=CHAT),
        "by any case": lambda: wb.embed("hi", model=CHAT.upper()),
        "empty text": lambda: wb.embed(["hi", ""], model=EMBEDDING),
    }
    for what, call in calls.items():
        with pytest.raises(mor.ConfigurationError) as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message, what
        if what != "empty text":
            assert "not an embedding model" in message, what
    assert _nonce(wb) == before  # not one transaction (no approve, no openSession)
    assert len(wb.sessions()) == sessions_before


async def test_async_twin_embeds_and_the_receipt_counts_input_tokens(
    sandbox_info, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    async with await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory) as wb:
        vectors = await wb.embed(DOCS, model=EMBEDDING)
        await wb.embed(DOCS[0], model=EMBEDDING)
        # the provider's signed receipt counts every input token it embedded, none as output
        (session,) = wb.router.opened.values()
        receipt, _ = await report(
            session.endpoint,
            wb.account,
            session.session_id,
            session.provider_pubkey,
            session.provider,
        )
        # a chat request over an embedding model's session: the provider refuses it itself
        chat = {"model": EMBEDDING, "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(mor.RequestRejected, match="serves embeddings"):
            async for _ in prompt(
                session.endpoint,
                wb.account,
                session.session_id,
                session.provider_pubkey,
                chat,
                encrypt=session.encrypt,
            ):
                pass
    assert vectors.shape == (3, 1024) and vectors.dtype == np.float32
    tokens = decode_receipt(receipt)
    assert tokens.input_tokens == sum(map(count_tokens, DOCS)) + count_tokens(DOCS[0])
    assert tokens.output_tokens == 0


def test_the_live_models_config_entry_of_an_embedding_model_loads_as_one() -> None:
    # the live docs' example (Morpheus-Lumerin-Node docs/reference/models-config.mdx)
    live = {
        "modelId": "0x" + "00" * 31 + "05",
        "modelName": "text-embedding-bge-m3",
        "apiType": "openai",
        "apiUrl": "https://api.venice.ai/api/v1/embeddings",
        "apiKey": "FILL_ME_IN",
    }
    chat = {
        **live,
        "modelId": "0x" + "00" * 31 + "04",
        "apiUrl": "http://h:8000/v1/chat/completions",
    }
    embedding, chatting = parse_models_config({"models": [live, chat]})
    assert embedding.serves_embeddings and not chatting.serves_embeddings


async def test_the_health_probe_of_an_embedding_model_is_an_embeddings_request() -> None:
    # a chat probe of an /v1/embeddings endpoint is refused: the model would read unhealthy
    async with ModelServer([EMBEDDING], profile="instant") as server, httpx.AsyncClient() as http:
        config = ModelConfig(b"\1" * 32, EMBEDDING, server.base_url + "/embeddings")
        assert config.serves_embeddings
        assert await probe_backend(config, http, 5.0) == ("healthy", "", 200)
        assert server.embedding_request_count == 1


# ----- serve and gateway mode -----


async def test_serve_answers_embeddings_to_the_official_openai_client(
    sandbox_info, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    workbench = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory)
    runner = web.AppRunner(make_app(workbench, api_key="sk-local"), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-local") as client:
            decoded = await client.embeddings.create(model=EMBEDDING, input=DOCS)  # base64
            floats = await client.embeddings.with_raw_response.create(
                model=EMBEDDING, input=DOCS[0], encoding_format="float"
            )
            with pytest.raises(openai.BadRequestError, match="not an embedding model"):
                await client.embeddings.create(model=CHAT, input="hi")
    finally:
        await runner.cleanup()
    vectors = np.array([d.embedding for d in decoded.data], dtype=np.float32)
    assert vectors.shape == (3, 1024)
    assert np.allclose(vectors[0], embedding_vector(DOCS[0]), atol=1e-7)
    assert floats.headers["x-morpheus-provider"].startswith("0x")
    assert floats.parse().usage.prompt_tokens == count_tokens(DOCS[0])


def test_gateway_mode_calls_the_gateway_embeddings_route(monkeypatch) -> None:
    key = "sk-GATEWAY.0123456789abcdef0123456789abcdef"
    server = ModelServer([EMBEDDING, CHAT], profile="fast", api_key=key)
    portal().run(server.start())
    try:
        with mor.connect("gateway", api_key=key, base_url=server.base_url) as wb:
            vectors = wb.embed(DOCS, model=EMBEDDING)
            response = wb.embeddings(input="hello river", model=EMBEDDING)
    finally:
        portal().run(server.stop())
    assert server.embedding_request_count == 2
    assert vectors.shape == (3, 1024) and vectors.dtype == np.float32
    assert np.allclose(vectors[1], embedding_vector(DOCS[1]), atol=1e-7)
    assert response.morpheus["provider"] == "gateway"
    assert np.allclose(response.data[0].embedding, embedding_vector("hello river"), atol=1e-7)


# ----- failover: a provider killed in the middle of a batched embed -----


async def _register(info: sandbox.SandboxInfo, key: str, endpoint: str, price: int) -> str:
    """Fund and register an extra provider at `endpoint`, bidding `price` on EMBEDDING."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        model_id = await extra_provider.register(
            chain, info.signer("owner"), Signer(key), endpoint, model=EMBEDDING, price=price
        )
        return "0x" + model_id.hex()
    finally:
        await chain.rpc.aclose()


@pytest.fixture(scope="module")
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A sandbox of its own with an extra provider of EMBEDDING, ranked first (the cheapest
    bid), run as its own process in front of an in-process simulated backend (so the test can
    see how many requests reached it) that takes 0.1 s an answer."""
    directory = tmp_path_factory.mktemp("embed-failover")
    info = sandbox.start(directory)
    key = Account.create().key.hex()
    profile = LatencyProfile(jitter=0.0, embedding_base_s=0.1)
    backend = ModelServer([EMBEDDING], profile=profile)
    portal().run(backend.start())
    model_id = asyncio.run(_resolve_id(info))
    config = directory / "models-config.json"
    entry = {"modelId": model_id, "modelName": EMBEDDING, "apiType": "openai"}
    entry["apiUrl"] = backend.base_url + "/embeddings"
    config.write_text(json.dumps({"models": [entry]}))
    command = ["provider", "--config", str(config), "--dir", str(directory), "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mor_workbench.cli", *command],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MOR_PRIVATE_KEY": key},
    )
    try:
        endpoint = process.stdout.readline().split(" on ")[1].split(";")[0]
        asyncio.run(_register(info, key, endpoint, 10**11))  # far below the sandbox's prices
        yield {"info": info, "process": process, "backend": backend, "address": Signer(key).address}
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        portal().run(backend.stop())
        sandbox.reset(directory)


async def _resolve_id(info: sandbox.SandboxInfo) -> str:
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        model_id, _ = await resolve_model(chain, EMBEDDING)
        return "0x" + model_id.hex()
    finally:
        await chain.rpc.aclose()


def test_a_provider_killed_mid_batch_fails_over_and_the_vectors_are_whole(
    doomed, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    texts = [f"note {i}: the river {i} passes harbor {i % 7}" for i in range(30)]
    backend = doomed["backend"]
    with mor.connect(
        "sandbox", sandbox_dir=doomed["info"].directory, strategy="best", timeout=3.0
    ) as wb:
        events: list[tuple[str, str]] = []
        wb.on_sessions_changed(lambda event, session_id: events.append((event, session_id)))
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(wb.embed, texts, model=EMBEDDING, batch_size=1)
            while backend.embedding_request_count < 2 and not call.done():
                time.sleep(0.005)
            doomed["process"].kill()  # SIGKILL after its first answers: the connection drops
            vectors = call.result()
        answered = backend.embedding_request_count
        assert doomed["address"].lower() in wb.aio.router.cooldowns.cooling(60)
    assert 2 <= answered < len(texts)  # it died mid-batch: the others answered the rest
    assert [e for e, _ in events].count("opened") == 2  # its session, then the next provider's
    assert vectors.shape == (30, 1024)
    assert np.allclose(vectors, np.array([embedding_vector(t) for t in texts]), atol=1e-7)


def test_compare_measures_an_embedding_model_on_embeddings(wb) -> None:
    frame = wb.compare(DOCS, EMBEDDING, runs=2)
    assert list(frame.columns) == EMBEDDING_COMPARE_COLUMNS
    assert len(frame) == len(wb.bids(EMBEDDING)) and (frame["errors"] == 0).all()
    tokens = sum(count_tokens(t) for t in DOCS)
    assert (frame["prompt_tokens_mean"] == tokens).all() and (frame["dim"] == 1024).all()
    assert (frame["tokens_per_s_p50"] > 0).all() and (frame["e2e_p50_s"] > 0).all()
    assert (frame["cost_per_1m_tokens"] > 0).all()
    assert frame["e2e_p50_s"].is_monotonic_increasing  # fastest first
    with pytest.raises(mor.ConfigurationError, match="list of texts"):
        wb.compare([{"role": "user", "content": "hi"}], EMBEDDING)
