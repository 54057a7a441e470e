"""The live network's models-config.json loads as is; bad entries name what to fix."""

from __future__ import annotations

import json

import pytest

from mor_workbench.errors import ConfigurationError
from mor_workbench.provider.config import load_models_config, parse_models_config

MODEL_ID = "0x" + "ab" * 32
ENTRY = {
    "modelId": MODEL_ID,
    "modelName": "llama2",
    "apiType": "openai",
    "apiUrl": "http://localhost:8080/v1/chat/completions",
    "apiKey": "sk-super-secret",
    "concurrentSlots": 6,
    "capacityPolicy": "idle_timeout",
    "parameters": {"cfg_scale": "5"},
}


def test_current_layout(tmp_path) -> None:
    path = tmp_path / "models-config.json"
    path.write_text(json.dumps({"$schema": "./schema.json", "models": [ENTRY]}))
    (model,) = load_models_config(path)
    assert model.model_id == bytes.fromhex(MODEL_ID[2:])
    assert (model.model_name, model.api_url, model.concurrent_slots) == (
        "llama2",
        ENTRY["apiUrl"],
        6,
    )
    assert model.capacity_policy == "idle_timeout" and model.parameters == {"cfg_scale": "5"}
    assert model.api_key == "sk-super-secret"


def test_legacy_map_layout() -> None:
    legacy = {MODEL_ID: {k: v for k, v in ENTRY.items() if k != "modelId"}}
    (model,) = parse_models_config(legacy)
    assert model.model_id_hex == MODEL_ID


def test_api_key_hidden_from_repr() -> None:
    (model,) = parse_models_config({"models": [ENTRY]})
    assert "sk-super-secret" not in repr(model) and "<hidden>" in repr(model)


def test_defaults_match_the_live_router() -> None:
    minimal = {k: ENTRY[k] for k in ("modelId", "modelName", "apiUrl")}
    (model,) = parse_models_config({"models": [minimal]})
    assert (model.api_type, model.concurrent_slots, model.capacity_policy) == (
        "openai",
        0,
        "simple",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modelId": "llama"}, "modelId must be the on-chain id"),
        ({"modelName": ""}, "modelName is missing"),
        ({"apiUrl": "localhost:8080"}, "apiUrl must be the backend's full URL"),
        ({"apiType": "grpc"}, "apiType 'grpc' is not one of"),
        ({"apiType": "prodia-v2"}, "not served by mor-workbench yet"),
        ({"concurrentSlots": -1}, "concurrentSlots"),
        ({"capacityPolicy": "lru"}, "capacityPolicy"),
    ],
)
def test_bad_entries_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_models_config({"models": [{**ENTRY, **change}]})


def test_duplicate_model_and_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        parse_models_config({"models": [ENTRY, ENTRY]})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_models_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": [}')
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_models_config(broken)
