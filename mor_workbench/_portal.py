"""Run the async core from synchronous code, also inside Jupyter where a loop is already running.

anyio's `BlockingPortal` owns an event loop in a daemon thread; sync calls submit coroutines to
it and wait. This is how the sync `Workbench` reuses the async implementation instead of
copying it. On top of anyio we add only iteration: an async iterator that lives on the
portal's loop, walked from sync code or from another running loop (a Jupyter kernel's).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
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
        """Run `coro` on the portal's loop and return its result (re-raising its error), in a
        copy of the caller's context: its contextvars (a `mor.budget`) hold there too."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Portal.run called from the portal's own loop; await instead")
        return self._portal.call(_await_in, coro, contextvars.copy_context())

    def run_interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        """`run`, except that Ctrl-C (KeyboardInterrupt) while waiting cancels `coro` on the
        loop once (a plain asyncio cancel, so its cleanup may await) and waits until it has
        unwound before re-raising: what it opened is closed before control returns."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Portal.run_interruptible called from the portal's own loop")
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        started: list[asyncio.Task[T]] = []

        def start() -> None:  # on the loop
            task = self.loop.create_task(coro)
            task.add_done_callback(lambda done: _settle(outcome, done))
            started.append(task)

        self.loop.call_soon_threadsafe(start)
        try:
            return outcome.result()
        except KeyboardInterrupt:  # callbacks run in order: start() has run before this one
            self.loop.call_soon_threadsafe(lambda: started[0].cancel())
            concurrent.futures.wait([outcome])
            raise

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
                context = contextvars.copy_context()  # the caller's, as in run()
                step = self._portal.start_task_soon(_await_in, _anext(agen), context)
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


def _settle(outcome: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    """Hand a finished task's outcome to a future another thread waits on."""
    if task.cancelled():
        outcome.cancel()
        outcome.set_running_or_notify_cancel()  # wakes concurrent.futures.wait() too
    elif task.exception() is not None:
        outcome.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        outcome.set_result(task.result())


async def _await(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


async def _await_in(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    """Await `coro` as a task in the caller's `context`, so the caller's contextvars (its
    active `mor.budget`, its surface label) hold on the portal's loop too."""
    return await asyncio.get_running_loop().create_task(coro, context=context)


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
