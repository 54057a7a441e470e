"""Batch work: one prompt per row of a list, a Series or a DataFrame, answered by `k`
marketplace sessions in parallel (`wb.map`).

Each of the `k` workers holds one session and sends one request at a time (a provider answers
one request per session at a time). The first sessions go to different providers, in the
strategy's order; a provider that fails a row is failed over by the router (`run_call`), and a
worker whose session was closed opens a new one with the best provider left. Sessions are
sized to the expected run time (`session_duration`), renewed if they end early, and all
closed when the run ends, fails or is cancelled.

A checkpoint file (JSON lines, one per answered row, fsync'd) makes a run resumable: rows
already answered there, keyed by their index label and the SHA-256 of their prompt, are not
asked (nor paid for) again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import string
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd
from tqdm.auto import tqdm

from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.listings import resolve_model
from mor_workbench.errors import (
    ConfigurationError,
    InsufficientFunds,
    MorError,
    NoProviderAvailable,
    ProtocolError,
    ProviderError,
    RequestError,
    one_line,
)
from mor_workbench.router.calls import CallRecord, Lease
from mor_workbench.router.peer import deposit_for
from mor_workbench.router.router import RankedBid, Router
from mor_workbench.session import AsyncChatStream, AsyncSession, stream_body

__all__ = ["COLUMNS", "Checkpoint", "MapRun", "batch_prompts", "session_duration"]

COLUMNS = ["answer", "provider", "tokens", "cost_mor", "failovers", "error"]
"""The columns of `wb.map`'s result, in order."""

DEFAULT_ANSWER_TOKENS = 512
"""Tokens an answer is expected to run to when the call sets no `max_tokens` (sizes sessions)."""
FALLBACK_SECONDS_PER_ROW = 10.0
"""Expected seconds per row when no provider of the model has speed stats on chain yet."""
DURATION_HEADROOM = 1.25
"""Sessions are sized to the expected run time times this (a slow row renews, costing a tx)."""

log = logging.getLogger(__name__)

_ROW_FAILURES = (RequestError, ProviderError, NoProviderAvailable, ProtocolError)
"""What fails one row and lets the run go on: the request's fault (it is recorded as the row's
error) or the providers' (the router already failed over). Anything else (no funds, the chain
unreachable) stops the run."""


def batch_prompts(
    prompts: Sequence[str] | pd.Series | pd.DataFrame, template: str | None
) -> tuple[pd.Index, list[str]]:
    """The index and the prompt of each row: a list or a Series of strings as they are, a
    DataFrame's rows through `template` ("Summarise {text} for {audience}", fields naming
    columns). Raises `ConfigurationError` (before anything is sent) naming what is wrong."""
    if isinstance(prompts, pd.DataFrame):
        if template is None:
            raise ConfigurationError(
                "a DataFrame needs a template over its columns, e.g. "
                "template='Summarise {text}' (or pass one column: df['text'])"
            )
        return prompts.index, _render(prompts, template)
    if template is not None:
        raise ConfigurationError(
            "template= fills in a DataFrame's columns: pass a DataFrame "
            "(a Series s becomes one with s.to_frame('text'))"
        )
    if isinstance(prompts, pd.Series):
        index, values = prompts.index, prompts.tolist()
    elif isinstance(prompts, list | tuple):
        index, values = pd.RangeIndex(len(prompts)), list(prompts)
    else:
        raise ConfigurationError(
            f"map() takes a list or a pandas Series of prompts, or a DataFrame with a "
            f"template, not a {type(prompts).__name__}"
        )
    for label, value in zip(index, values, strict=True):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"row {label!r} has no prompt ({value!r}): every row needs a non-empty string "
                "(drop or fill the empty rows first, e.g. s.dropna())"
            )
    return index, values


def _render(frame: pd.DataFrame, template: str) -> list[str]:
    """`template` filled in from each row of `frame`."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigurationError(f"template {template!r} cannot be read: {exc}") from None
    columns = {str(c) for c in frame.columns}
    for field in fields:
        column = field.split(".")[0].split("[")[0]
        if not column or column.isdigit():
            raise ConfigurationError(
                f"template {template!r} has a positional field {{{field}}}: name a column, "
                "e.g. {text}"
            )
        if column not in columns:
            raise ConfigurationError(
                f"template field {{{column}}} is not a column: the DataFrame has "
                f"{', '.join(sorted(columns))}"
            )
    records = frame.rename(columns=str).to_dict("records")
    return [template.format_map(record) for record in records]


def row_key(label: Any, prompt: str) -> str:
    """A row's checkpoint key: its index label (as JSON) and the SHA-256 of its prompt, so a
    row whose prompt changed (another template) is asked again."""
    if hasattr(label, "item"):  # numpy scalars: the same key as the Python value
        label = label.item()
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    return json.dumps([label, digest], default=str)


class Checkpoint:
    """A JSON-lines file of answered rows: `done()` reads it (a line cut short by a kill is
    skipped), `append` adds one row and fsyncs before returning, so a row written is never
    asked again after a crash."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def done(self) -> dict[str, dict[str, Any]]:
        """The rows answered so far, by key."""
        found: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return found
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:  # the last line of a killed run
                    continue
                if isinstance(row, dict) and isinstance(row.get("key"), str):
                    found[row["key"]] = row
        return found

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (a dict with its "key") and fsync; blocking (call it off the loop)."""
        line = json.dumps(row, default=str) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
                if self._file.tell() and not self._ends_with_newline():
                    self._file.write("\n")  # after a line cut short, start a fresh one
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as raw:
            raw.seek(-1, os.SEEK_END)
            return raw.read(1) == b"\n"

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


async def session_duration(
    chain: Chain, model_id: bytes, bids: list[RankedBid], rows: int, concurrency: int, tokens: int
) -> int:
    """Seconds each of `concurrency` sessions should last to answer `rows` rows of about
    `tokens` tokens each: rows per session x expected seconds per row (mean TTFT plus
    `tokens` at the mean tokens/s of the model's providers, from their stats on chain;
    `FALLBACK_SECONDS_PER_ROW` without stats) x `DURATION_HEADROOM`, within the contract's
    MIN_SESSION_DURATION and getMaxSessionDuration()."""
    providers = sorted({b.provider for b in bids})
    reads = [Call("MIN_SESSION_DURATION"), Call("getMaxSessionDuration")]
    reads += [Call("getProviderModelStats", (model_id, p)) for p in providers]
    shortest, longest, *stats = await chain.read_many(reads)
    speeds = [s["tpsScaled1000"]["mean"] / 1000 for s in stats if s["tpsScaled1000"]["mean"]]
    ttfts = [s["ttftMs"]["mean"] / 1000 for s in stats if s["ttftMs"]["mean"]]
    per_row = FALLBACK_SECONDS_PER_ROW
    if speeds:
        per_row = (sum(ttfts) / len(ttfts) if ttfts else 0.0) + tokens * len(speeds) / sum(speeds)
    wanted = math.ceil(math.ceil(rows / concurrency) * per_row * DURATION_HEADROOM)
    return int(min(max(wanted, shortest), longest))


@dataclass
class _Row:
    position: int
    label: Any
    prompt: str
    key: str


class MapRun:
    """One `wb.map` run (see `AsyncWorkbench.map` for what it takes and returns)."""

    def __init__(
        self,
        router: Router,
        model: str,
        prompts: Sequence[str] | pd.Series | pd.DataFrame,
        *,
        template: str | None = None,
        concurrency: int = 8,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        system: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
        max_failovers: int = 2,
        params: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigurationError(
                f"concurrency={concurrency!r} is not a number of sessions: pass e.g. concurrency=8"
            )
        params = dict(params or {})
        if "stream" in params or "stream_options" in params:
            raise ConfigurationError("map() streams each answer itself: leave out stream=")
        self.router = router
        self.model = model
        self.index, prompts_list = batch_prompts(prompts, template)
        self.rows = [
            _Row(i, label, prompt, row_key(label, prompt))
            for i, (label, prompt) in enumerate(zip(self.index, prompts_list, strict=True))
        ]
        keys = [r.key for r in self.rows]
        if checkpoint is not None and len(set(keys)) != len(keys):
            raise ConfigurationError(
                "two rows share an index label and a prompt, so a checkpoint cannot tell them "
                "apart: give the rows unique labels (e.g. reset_index(drop=True))"
            )
        self.concurrency = concurrency
        self.checkpoint = Checkpoint(checkpoint) if checkpoint is not None else None
        self.progress = progress
        self.system = system
        self.timeout = timeout
        self.deadline = deadline
        self.max_failovers = max_failovers
        self.params = params
        self.results: list[dict[str, Any] | None] = [None] * len(self.rows)
        self.sessions: list[AsyncSession] = []  # one per worker that opened one
        self.spent_mor = 0.0

    async def run(self) -> pd.DataFrame:
        """Answer every row not yet in the checkpoint; the result frame, aligned with the
        input's index. Every session opened is closed before it returns or raises."""
        done = await asyncio.to_thread(self.checkpoint.done) if self.checkpoint else {}
        todo: deque[_Row] = deque()
        for row in self.rows:
            if row.key in done:
                self.results[row.position] = done[row.key]
            else:
                todo.append(row)
        bar = tqdm(
            total=len(self.rows),
            initial=len(self.rows) - len(todo),
            desc=f"map {self.model}",
            unit="row",
            disable=not self.progress,
        )
        try:
            if todo:
                await self._answer(todo, bar)
        finally:
            bar.close()
            if self.checkpoint:
                self.checkpoint.close()
        return self.frame()

    async def _answer(self, todo: deque[_Row], bar: Any) -> None:
        model_id, _ = await resolve_model(self.router.chain, self.model)
        preferred = _one_per_provider(await self.router.candidates(self.model))
        if not preferred:
            raise NoProviderAvailable(self.model, [], "no bid passes the strategy's filters")
        workers = min(self.concurrency, len(todo))
        params = self.params
        tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        tokens = int(tokens or DEFAULT_ANSWER_TOKENS)
        chain = self.router.chain
        duration_s = await session_duration(chain, model_id, preferred, len(todo), workers, tokens)
        await self._check_funds(preferred, workers, duration_s)
        tasks = [
            asyncio.create_task(self._work(todo, bar, preferred[slot % len(preferred)], duration_s))
            for slot in range(workers)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:  # done, failed (the first error is raised as it is) or cancelled
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_sessions()

    async def _check_funds(self, bids: list[RankedBid], workers: int, duration_s: int) -> None:
        """`InsufficientFunds` before any session opens when the stake of the `workers` first
        sessions (on `bids` in turn, by the contract's maths: `deposit_for`) is more MOR than
        the account holds: a run that could open only some of them would be refused halfway."""
        chain = self.router.chain
        deposits = {
            b.price_per_second: await deposit_for(chain, b.price_per_second, duration_s)
            for b in bids[:workers]
        }
        needed = sum(deposits[bids[slot % len(bids)].price_per_second] for slot in range(workers))
        held = await chain.call("balanceOf", self.router.signer.address, to=chain.deployment.token)
        if held < needed:
            raise InsufficientFunds(
                "MOR", needed, held, f"{workers} sessions of {duration_s} s (concurrency={workers})"
            )

    async def _work(
        self, todo: deque[_Row], bar: Any, first_bid: RankedBid, duration_s: int
    ) -> None:
        """One worker: its own session, one row at a time, until no row is left."""
        session: AsyncSession | None = None
        while todo:
            row = todo.popleft()
            try:
                if session is None or session.closed:
                    session = await self._open(first_bid if session is None else None, duration_s)
                result = await self._ask(session, row)
            except _ROW_FAILURES as exc:
                result = {"error": f"{type(exc).__name__}: {one_line(exc)}"}
            self.results[row.position] = result
            self.spent_mor += result.get("cost_mor") or 0.0
            if self.checkpoint and result.get("error") is None:
                await asyncio.to_thread(self.checkpoint.append, result)
            bar.set_postfix_str(f"spent {self.spent_mor:.6g} MOR", refresh=False)
            bar.update(1)

    async def _open(self, bid: RankedBid | None, duration_s: int) -> AsyncSession:
        """A session on `bid` (a worker's first, to spread over providers) or, when that
        provider will not open one or for a later session, with the best provider left."""
        opened = None
        if bid is not None:
            with contextlib.suppress(NoProviderAvailable):
                opened = await self.router.open(self.model, duration_s, bid=bid.bid_id)
        if opened is None:
            opened = await self.router.open(self.model, duration_s)
        lease = Lease(self.model, duration_s, False, opened, True, self.max_failovers)
        session = AsyncSession(self.router, lease, timeout=self.timeout, deadline=self.deadline)
        self.sessions.append(session)
        return session

    async def _ask(self, session: AsyncSession, row: _Row) -> dict[str, Any]:
        body = stream_body(self.model, row.prompt, self.system, self.params)
        record = CallRecord(self.model)
        stream = AsyncChatStream(session.payloads(body, record), record)
        answer = "".join([delta async for delta in stream])
        return {
            "key": row.key,
            "answer": answer,
            "provider": record.provider,
            "tokens": record.completion_tokens,
            "cost_mor": record.cost_mor,
            "failovers": len(record.failovers),
            "error": None,
        }

    async def _close_sessions(self) -> None:
        """Close what the run opened (also on error or cancellation): each worker's current
        session now, and wait for the closes failovers started in the background."""
        closes = await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
        for failed in (c for c in closes if isinstance(c, BaseException)):
            if not isinstance(failed, MorError):
                raise failed
            log.warning("session left for the next start to close: %s", one_line(failed))
        await self.router.wait_for_closes()

    def frame(self) -> pd.DataFrame:
        """The results so far: one row per input row, in its order and with its index."""
        rows = [{c: (r or {}).get(c) for c in COLUMNS} for r in self.results]
        frame = pd.DataFrame(rows, columns=COLUMNS, index=self.index)
        frame["tokens"] = frame["tokens"].astype("Int64")
        frame["failovers"] = frame["failovers"].astype("Int64")
        frame["cost_mor"] = frame["cost_mor"].astype(float)
        return frame


def _one_per_provider(bids: list[RankedBid]) -> list[RankedBid]:
    """The first bid of each provider, in the given order."""
    seen: set[str] = set()
    kept = []
    for bid in bids:
        if bid.provider.lower() not in seen:
            seen.add(bid.provider.lower())
            kept.append(bid)
    return kept
