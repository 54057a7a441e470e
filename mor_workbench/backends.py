"""Where a workbench's calls go: the marketplace (sessions over our router) or the hosted
gateway (over the openai client). Two implementations of one small interface; `Workbench`
holds one and never asks which.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pandas as pd

from mor_workbench.errors import ConfigurationError, MorError
from mor_workbench.router.calls import CallRecord, embeddings_request
from mor_workbench.router.gateway import Gateway
from mor_workbench.router.peer import check_prompt_fits
from mor_workbench.router.router import Router

__all__ = ["OWNED_BY", "Backend", "GatewayBackend", "MarketplaceBackend"]

OWNED_BY = "morpheus"  # `owned_by` of the OpenAI model objects we list


class Backend(Protocol):
    """What answers a workbench's calls."""

    def payloads(self, body: dict[str, Any], record: CallRecord) -> AsyncIterator[dict[str, Any]]:
        """The raw OpenAI chunks (body["stream"]) or the completion for an OpenAI body."""
        ...

    async def embeddings(self, body: dict[str, Any], record: CallRecord) -> dict[str, Any]:
        """The `CreateEmbeddingResponse` JSON for an OpenAI embeddings request body."""
        ...

    @property
    def router(self) -> Router:
        """The router holding this account's sessions; `ConfigurationError` where there are
        none of our own (the gateway holds them)."""
        ...

    async def model_cards(self) -> list[dict[str, Any]]:
        """The models it serves, as OpenAI model objects."""
        ...

    async def recover(self) -> dict[str, int]:
        """Settle what an earlier process left (nothing for the gateway)."""
        ...

    def closable(self) -> list[str]:
        """Ids (0x hex) of the sessions this account can close from here."""
        ...

    def describe(self) -> str:
        """What it is, for the workbench's repr (never a secret)."""
        ...

    async def aclose(self) -> None:
        """Close what it opened and let go of its connections."""
        ...


class MarketplaceBackend:
    """Calls go through sessions of our own on the marketplace: `session_for(model, purpose)`
    gives the workbench's automatic session ("chat" or "embeddings": what the model must be
    for), `make_router()` builds the router on first use."""

    def __init__(
        self,
        *,
        make_router: Callable[[], Router],
        session_for: Callable[..., Awaitable[Any]],
        models: Callable[[], Awaitable[pd.DataFrame]],
        describe: Callable[[], str],
    ) -> None:
        self._make_router = make_router
        self._session_for = session_for
        self._models = models
        self._describe = describe
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = self._make_router()
        return self._router

    async def payloads(
        self, body: dict[str, Any], record: CallRecord
    ) -> AsyncIterator[dict[str, Any]]:
        check_prompt_fits(body)  # before a session is opened for a request no provider can read
        session = await self._session_for(body["model"])
        async for payload in session.payloads(body, record):
            yield payload

    async def embeddings(self, body: dict[str, Any], record: CallRecord) -> dict[str, Any]:
        request = embeddings_request(body)
        check_prompt_fits(request)  # before a session is opened for it
        session = await self._session_for(body["model"], "embeddings")
        payloads = [payload async for payload in session.payloads(request, record)]
        return payloads[-1]

    async def model_cards(self) -> list[dict[str, Any]]:
        frame = await self._models()
        cards: dict[str, dict[str, Any]] = {}
        for name, created in zip(frame["name"], frame["created_at"], strict=True):
            stamp = 0 if pd.isna(created) else int(created.timestamp())
            card = {"id": name, "object": "model", "created": stamp, "owned_by": OWNED_BY}
            cards.setdefault(name, card)  # two models may share a name: list it once
        return list(cards.values())

    async def recover(self) -> dict[str, int]:
        try:
            return await self.router.recover()
        except ConfigurationError:  # read-only: nothing of ours to settle
            return {}
        except MorError as exc:
            warnings.warn(f"could not settle earlier sessions yet: {exc}", stacklevel=3)
            return {}

    def closable(self) -> list[str]:
        try:
            router = self.router
        except ConfigurationError:  # read-only
            return []
        return ["0x" + session_id.hex() for session_id in router.closable()]

    def describe(self) -> str:
        return self._describe()

    async def aclose(self) -> None:
        if self._router is None:
            return
        await self._router.drain()
        for opened in list(self._router.opened.values()):
            try:
                await self._router.close(opened)
            except MorError as exc:  # journaled: the next connect closes it
                warnings.warn(f"session left for the next start: {exc}", stacklevel=3)


class GatewayBackend:
    """Calls go to the hosted API gateway, which holds the sessions and bills in credits."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def router(self) -> Router:
        raise ConfigurationError(
            "gateway mode has no sessions of its own (the gateway holds them): "
            "use chat/stream/complete, or connect to a network with a key"
        )

    async def payloads(
        self, body: dict[str, Any], record: CallRecord
    ) -> AsyncIterator[dict[str, Any]]:
        record.provider = "gateway"
        async for payload in self.gateway.payloads(body):
            record.observe(payload)
            yield payload
        record.finished = time.monotonic()

    async def embeddings(self, body: dict[str, Any], record: CallRecord) -> dict[str, Any]:
        record.provider = "gateway"
        answer = await self.gateway.embeddings(body)
        record.observe(answer)
        record.finished = time.monotonic()
        return answer

    async def model_cards(self) -> list[dict[str, Any]]:
        return await self.gateway.models()  # the gateway's own list: it is what answers

    async def recover(self) -> dict[str, int]:
        return {}

    def closable(self) -> list[str]:
        return []

    def describe(self) -> str:
        return f"gateway {self.gateway.base_url}"

    async def aclose(self) -> None:
        await self.gateway.aclose()
