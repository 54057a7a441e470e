"""Model types (issue 12 §2): derived from tags as the live proxy-router does, shown in the
tables, and a non-chat model refused by chat/stream/complete/open_session before any
transaction."""

from __future__ import annotations

import extra_provider
import pytest

import mor_workbench as mor
from mor_workbench.market.catalog import model_type
from mor_workbench.sandbox.market import MODELS

EMBEDDING = "text-embedding-bge-m3"


def _nonce(wb: mor.Workbench) -> int:
    return extra_provider.transaction_count(wb.aio.chain.rpc.urls, wb.address)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # tag spellings from the live proxy-router's DetectModelType and the gateway's rules
        (["Embeddings"], "EMBEDDING"),
        (["embedding", "bge"], "EMBEDDING"),
        (["TTS"], "TTS"),
        (["kokoro", "text-to-speech"], "TTS"),
        (["transcribe"], "STT"),
        (["s2t", "whisper"], "STT"),
        (["LLM", "web-search-enabled"], "LLM"),
        (["textgeneration"], "LLM"),
        (["llm", "embeddings"], "LLM"),  # the first tag that names a type decides
        (["web-search-enabled"], "UNKNOWN"),
        ([], "UNKNOWN"),
    ],
)
def test_type_follows_the_tags_as_the_live_router_reads_them(tags, expected) -> None:
    assert model_type(tags) == expected


def test_models_and_bids_carry_each_models_type(wb) -> None:
    models = wb.models().set_index("name")
    for spec in MODELS:
        assert models.loc[spec.name, "type"] == model_type(spec.tags)
    assert models.loc[EMBEDDING, "type"] == "EMBEDDING"
    assert models.loc["llama-3.3-70b", "type"] == "LLM"
    bids = wb.bids()
    assert set(bids.loc[bids["model"] == EMBEDDING, "type"]) == {"EMBEDDING"}
    assert set(bids.loc[bids["model"] == "llama-3.3-70b", "type"]) == {"LLM"}
    assert set(wb.bids(EMBEDDING)["type"]) == {"EMBEDDING"}


def test_a_non_chat_model_is_refused_before_any_transaction(wb) -> None:
    before, sessions_before = _nonce(wb), len(wb.sessions())
    calls = {
        "chat": lambda: wb.chat("hi", model=EMBEDDING),
        "stream": lambda: list(wb.stream("hi", model=EMBEDDING)),
        "complete": lambda: wb.complete([{"role": "user", "content": "hi"}], model=EMBEDDING),
        "open_session": lambda: wb.open_session(EMBEDDING, duration="6m"),
        "by any case": lambda: wb.chat("hi", model=EMBEDDING.upper()),
        # compare measures an embedding model on embeddings (tests/test_embeddings.py)
    }
    for what, call in calls.items():
        with pytest.raises(mor.ConfigurationError) as refused:
            call()
        message = str(refused.value)
        assert "embedding model" in message and "not a chat model" in message, what
        assert "\n" not in message
    assert _nonce(wb) == before  # not one transaction (no approve, no openSession)
    assert len(wb.sessions()) == sessions_before


def test_a_chat_model_still_chats(wb) -> None:
    assert wb.chat("hi", model="llama-3.3-70b", max_tokens=3)
