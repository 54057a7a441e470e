"""A marketplace session as the user sees it: chat and stream through one provider, then close.

`AsyncSession` holds the logic; `Session` is its synchronous twin on the workbench's loop.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from mor_workbench._portal import Portal
from mor_workbench.errors import ConfigurationError
from mor_workbench.router.router import OpenSession, Router

__all__ = ["AsyncSession", "Session", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> int:
    """Seconds from 600, "90s", "10m", "2h" or "1d"; a clear error otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match:
            return int(float(match[1]) * _UNITS[match[2] or "s"])
    raise ConfigurationError(f"duration {value!r} is not understood: use e.g. 600, '10m' or '2h'")


def _messages(prompt: str | list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return ([{"role": "system", "content": system}] if system else []) + messages


class AsyncSession:
    """An open session with one provider, for one model."""

    def __init__(self, router: Router, opened: OpenSession, model: str) -> None:
        self._router = router
        self.opened = opened
        self.model = model
        self.closed = False

    @property
    def id(self) -> str:
        return "0x" + self.opened.session_id.hex()

    @property
    def provider(self) -> str:
        return self.opened.provider

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"ends {self.ends_at:%H:%M:%S} UTC"
        return f"<Session {self.id[:10]}… {self.model} via {self.provider[:10]}… {state}>"

    @property
    def ends_at(self) -> datetime:
        return datetime.fromtimestamp(self.opened.ends_at, UTC)

    def info(self) -> dict[str, Any]:
        """What this session is: id, model, provider, endpoint, end time, state."""
        return {
            "id": self.id,
            "model": self.model,
            "provider": self.provider,
            "endpoint": self.opened.endpoint,
            "ends_at": self.ends_at,
            "encrypted_prompts": self.opened.encrypt,
            "closed": self.closed,
        }

    async def stream(
        self, prompt: str | list[dict[str, Any]], *, system: str | None = None, **params: Any
    ) -> AsyncIterator[str]:
        """Text deltas of the answer as they arrive (OpenAI parameters pass through)."""
        if self.closed:
            raise ConfigurationError("this session is closed: open a new one")
        body = {
            "model": self.model,
            "messages": _messages(prompt, system),
            **params,
            "stream": True,
        }
        async for chunk in self._router.stream(self.opened, body):
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    async def chat(
        self, prompt: str | list[dict[str, Any]], *, system: str | None = None, **params: Any
    ) -> str:
        """The whole answer as one string."""
        return "".join([d async for d in self.stream(prompt, system=system, **params)])

    async def close(self) -> None:
        """Close on chain with the provider's receipt (the stake comes back)."""
        if not self.closed:
            await self._router.close(self.opened)
            self.closed = True

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Session:
    """Synchronous twin of `AsyncSession`."""

    def __init__(self, inner: AsyncSession, portal: Portal) -> None:
        self._inner = inner
        self._portal = portal

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def aio(self) -> AsyncSession:
        return self._inner

    def info(self) -> dict[str, Any]:
        return self._inner.info()

    def stream(self, prompt: str | list[dict[str, Any]], **params: Any) -> Iterator[str]:
        return self._portal.iterate(self._inner.stream(prompt, **params))

    def chat(self, prompt: str | list[dict[str, Any]], **params: Any) -> str:
        return self._portal.run(self._inner.chat(prompt, **params))

    def close(self) -> None:
        self._portal.run(self._inner.close())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
