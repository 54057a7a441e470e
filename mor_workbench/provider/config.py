"""The provider's model configuration, in the live network's `models-config.json` format.

Both layouts the live proxy-router accepts load as they are: `{"models": [{...}, ...]}` and the
legacy map `{"0x<modelId>": {...}}`. `apiUrl` is the backend's full URL of the model's
endpoint, as on the live network (its models-config docs: "Full url including endpoint"): a chat
model's `.../v1/chat/completions`, an embedding model's `.../v1/embeddings` (e.g. live resellers
of `text-embedding-bge-m3` set `https://api.venice.ai/api/v1/embeddings`). The live format has
no other field for the modality, so the URL's path says which one a model serves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mor_workbench.errors import ConfigurationError

__all__ = ["ModelConfig", "load_models_config", "parse_models_config"]

API_TYPES = ("openai", "claudeai", "prodia-v2", "prodia-sd", "prodia-sdxl", "hyperbolic-sd")
CAPACITY_POLICIES = ("simple", "idle_timeout")


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its on-chain id and the backend that answers for it."""

    model_id: bytes
    model_name: str
    api_url: str
    api_type: str = "openai"
    api_key: str | None = field(default=None, repr=False)
    concurrent_slots: int = 0  # 0 = unlimited, as on the live network
    capacity_policy: str = "simple"
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_id_hex(self) -> str:
        return "0x" + self.model_id.hex()

    @property
    def serves_embeddings(self) -> bool:
        """Whether `api_url` is an OpenAI embeddings endpoint (its path ends in /embeddings):
        the model answers embeddings requests, not chat (see the module doc)."""
        return urlsplit(self.api_url).path.rstrip("/").endswith("/embeddings")

    def __repr__(self) -> str:
        key = ", api_key=<hidden>" if self.api_key else ""
        return (
            f"ModelConfig({self.model_name!r}, {self.model_id_hex}, {self.api_url!r}, "
            f"slots={self.concurrent_slots}{key})"
        )


def _model(entry: Any, where: str, model_id: str | None = None) -> ModelConfig:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} must be an object with modelId, modelName and apiUrl")
    raw_id = model_id if model_id is not None else entry.get("modelId")
    if not (isinstance(raw_id, str) and raw_id.startswith("0x") and len(raw_id) == 66):
        raise ConfigurationError(f"{where}: modelId must be the on-chain id, 0x and 64 hex digits")
    try:
        parsed_id = bytes.fromhex(raw_id[2:])
    except ValueError:
        raise ConfigurationError(f"{where}: modelId {raw_id!r} is not hex") from None
    name, url = entry.get("modelName"), entry.get("apiUrl")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}: modelName is missing")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"{where}: apiUrl must be the backend's full URL, e.g. "
            "http://host:8000/v1/chat/completions (or .../v1/embeddings for an embedding model)"
        )
    api_type = entry.get("apiType", "openai")
    if api_type not in API_TYPES:
        raise ConfigurationError(
            f"{where}: apiType {api_type!r} is not one of {', '.join(API_TYPES)}"
        )
    if api_type != "openai":
        raise ConfigurationError(
            f"{where}: apiType {api_type!r} is not served by mor-workbench yet; use an "
            "OpenAI-compatible backend (vLLM, llama.cpp, Ollama, OpenAI) with apiType 'openai'"
        )
    slots = entry.get("concurrentSlots", 0)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
        raise ConfigurationError(f"{where}: concurrentSlots must be a whole number ≥ 0")
    policy = entry.get("capacityPolicy") or "simple"
    if policy not in CAPACITY_POLICIES:
        raise ConfigurationError(f"{where}: capacityPolicy must be one of {CAPACITY_POLICIES}")
    key = entry.get("apiKey") or None
    return ModelConfig(
        parsed_id, name, url, api_type, key, slots, policy, dict(entry.get("parameters") or {})
    )


def parse_models_config(document: Any) -> list[ModelConfig]:
    """Models from a parsed models-config document (either layout)."""
    if isinstance(document, Mapping) and "models" in document:
        entries = document["models"]
        if not isinstance(entries, list):
            raise ConfigurationError("models-config: 'models' must be a list")
        models = [_model(e, f"models[{i}]") for i, e in enumerate(entries)]
    elif isinstance(document, Mapping):
        models = [
            _model(e, f"model {k}", model_id=k)
            for k, e in document.items()
            if not k.startswith("$")
        ]
    else:
        raise ConfigurationError("models-config must be a JSON object")
    seen: set[bytes] = set()
    for m in models:
        if m.model_id in seen:
            raise ConfigurationError(f"models-config lists model {m.model_id_hex} twice")
        seen.add(m.model_id)
    return models


def load_models_config(path: str | os.PathLike[str]) -> list[ModelConfig]:
    """Models from a models-config.json file."""
    file = Path(path).expanduser()
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"models config {str(file)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"models config {str(file)!r} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    return parse_models_config(document)
