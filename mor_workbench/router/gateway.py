"""Gateway mode: the same calls sent to the hosted, OpenAI-compatible Morpheus API gateway, for
people without a wallet. The gateway holds the sessions and bills in credits; an API key
(`sk-…`) is all it needs. The key is never shown: not in reprs, errors or logs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from mor_workbench.errors import ConfigurationError, ProviderError, RequestRejected

__all__ = ["API_KEY_ENV", "DEFAULT_GATEWAY_URL", "Gateway"]

DEFAULT_GATEWAY_URL = "https://api.mor.org/api/v1"
API_KEY_ENV = "MOR_API_KEY"


class Gateway:
    """An OpenAI-compatible chat completions endpoint reached with a Bearer API key."""

    def __init__(
        self, api_key: str | None = None, *, base_url: str | None = None, timeout: float = 300.0
    ) -> None:
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise ConfigurationError(
                f"gateway mode needs an API key: pass api_key='sk-…' or set {API_KEY_ENV} "
                "(create one at https://app.mor.org)"
            )
        self.base_url = (base_url or DEFAULT_GATEWAY_URL).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def __repr__(self) -> str:
        return f"<Gateway {self.base_url}>"

    async def payloads(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The gateway's chunks (streaming) or its one completion, as dicts."""
        try:
            async with self._http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise self._error(response.status_code, await response.aread())
                if not body.get("stream"):
                    yield json.loads(await response.aread())
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
        except httpx.TransportError as exc:
            raise ProviderError(
                f"the gateway at {self.base_url} could not be reached ({type(exc).__name__})"
            ) from None

    async def models(self) -> list[dict[str, Any]]:
        """The gateway's model list (OpenAI's /models shape)."""
        response = await self._http.get("/models")
        if response.status_code >= 400:
            raise self._error(response.status_code, response.content)
        return list(response.json().get("data") or [])

    async def aclose(self) -> None:
        await self._http.aclose()

    def _error(self, status: int, raw: bytes) -> Exception:
        """The gateway's error as ours; should it echo the key, the key is cut out."""
        key = self._http.headers["authorization"].removeprefix("Bearer ")
        return _error(status, raw.replace(key.encode(), b"sk-***"))


def _error(status: int, raw: bytes) -> Exception:
    """The gateway's HTTP error as our type: a refused key is `ConfigurationError`, another
    4xx the request's fault (`RequestRejected`, with the gateway's OpenAI fields and status),
    a 5xx, 408 or 429 the gateway's (`ProviderError`)."""
    error: dict[str, Any] = {}
    try:
        detail = json.loads(raw)
        found = detail.get("error") or detail.get("detail") or detail
        error = found if isinstance(found, dict) else {}
        message = error.get("message") if error else str(found)
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")[:300]
    message = str(message or f"HTTP {status}")
    if status in (401, 403):
        return ConfigurationError(
            f"the gateway refused the API key ({status}: {message}): check api_key or {API_KEY_ENV}"
        )
    if status >= 500 or status in (408, 429):
        return ProviderError(f"the gateway answered {status}: {message}")
    param, code = error.get("param"), error.get("code")
    return RequestRejected(
        message,
        status=status,
        type=str(error.get("type") or "invalid_request_error"),
        param=param if isinstance(param, str) else None,
        code=str(code) if code is not None else None,
    )
