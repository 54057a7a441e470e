"""Forward chat completions to an OpenAI-compatible backend (vLLM, llama.cpp, Ollama, OpenAI).

The consumer's request body goes through as sent; streamed SSE chunks come back one by one as
parsed JSON, with the timings and token counts the provider signs into its receipt.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from mor_workbench.errors import BackendError
from mor_workbench.provider.config import ModelConfig

__all__ = ["BackendError", "BackendStream", "OpenAIBackend"]


@dataclass
class BackendStream:
    """Measurements of one backend call, filled in as chunks arrive."""

    started: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0
    output_chunks: int = 0

    @property
    def ttft_ms(self) -> int:
        return int(((self.first_token_at or self.started) - self.started) * 1000)

    @property
    def tps_scaled1000(self) -> int:
        """Output tokens per second times 1000 over the wall time, as live receipts report."""
        elapsed = max((self.finished_at or time.monotonic()) - self.started, 1e-3)
        return int(self.completion_tokens * 1000 / elapsed)


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


class OpenAIBackend:
    """One model's OpenAI-compatible backend, reached over a shared httpx client."""

    def __init__(self, model: ModelConfig, http: httpx.AsyncClient) -> None:
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

    async def complete(
        self, body: dict[str, Any], stats: BackendStream
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the backend's chunks (streaming) or its single completion (not streaming)."""
        request = dict(body)
        streaming = bool(request.get("stream"))
        if streaming:
            # Token counts for the signed receipt; the chunk is passed on like any other.
            options = dict(request.get("stream_options") or {})
            options.setdefault("include_usage", True)
            request["stream_options"] = options
        stats.started = time.monotonic()
        async with self.http.stream(
            "POST", self.model.api_url, json=request, headers=self._headers()
        ) as response:
            if response.status_code >= 400:
                raw = await response.aread()
                try:
                    error = json.loads(raw)
                except ValueError:
                    error = {"error": {"message": raw.decode(errors="replace")[:500]}}
                raise BackendError(
                    response.status_code,
                    error if isinstance(error, dict) else {"error": {"message": str(error)}},
                )
            if not streaming:
                completion = json.loads(await response.aread())
                stats.first_token_at = stats.finished_at = time.monotonic()
                stats.chunks = 1
                _usage(completion, stats)
                yield completion
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                stats.chunks += 1
                if stats.first_token_at is None and _has_output(chunk):
                    stats.first_token_at = time.monotonic()
                if _has_output(chunk):
                    stats.output_chunks += 1
                _usage(chunk, stats)
                yield chunk
            stats.finished_at = time.monotonic()
            if not stats.completion_tokens:
                # A backend that ignores include_usage: one streamed delta is about one token.
                stats.completion_tokens = stats.output_chunks
