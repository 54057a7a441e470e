"""What a model is for, and the curated catalog of the models hosted clients use.

Model types follow the live proxy-router (Morpheus-Lumerin-Node,
`proxy-router/internal/blockchainapi/model_tags.go`, `DetectModelType`): the first tag, in
order and compared case-insensitively, that names a type decides it; a model with no such tag
is `UNKNOWN`. The live gateway (Morpheus-Marketplace-API `src/core/model_types.py`) serves an
untyped model as chat, so only `EMBEDDING`, `STT` and `TTS` models are refused for chat.

The catalog is the feed NodeNeo's SDK reads (`proxy-router/mobile/sdk_models.go`):
`https://active.mor.org/active_models.json`, listing the models with a bid and a healthy
provider, shaped `{"models": [{"Id", "IpfsCID", "Fee", "Stake", "Owner", "Name", "Tags",
"CreatedAt", "IsDeleted", "ModelType"}], "last_updated"}`. As there, the chain is the fallback
when the feed cannot be read.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from mor_workbench.errors import ConfigurationError

__all__ = [
    "ACTIVE_MODELS_URL",
    "CATALOG_TIMEOUT_S",
    "CHAT_TYPES",
    "MODEL_TYPES",
    "Catalog",
    "check_chat_model",
    "check_embedding_model",
    "fetch_catalog",
    "join_catalog",
    "model_type",
]

ACTIVE_MODELS_URL = "https://active.mor.org/active_models.json"
CATALOG_TIMEOUT_S = 5.0

# tag (lower case) -> type, as DetectModelType reads them
_TYPE_OF_TAG = {
    **dict.fromkeys(("stt", "transcribe", "s2t", "speech", "speech-to-text", "speech2text"), "STT"),
    **dict.fromkeys(("tts", "text-to-speech", "text2speech", "t2s"), "TTS"),
    **dict.fromkeys(("embedding", "embeddings"), "EMBEDDING"),
    **dict.fromkeys(("llm", "textgeneration", "text2text", "text-to-text", "t2t"), "LLM"),
}
MODEL_TYPES = ("LLM", "EMBEDDING", "STT", "TTS", "UNKNOWN")
CHAT_TYPES = frozenset({"LLM", "UNKNOWN"})
_WHAT_TYPE_DOES = {
    "EMBEDDING": "an embedding model (it turns text into vectors)",
    "STT": "a speech-to-text model (it transcribes audio)",
    "TTS": "a text-to-speech model (it speaks text)",
}


def model_type(tags: Iterable[str]) -> str:
    """The model's type from its on-chain tags: one of `MODEL_TYPES` (see the module doc)."""
    for tag in tags:
        found = _TYPE_OF_TAG.get(tag.lower())
        if found is not None:
            return found
    return "UNKNOWN"


def check_chat_model(name: str, tags: Iterable[str]) -> None:
    """Raise `ConfigurationError` unless the model can chat (type LLM or UNKNOWN)."""
    kind = model_type(tags)
    if kind not in CHAT_TYPES:
        raise ConfigurationError(
            f"model {name!r} is {_WHAT_TYPE_DOES[kind]}, not a chat model: choose one whose "
            "type is LLM in wb.models()"
        )


def check_embedding_model(name: str, tags: Iterable[str]) -> None:
    """Raise `ConfigurationError` unless the model embeds (type EMBEDDING: an `embedding` or
    `embeddings` tag, as the live proxy-router reads them)."""
    kind = model_type(tags)
    if kind != "EMBEDDING":
        what = _WHAT_TYPE_DOES.get(kind, "a chat model" if kind == "LLM" else "an untyped model")
        raise ConfigurationError(
            f"model {name!r} is {what}, not an embedding model: choose one whose type is "
            "EMBEDDING in wb.models() (e.g. text-embedding-bge-m3)"
        )


@dataclass(frozen=True)
class Catalog:
    """The curated feed: its models by lower-case 0x id, and when it was last updated."""

    models: dict[str, dict[str, Any]]
    updated_at: pd.Timestamp


async def fetch_catalog(
    url: str = ACTIVE_MODELS_URL, *, timeout: float = CATALOG_TIMEOUT_S
) -> Catalog | None:
    """The feed at `url` (timeout in seconds), or None with a warning when it cannot be read
    or is not shaped as the live feed: callers then keep the chain's listing."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
            response.raise_for_status()
            feed = response.json()
        models = {m["Id"].lower(): m for m in feed["models"] if not m.get("IsDeleted", False)}
        updated = feed.get("last_updated")
        updated_at = pd.Timestamp(datetime.fromtimestamp(updated, UTC)) if updated else pd.NaT
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(
            f"model catalog {url} could not be read ({type(exc).__name__}: {exc}); "
            "showing the chain's listing instead",
            stacklevel=2,
        )
        return None
    return Catalog(models, updated_at)


def join_catalog(frame: pd.DataFrame, catalog: Catalog | None) -> pd.DataFrame:
    """Chain rows (with an `id` column) kept only where the catalog lists them, with the
    catalog's `catalog_type` and `catalog_updated_at`; every row when `catalog` is None, and
    every row with a warning when the catalog lists none of them (a feed of another network:
    the live one lists Base mainnet's models)."""
    if catalog is None:
        return frame
    listed = [catalog.models.get(i.lower()) for i in frame["id"]]
    if catalog.models and not any(listed):
        warnings.warn(
            f"the model catalog lists none of this chain's {len(frame)} active models (it "
            "describes another network); showing the chain's listing instead",
            stacklevel=2,
        )
        return frame
    joined = frame.assign(
        catalog_type=[m.get("ModelType") if m else None for m in listed],
        catalog_updated_at=catalog.updated_at,
    )
    keep: Sequence[bool] = [m is not None for m in listed]
    return joined[keep].reset_index(drop=True)
