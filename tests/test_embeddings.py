"""Embeddings end to end (issue 15): the simulated backend, the provider, the consumer's
`wb.embed` / `wb.embeddings`, `serve`, gateway mode and `compare`, on real parts: the
sandbox's chain and provider routers on sockets, and the official openai client."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from mor_workbench.sandbox.model_server import ModelServer

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
