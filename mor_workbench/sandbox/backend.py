"""The user's own model server behind the sandbox's providers: `start(backend=URL)`.

By default each sandbox provider answers from a simulated model server (deliberately
meaningless text). With a backend, every provider forwards every sandbox model to one
OpenAI-compatible server of the user's (Ollama, llama.cpp, vLLM), so the same notebooks show
real model output offline. The choice is saved in the sandbox directory (`backend.json`, the
URL and model name only: an API key is read from `$MOR_SANDBOX_BACKEND_KEY` by the process that
starts the sandbox, never written down), so a restart keeps it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from mor_workbench._private_files import private_file
from mor_workbench.errors import ConfigurationError

__all__ = [
    "BACKEND_KEY_ENV",
    "SIMULATED",
    "Backend",
    "backend_api_key",
    "load_backend",
    "resolve_backend",
    "save_backend",
]

BACKEND_KEY_ENV = "MOR_SANDBOX_BACKEND_KEY"
SIMULATED = "simulated"  # `--backend simulated`: back to the sandbox's own simulated models


@dataclass(frozen=True)
class Backend:
    """An OpenAI-compatible server that answers for every sandbox model.

    `base_url` is its OpenAI base URL (e.g. http://127.0.0.1:11434/v1), `model` the model name
    sent to it in place of the sandbox model's name."""

    base_url: str
    model: str

    def describe(self) -> str:
        return f"{self.model} at {self.base_url}"


def backend_api_key() -> str | None:
    """The backend's Bearer key, from `$MOR_SANDBOX_BACKEND_KEY` (None when unset)."""
    return os.environ.get(BACKEND_KEY_ENV) or None


def resolve_backend(base_url: str, model: str | None = None, *, timeout: float = 10.0) -> Backend:
    """Check that `base_url` is an OpenAI-compatible server that answers GET /models, and pick
    the model to send: `model`, which it must list, or else the first it lists.

    Raises `ConfigurationError` (one line: what is wrong and how to fix it) when the URL is not
    http(s), the server cannot be reached, refuses the key, lists no models or not `model`."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"--backend {base_url!r} is not a URL: give the server's OpenAI base URL, e.g. "
            "http://127.0.0.1:11434/v1 (Ollama) or http://127.0.0.1:8080/v1 (llama.cpp)"
        )
    key = backend_api_key()
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        reply = httpx.get(url + "/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConfigurationError(
            f"the backend at {url} does not answer ({type(exc).__name__}): start your model "
            "server, or check the URL"
        ) from None
    if reply.status_code in (401, 403):
        raise ConfigurationError(
            f"the backend at {url} refused the request (HTTP {reply.status_code}): set "
            f"${BACKEND_KEY_ENV} to its API key before starting the sandbox"
        )
    try:
        reply.raise_for_status()
        listed = [str(card["id"]) for card in reply.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise ConfigurationError(
            f"{url}/models did not list models (HTTP {reply.status_code}): give the server's "
            "OpenAI base URL, which usually ends in /v1"
        ) from None
    if model is None:
        if not listed:
            raise ConfigurationError(
                f"the backend at {url} lists no models: load one, or name it with --backend-model"
            )
        return Backend(url, listed[0])
    if listed and model not in listed:
        raise ConfigurationError(
            f"the backend at {url} has no model {model!r}: use one of {', '.join(listed)}"
        )
    return Backend(url, model)


def save_backend(path: Path, backend: Backend | None) -> None:
    """Save the choice (None: the simulated models) for the next starts."""
    if backend is None:
        path.unlink(missing_ok=True)
    else:
        private_file(path).write_text(json.dumps(asdict(backend), indent=2))


def load_backend(path: Path) -> Backend | None:
    """The saved choice, or None for the simulated models."""
    try:
        raw = json.loads(path.read_text())
        return Backend(str(raw["base_url"]), str(raw["model"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
