"""Run the async core from synchronous code, also inside Jupyter where a loop is already running.

anyio's `BlockingPortal` owns an event loop in a daemon thread; sync calls submit coroutines to
it and wait. This is how the sync `Workbench` reuses the async implementation instead of
copying it. On top of anyio we add only iteration: an async iterator that lives on the
portal's loop, walked from sync code or from another running loop (a Jupyter kernel's).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")


class Portal:
    """A private event loop in a daemon thread (anyio's blocking portal on asyncio)."""

    def __init__(self) -> None:
        self._context: AbstractContextManager[BlockingPortal] = start_blocking_portal("asyncio")
        self._portal = self._context.__enter__()
        self.loop: asyncio.AbstractEventLoop = self._portal.call(asyncio.get_running_loop)
        self._thread = self._portal.call(threading.current_thread)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal's loop and return its result (re-raising its error)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Portal.run called from the portal's own loop; await instead")
        return self._portal.call(_await, coro)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the portal's loop from another running loop (a Jupyter kernel's);
        cancelling the caller cancels it where it runs."""
        return await asyncio.wrap_future(self._portal.start_task_soon(_await, coro))

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code, one item per round trip to the loop."""
        try:
            while True:
                try:
                    yield self.run(_anext(agen))
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
                step = self._portal.start_task_soon(_anext, agen)
                try:
                    item = await asyncio.wrap_future(step)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None and (step is None or not step.cancelled()):
                await asyncio.wrap_future(self._portal.start_task_soon(_await, closer()))

    def stop(self) -> None:
        """Stop the loop (at interpreter exit)."""
        self._context.__exit__(None, None, None)


async def _await(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


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
            atexit.register(_shared.stop)
        return _shared
