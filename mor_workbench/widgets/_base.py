"""What every widget shares: the workbench's loop, background jobs, one-line status and errors.

Callbacks from the browser never do the work themselves: they submit a coroutine to the loop
the router runs on and return at once, so the kernel stays free. Results come back by
reassigning traits from that loop (list and dict traits are replaced, never mutated).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import anywidget
import pandas as pd
import traitlets

from mor_workbench._portal import portal
from mor_workbench.errors import one_line
from mor_workbench.workbench import AsyncWorkbench, Workbench

SLOW_S = 3.0  # after this long a job says it is still waiting


def _static_dir() -> Path:
    """Where the front-end sources are: static/ inside an installed wheel (hatch copies the
    repository's widgets/ there), else widgets/ at the top of a source checkout."""
    here = Path(__file__).parent
    shipped = here / "static"
    return shipped if shipped.is_dir() else here.parents[1] / "widgets"


STATIC = _static_dir()


def asset(*names: str) -> str:
    """Front-end sources by file name; ES modules are joined, shared helpers first, because
    anywidget loads one module per widget and cannot resolve relative imports."""
    return "\n".join((STATIC / name).read_text(encoding="utf-8") for name in names)


def jsonable(value: Any) -> Any:
    """A value the front end can take: timestamps as epoch seconds, NaN/NaT as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return None if pd.isna(value) else value.timestamp()
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)  # wei amounts stay exact
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts."""
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    return [jsonable(row) for row in frame.to_dict("records")]


class MorWidget(anywidget.AnyWidget):
    """Base of the workbench widgets: `status` says what is going on (or what is slow),
    `error` holds the last failure as one line; both are shown in the widget."""

    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, wb: Workbench | AsyncWorkbench, **kwargs: Any) -> None:
        if isinstance(wb, Workbench):
            self._aio, self._loop = wb.aio, wb._portal.loop
        elif isinstance(wb, AsyncWorkbench):
            try:  # an async workbench lives on the loop that made it (the kernel's)
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = portal().loop
            self._aio = wb
        else:
            raise TypeError(f"pass a workbench from mor.connect(...), not {type(wb).__name__}")
        self._jobs: dict[concurrent.futures.Future[Any], dict[str, asyncio.Task[Any]]] = {}
        self._jobs_lock = threading.Lock()
        self.last_exception: BaseException | None = None  # the details behind `error`
        self._unsubscribe: list[Callable[[], None]] = []  # let go of these on close
        super().__init__(**kwargs)
        self.on_msg(self._on_msg)

    # ----- messages from the browser -----
    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return
        handler = self._actions().get(content["type"])
        if handler is not None:
            try:
                handler(content)
            except Exception as exc:  # a bad request is shown, never raised into the kernel
                self._fail(content["type"], exc)

    def _actions(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {}

    def _follow_sessions(self, callback: Callable[[str, str], None]) -> None:
        """Have `callback(event, session_id)` told, on the workbench's loop, whenever any
        surface of this workbench opens or closes a session (until the widget closes)."""
        self._unsubscribe.append(self._aio.on_sessions_changed(callback))

    # ----- background jobs -----
    def _submit(
        self, coro: Coroutine[Any, Any, Any], what: str, *, quiet: bool = False
    ) -> concurrent.futures.Future[Any]:
        """Run `coro` on the workbench's loop; never blocks. `what` names it in the status
        line (e.g. "loading the market") while it runs, after SLOW_S as slow, and in the
        error line if it fails."""
        slot: dict[str, asyncio.Task[Any]] = {}
        future = asyncio.run_coroutine_threadsafe(self._guard(coro, what, quiet, slot), self._loop)
        with self._jobs_lock:
            self._jobs[future] = slot
            self.busy = True
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._jobs_lock:
            self._jobs.pop(future, None)
            if not self._jobs:
                self.busy = False

    def _cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel a job; it is done once its coroutine has wound up (so `wait` waits for
        that, and the widget shows what the job left)."""
        with self._jobs_lock:
            task = self._jobs.get(future, {}).get("task")
        if task is None:
            future.cancel()  # not started yet
        else:
            self._loop.call_soon_threadsafe(task.cancel)

    async def _guard(
        self,
        coro: Coroutine[Any, Any, Any],
        what: str,
        quiet: bool,
        slot: dict[str, asyncio.Task[Any]],
    ) -> Any:
        task = asyncio.current_task()
        if task is not None:
            slot["task"] = task
        try:
            if quiet:  # the job reports its own steps
                return await coro
            self.error = ""
            async with self._step(what):
                return await coro
        except asyncio.CancelledError:
            self.status = f"{what}: stopped"
            raise
        except Exception as exc:
            self._fail(what, exc)
            return None

    @contextlib.asynccontextmanager
    async def _step(self, what: str) -> AsyncIterator[None]:
        """Show `what…` in the status line while the block runs and, once it has taken
        SLOW_S, how long it has been waiting; the line is cleared when the block ends."""
        self.status = f"{what}…"
        watchdog = asyncio.ensure_future(self._watch(what, time.monotonic()))
        try:
            yield
        finally:
            watchdog.cancel()
            if self.status.startswith(what):
                self.status = ""

    async def _watch(self, what: str, started: float) -> None:
        await asyncio.sleep(SLOW_S)
        while self.status.startswith(what):  # until a later step or job takes the line
            self.status = f"{what}… still waiting ({time.monotonic() - started:.0f} s)"
            await asyncio.sleep(1.0)

    def _fail(self, what: str, exc: BaseException) -> None:
        self.last_exception = exc
        self.error = f"{what} failed: {one_line(exc, 300)}"
        if self.status.startswith(what):
            self.status = ""

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the widget's background work is done (for scripts and tests; a
        notebook does not need it). Raises TimeoutError when it takes longer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._jobs_lock:
                pending = list(self._jobs)
            if not pending:
                return
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done, _ = concurrent.futures.wait(pending, timeout=left)
            if deadline is not None and time.monotonic() >= deadline and len(done) < len(pending):
                raise TimeoutError(f"{type(self).__name__} still busy after {timeout} s")

    def close(self) -> None:
        """Stop the widget's background work and close it."""
        for unsubscribe in getattr(self, "_unsubscribe", ()):
            unsubscribe()
        lock = getattr(self, "_jobs_lock", None)  # unset when __init__ refused the arguments
        if lock is not None:
            with lock:
                pending = list(self._jobs)
            for future in pending:
                self._cancel(future)
        super().close()
