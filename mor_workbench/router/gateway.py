"""Gateway mode: the same calls sent to the hosted, OpenAI-compatible Morpheus API gateway, for
people without a wallet. The gateway holds the sessions and bills in credits; an API key
(`sk-…`) is all it needs. The key is never shown: not in reprs, errors or logs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai

from mor_workbench.errors import ConfigurationError, ProviderError, RequestRejected

__all__ = ["API_KEY_ENV", "DEFAULT_GATEWAY_URL", "Gateway"]

DEFAULT_GATEWAY_URL = "https://api.mor.org/api/v1"
API_KEY_ENV = "MOR_API_KEY"


class Gateway:
    """An OpenAI-compatible chat completions endpoint reached with a Bearer API key, through
    the official openai client (its SSE parsing, timeouts and error types); we add only the
    sorting of its errors into ours."""

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
        self._key = key
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0
        )

    def __repr__(self) -> str:
        return f"<Gateway {self.base_url}>"

    async def payloads(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The gateway's chunks (streaming) or its one completion, as the dicts it sent."""
        with self._typed_errors():
            if not body.get("stream"):
                reply = await self._client.chat.completions.with_raw_response.create(**body)
                yield reply.http_response.json()
                return
            stream = await self._client.chat.completions.create(**body)
            async with stream:
                async for chunk in stream:
                    yield chunk.model_dump(exclude_unset=True)

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """The gateway's answer to an OpenAI embeddings request (its `/embeddings` route under
        the base URL: `/api/v1/embeddings` on the hosted gateway), as the dict it sent. The
        vectors come as the body's `encoding_format` asks, floats when it does not say (the
        openai client would otherwise ask for base64 on its own)."""
        with self._typed_errors():
            reply = await self._client.embeddings.with_raw_response.create(
                **{"encoding_format": "float", **body}
            )
        return reply.http_response.json()

    async def models(self) -> list[dict[str, Any]]:
        """The gateway's model list (OpenAI's /models shape)."""
        with self._typed_errors():
            reply = await self._client.models.with_raw_response.list()
        return list(reply.http_response.json().get("data") or [])

    async def aclose(self) -> None:
        await self._client.close()

    @contextlib.contextmanager
    def _typed_errors(self) -> Iterator[None]:
        """The openai client's errors as ours: an HTTP error as `_error` sorts it, a gateway
        that cannot be reached as `ProviderError`."""
        try:
            yield
        except openai.APIStatusError as exc:
            raise self._error(exc) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(
                f"the gateway at {self.base_url} could not be reached ({type(exc).__name__})"
            ) from None

    def _error(self, exc: openai.APIStatusError) -> Exception:
        """The gateway's HTTP error as our type: a refused key is `ConfigurationError`, another
        4xx the request's fault (`RequestRejected`, with the gateway's OpenAI fields and
        status), a 5xx, 408 or 429 the gateway's (`ProviderError`). Should the gateway echo
        the key, it is cut out."""
        status = exc.status_code
        error = exc.body if isinstance(exc.body, dict) else {}
        error = error.get("error", error) if isinstance(error.get("error"), dict) else error
        message = str(error.get("message") or exc.message or f"HTTP {status}")
        message = message.replace(self._key, "sk-***")
        if status in (401, 403):
            return ConfigurationError(
                f"the gateway refused the API key ({status}: {message}): "
                f"check api_key or {API_KEY_ENV}"
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
