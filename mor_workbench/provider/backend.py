"""Forward chat completions and embeddings to an OpenAI-compatible backend (vLLM, llama.cpp,
Ollama, OpenAI, TEI, Infinity).

The consumer's request body goes through as sent; streamed SSE chunks come back one by one as
parsed JSON, with the timings and token counts the provider signs into its receipt.

To count tokens for its receipt, the provider asks a streaming backend for usage
(`stream_options.include_usage`) even when the consumer did not; what that adds (a `usage`
member on every chunk and a closing usage-only chunk with `choices: []`) is taken out again
before the chunks go on, so a consumer gets usage exactly when it asked for it (then as the
backend sent it: one usage chunk), and a plain `chunk.choices[0]` loop never meets an empty
`choices` it did not ask for.

Likewise the model: the backend is asked for the provider's own name of the model
(`ModelConfig.model_name`: an Ollama tag, a vLLM path, a llama.cpp file), and what comes back
carries the name the consumer asked for, so a provider's internal naming never reaches the
client. Every other field (`id`, `created`, `object`, `system_fingerprint`) goes on as the
backend set it.

Embeddings go through whole, as the live proxy-router's OpenAI adapter sends them (`Embeddings`
in proxy-router/internal/aiengine/openai.go): the request with the provider's model name,
posted to the model's `apiUrl`, the one JSON answer back as a single chunk; the receipt counts
its `usage.prompt_tokens` as input tokens (an embedding has no output tokens).

The hop to the backend is aiohttp (one keep-alive pool per provider, `BackendHttp`): on this
path httpx took milliseconds per request, aiohttp a fraction of one (issue 16 §3).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mor_workbench.errors import BackendError
from mor_workbench.protocol.payload_json import parse
from mor_workbench.provider.config import ModelConfig

__all__ = [
    "BACKEND_FAILURES",
    "BackendError",
    "BackendHttp",
    "BackendStream",
    "OpenAIBackend",
]

BACKEND_FAILURES = (aiohttp.ClientError, TimeoutError)
"""What a backend that cannot be reached (or goes silent) raises from `OpenAIBackend`."""
BACKEND_CONNECT_TIMEOUT_S = 5.0
BACKEND_READ_TIMEOUT_S = 240.0  # the longest wait for the backend's next bytes


class BackendHttp:
    """The HTTP client of a provider's backends: connections kept alive and reused, a
    `BACKEND_CONNECT_TIMEOUT_S` connect and a `BACKEND_READ_TIMEOUT_S` wait for each read (s),
    no limit on a whole answer. Opened on first use (inside the provider's event loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=BACKEND_CONNECT_TIMEOUT_S,
                    sock_read=BACKEND_READ_TIMEOUT_S,
                )
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass
class BackendStream:
    """Measurements of one backend call, filled in as chunks arrive; `responded` is set once
    the backend took the request (its response status a success), before its first chunk."""

    started: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0
    output_chunks: int = 0
    responded: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ttft_ms(self) -> int:
        return int(((self.first_token_at or self.started) - self.started) * 1000)

    @property
    def tps_scaled1000(self) -> int:
        """Output tokens per second times 1000 over the wall time, as live receipts report."""
        elapsed = max((self.finished_at or time.monotonic()) - self.started, 1e-3)
        return int(self.completion_tokens * 1000 / elapsed)


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    """`BackendError` with the backend's status and JSON error (OpenAI shape; its text when it
    is not JSON) when it answered 400 or more."""
    if response.status < 400:
        return
    raw = await response.read()
    try:
        error = json.loads(raw)
    except ValueError:
        error = {"error": {"message": raw.decode(errors="replace")[:500]}}
    if not isinstance(error, dict):
        error = {"error": {"message": str(error)}}
    raise BackendError(response.status, error)


def _usage(payload: dict[str, Any], stats: BackendStream) -> None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        stats.prompt_tokens = int(usage.get("prompt_tokens") or stats.prompt_tokens)
        stats.completion_tokens = int(usage.get("completion_tokens") or stats.completion_tokens)


def _has_output(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or choice.get("message") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"):
            return True
    return False


def _as_asked(payload: Any, asked_model: Any) -> Any:
    """`payload` naming the model as the consumer asked for it (when it names one)."""
    if isinstance(payload, dict) and "model" in payload and isinstance(asked_model, str):
        payload["model"] = asked_model
    return payload


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of a response body as they arrive, without their line ends (any length: a
    line is not cut at a buffer size)."""
    pending = bytearray()
    async for data in content.iter_any():
        pending += data
        if b"\n" not in data:
            continue
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for line in lines:
            yield bytes(line.rstrip(b"\r"))
    if pending:
        yield bytes(pending.rstrip(b"\r"))


class OpenAIBackend:
    """One model's OpenAI-compatible backend, reached over the provider's `BackendHttp`."""

    def __init__(self, model: ModelConfig, http: BackendHttp) -> None:
        self.model = model
        self.http = http

    def _headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        if self.model.api_key:
            headers["authorization"] = f"Bearer {self.model.api_key}"
        return headers

    async def embeddings(self, body: dict[str, Any], stats: BackendStream) -> dict[str, Any]:
        """The backend's `CreateEmbeddingResponse` JSON for an OpenAI embeddings request (its
        `model` named as the consumer asked); `stats` gets the timing and the input tokens.
        Raises BackendError when the backend answers with an HTTP error (or with JSON that is
        not an embeddings list: a 502), one of `BACKEND_FAILURES` when it cannot be reached."""
        request = {**body, "model": self.model.model_name}
        stats.started = time.monotonic()
        async with self._post(request) as response:
            await _raise_for_status(response)
            raw = await response.read()
        stats.first_token_at = stats.finished_at = time.monotonic()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            message = "the model backend answered without an embeddings list"
            raise BackendError(502, {"error": {"message": message, "type": "server_error"}})
        stats.chunks = 1
        _usage(answer, stats)
        return _as_asked(answer, body.get("model"))

    def _post(self, request: dict[str, Any]) -> Any:
        """POST `request` as JSON to the model's `apiUrl` (an aiohttp response context)."""
        return self.http.session.post(
            self.model.api_url,
            data=json.dumps(request, separators=(",", ":")).encode(),
            headers=self._headers(),
        )

    async def complete(
        self, body: dict[str, Any], stats: BackendStream
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the backend's chunks (streaming) or its single completion (not streaming),
        as the consumer's request asked for them (see the module's note on usage); `stats`
        gets the timings and token counts either way. Raises BackendError when the backend
        answers with an HTTP error, one of `BACKEND_FAILURES` when it cannot be reached."""
        request = {**body, "model": self.model.model_name}
        asked_model = body.get("model")
        streaming = bool(request.get("stream"))
        options = request.get("stream_options")
        usage_asked = isinstance(options, dict) and bool(options.get("include_usage"))
        if streaming and not usage_asked and (options is None or isinstance(options, dict)):
            # for the receipt's token counts only (malformed options go on for the backend
            # to refuse)
            request["stream_options"] = {**(options or {}), "include_usage": True}
        stats.started = time.monotonic()
        async with self._post(request) as response:
            await _raise_for_status(response)
            stats.responded.set()
            if not streaming:
                completion = json.loads(await response.read())
                stats.first_token_at = stats.finished_at = time.monotonic()
                stats.chunks = 1
                _usage(completion, stats)
                yield _as_asked(completion, asked_model)
                return
            async for line in _lines(response.content):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = parse(data)
                stats.chunks += 1
                if stats.first_token_at is None and _has_output(chunk):
                    stats.first_token_at = time.monotonic()
                if _has_output(chunk):
                    stats.output_chunks += 1
                _usage(chunk, stats)
                if not usage_asked:
                    if "usage" in chunk and not chunk.get("choices"):
                        continue  # the usage-only chunk only the receipt asked for
                    chunk.pop("usage", None)
                yield _as_asked(chunk, asked_model)
            stats.finished_at = time.monotonic()
            if not stats.completion_tokens:
                # A backend that ignores include_usage: one streamed delta is about one token.
                stats.completion_tokens = stats.output_chunks
