"""Run the async core from synchronous code, also inside Jupyter where a loop is already running.

One background thread owns an event loop; sync calls submit coroutines to it and wait. This is
how the sync `Workbench` reuses the async implementation instead of copying it.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Portal:
    """A private event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="mor-workbench", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal's loop and return its result (re-raising its error)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Portal.run called from the portal's own loop; await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code, one item per round trip to the loop."""
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None:
                self.run(closer())

    async def aiterate(self, agen: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate an async iterator living on the portal's loop from another running loop.

        If the caller is cancelled mid-step, the step is cancelled on the portal's loop, which
        unwinds the iterator there; if the caller stops between steps, the iterator is closed.
        """
        step = None
        try:
            while True:
                step = asyncio.run_coroutine_threadsafe(_anext(agen), self.loop)
                try:
                    item = await asyncio.wrap_future(step)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None and (step is None or not step.cancelled()):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(closer(), self.loop))


async def _anext(agen: AsyncIterator[T]) -> T:
    return await anext(agen)


_shared: Portal | None = None
_lock = threading.Lock()


def portal() -> Portal:
    """The process-wide portal, started on first use."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = Portal()
            atexit.register(_shared.loop.call_soon_threadsafe, _shared.loop.stop)
        return _shared
