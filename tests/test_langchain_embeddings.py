"""`MorpheusEmbeddings` (issue 15): langchain-tests' standard embeddings suites (the
integration one on the sandbox), then what they leave open: the vectors are the provider's,
`dimensions` passes through, an in-memory vector store retrieves similar documents first,
bad settings are refused, the connection is shared with ChatMorpheus like ChatMorpheus's own,
and an AsyncWorkbench makes it async-only."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

import mor_workbench as mor
from mor_workbench.langchain import ChatMorpheus, MorpheusEmbeddings, close_shared_workbenches
from mor_workbench.sandbox.model_server import embedding_vector
from mor_workbench.sandbox.paths import SandboxPaths

EMBEDDING = "text-embedding-bge-m3"
CHAT = "llama-3.3-70b"

DOCS = [
    "The river carries boats past the harbor at dawn.",
    "Quarterly tax returns are due before the end of April.",
    "Boats sail along the river toward the harbor in the morning.",
    "Bake the bread in a hot oven until the crust is golden.",
]


@pytest.fixture(scope="module")
def workbench(sandbox_info: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One workbench for the module (its own journal), so the embedding session opens once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(tmp_path_factory.mktemp("embeddings-home")))
        wb = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
        yield wb
        wb.close()


class TestMorpheusEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MorpheusEmbeddings]:
        return MorpheusEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": EMBEDDING}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"MOR_API_KEY": "sk-from-the-environment"},
            {"model": EMBEDDING, "network": "gateway"},
            {"api_key": "sk-from-the-environment"},
        )


class TestMorpheusEmbeddingsIntegration(EmbeddingsIntegrationTests):
    shared: ClassVar[Any] = None

    @pytest.fixture(autouse=True)
    def _shared_workbench(self, workbench: Any) -> None:
        type(self).shared = workbench

    @property
    def embeddings_class(self) -> type[MorpheusEmbeddings]:
        return MorpheusEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": EMBEDDING, "workbench": self.shared}


# ----- what the suites leave open -----


def test_the_vectors_are_the_providers_and_dimensions_pass_through(workbench) -> None:
    embeddings = MorpheusEmbeddings(model=EMBEDDING, workbench=workbench)
    vectors = embeddings.embed_documents(DOCS)
    assert np.allclose(vectors, [embedding_vector(text) for text in DOCS], atol=1e-7)
    assert np.allclose(embeddings.embed_query(DOCS[1]), vectors[1])
    assert embeddings.embed_documents([]) == []
    short = MorpheusEmbeddings(model=EMBEDDING, workbench=workbench, dimensions=256)
    assert len(short.embed_query(DOCS[0])) == 256


async def test_async_calls_on_a_workbench_give_the_same_vectors(workbench) -> None:
    embeddings = MorpheusEmbeddings(model=EMBEDDING, workbench=workbench, batch_size=1)
    vectors = await embeddings.aembed_documents(DOCS)
    assert np.allclose(vectors, [embedding_vector(text) for text in DOCS], atol=1e-7)
    assert np.allclose(await embeddings.aembed_query(DOCS[2]), vectors[2])


def test_an_in_memory_vector_store_retrieves_similar_documents_first(workbench) -> None:
    embeddings = MorpheusEmbeddings(model=EMBEDDING, workbench=workbench)
    store = InMemoryVectorStore.from_texts(DOCS, embedding=embeddings)
    found = store.similarity_search("Which boats sail on the river to the harbor?", k=2)
    assert {d.page_content for d in found} == {DOCS[0], DOCS[2]}
    [bread] = store.similarity_search("How long do I bake bread in the oven?", k=1)
    assert bread.page_content == DOCS[3]
    retriever = store.as_retriever(search_kwargs={"k": 1})
    [taxes] = asyncio.run(retriever.ainvoke("When are the tax returns due?"))
    assert taxes.page_content == DOCS[1]


def test_bad_settings_are_refused_with_one_line(workbench) -> None:
    refusals = {
        "temperature": lambda: MorpheusEmbeddings(model=EMBEDDING, temperature=0.2),
        "connection setting": lambda: MorpheusEmbeddings(
            model=EMBEDDING, workbench=workbench, network="base"
        ),
        "not an embedding model": lambda: MorpheusEmbeddings(
            model=CHAT, workbench=workbench
        ).embed_query("hi"),
        "empty": lambda: MorpheusEmbeddings(model=EMBEDDING, workbench=workbench).embed_documents(
            ["hi", ""]
        ),
    }
    for words, refused in refusals.items():
        with pytest.raises(mor.ConfigurationError, match=words) as error:
            refused()
        assert "\n" not in str(error.value)


def test_it_shares_a_workbench_with_chat_models_of_equal_settings_and_never_shows_the_key(
    sandbox_dir: Path, tmp_path, monkeypatch
) -> None:
    """A retrieval agent: an embeddings model and a chat model built with the same settings
    connect once; the key pays and is never shown; the last to let go closes the workbench."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    owner = json.loads(SandboxPaths(sandbox_dir).accounts.read_text())["owner"]
    embeddings = MorpheusEmbeddings(model=EMBEDDING, sandbox_dir=sandbox_dir, key=owner)
    chat = ChatMorpheus(model=CHAT, sandbox_dir=sandbox_dir, key=owner)
    try:
        vector = embeddings.embed_query(DOCS[0])
        assert np.allclose(asyncio.run(embeddings.aembed_query(DOCS[0])), vector)
        assert chat.invoke("Hi", max_tokens=2).content
        shared = chat._owned
        assert shared is not None and embeddings._connection._owned is shared
        assert embeddings.workbench is None and embeddings.network == "sandbox"
        secret = owner.removeprefix("0x").lower()
        assert secret not in repr(embeddings).lower()
        embeddings.close()  # the chat model still holds it
        assert not shared.aio._closed
        chat.close()  # the last holder: closed
        assert shared.aio._closed
    finally:
        close_shared_workbenches()


async def test_over_an_async_workbench(sandbox_dir: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    async with await mor.aconnect("sandbox", sandbox_dir=sandbox_dir) as wb:
        embeddings = MorpheusEmbeddings(model=EMBEDDING, workbench=wb)
        vectors = await embeddings.aembed_documents(DOCS[:2])
        assert np.allclose(vectors, [embedding_vector(text) for text in DOCS[:2]], atol=1e-7)
        with pytest.raises(mor.ConfigurationError, match="aembed_documents"):
            await asyncio.to_thread(embeddings.embed_query, "hi")


async def test_a_cancelled_async_call_is_cancelled_where_it_runs(workbench, monkeypatch) -> None:
    """Over a sync Workbench the call runs on the workbench's own loop: cancelling the caller
    cancels it there (no further batch is sent), and the model stays usable."""
    embeddings = MorpheusEmbeddings(model=EMBEDDING, workbench=workbench, batch_size=1)
    original = workbench.aio.embedding_payload
    requests: list[int] = []
    started, cancelled = threading.Event(), threading.Event()

    async def watched(*args: Any, **kwargs: Any) -> Any:  # runs on the workbench's loop
        requests.append(1)
        started.set()
        try:
            return await original(*args, **kwargs)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(workbench.aio, "embedding_payload", watched)
    task = asyncio.create_task(embeddings.aembed_documents(DOCS * 50))  # 200 requests
    assert await asyncio.to_thread(started.wait, 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 60)
    sent = len(requests)
    assert sent < 200
    vector = await embeddings.aembed_query(DOCS[0])
    assert len(requests) == sent + 1  # the cancelled call sent nothing more
    assert np.allclose(vector, embedding_vector(DOCS[0]), atol=1e-7)


def test_a_pickle_leaves_the_key_out_and_refuses_to_connect_without_it() -> None:
    key = "sk-GATEWAY.0123456789abcdef"
    embeddings = MorpheusEmbeddings(
        model=EMBEDDING, network="gateway", base_url="http://127.0.0.1:9/v1", api_key=key
    )
    assert embeddings.api_key.get_secret_value() == key and key not in repr(embeddings)
    pickled = pickle.dumps(embeddings)
    assert key.encode() not in pickled
    with pytest.raises(mor.ConfigurationError, match="unpickled"):
        pickle.loads(pickled).embed_query("hi")
