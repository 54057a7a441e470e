"""Compare: one prompt on several providers at once, their speed, cost and answers side by side."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pandas as pd
import traitlets

from mor_workbench.errors import one_line
from mor_workbench.session import AsyncSession
from mor_workbench.widgets._base import MorWidget, asset, jsonable, records
from mor_workbench.workbench import AsyncWorkbench, Workbench

__all__ = ["Compare"]

UPDATE_EVERY_S = 0.1
METRICS = ["ttft_s", "tokens_per_s", "e2e_s", "completion_tokens", "cost_mor"]


class Compare(MorWidget):
    """Run `prompt` on the bids of `model` (all, the best `n` by score, or the given `bids`),
    one session per bid, all at once; each column fills in live with the answer, TTFT,
    tokens/s, end-to-end latency and cost. Sessions are closed when their answer is done
    (unless `keep_sessions`). `run()` (the Run button) asks again, with the prompt as edited.
    """

    _esm = asset("common.js", "compare.js")
    _css = asset("widgets.css")

    prompt = traitlets.Unicode("").tag(sync=True)
    model = traitlets.Unicode("").tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        wb: Workbench | AsyncWorkbench,
        prompt: str = "",
        model: str = "",
        *,
        n: int | None = None,
        bids: list[str] | None = None,
        duration: str | int = "6m",
        keep_sessions: bool = False,
        start: bool = True,
        **params: Any,
    ) -> None:
        super().__init__(wb, prompt=prompt, model=model)
        self.n, self.only_bids = n, bids
        self.duration, self.keep_sessions, self.params = duration, keep_sessions, params
        self.opened: list[AsyncSession] = []  # the sessions kept open (keep_sessions=True)
        if start and prompt and model:
            self.run()

    def _actions(self) -> dict[str, Any]:
        return {"run": lambda msg: self.run(msg.get("prompt"))}

    def run(self, prompt: str | None = None) -> None:
        """Ask every chosen provider (again); returns at once, the columns fill in live."""
        if prompt is not None:
            self.prompt = str(prompt)
        if self.running:
            self.error = "a comparison is still running"
            return
        if not self.prompt.strip() or not self.model:
            self.error = "a comparison needs a prompt and a model"
            return
        self.running = True
        self._submit(self._run(self.prompt), f"comparing providers of {self.model}")

    def frame(self) -> pd.DataFrame:
        """The results so far as a DataFrame, one row per provider."""
        return pd.DataFrame(self.rows)

    # ----- on the loop -----
    async def _run(self, prompt: str) -> None:
        try:
            frame = await self._aio.bids(self.model)
            if self.only_bids:
                frame = frame[frame["id"].isin(self.only_bids)]
            frame = frame.sort_values("score", ascending=False, kind="stable")
            if self.n:
                frame = frame.head(self.n)
            chosen = records(frame, ["id", "provider", "provider_short", "price_per_hour", "score"])
            if not chosen:
                raise ValueError(f"{self.model!r} has no bids to compare")
            self.rows = [
                {**bid, "state": "opening", "text": "", "error": "", **dict.fromkeys(METRICS)}
                for bid in chosen
            ]
            await asyncio.gather(*(self._one(i, prompt) for i in range(len(chosen))))
            failed = sum(1 for r in self.rows if r["state"] == "failed")
            self.status = f"{len(self.rows) - failed} of {len(self.rows)} providers answered"
        finally:
            self.running = False

    def _update(self, index: int, **changes: Any) -> None:
        rows = list(self.rows)
        rows[index] = {**rows[index], **jsonable(changes)}
        self.rows = rows

    async def _one(self, index: int, prompt: str) -> None:
        bid_id = self.rows[index]["id"]
        session: AsyncSession | None = None
        started = time.monotonic()
        try:
            session = await self._aio.open_session(self.model, duration=self.duration, bid=bid_id)
            self._update(
                index, state="waiting", session_id=session.id, open_s=time.monotonic() - started
            )
            stream = session.stream(prompt, **self.params)
            stream.record.surface = "widget"  # as the budget ledger reports it
            last = 0.0
            async for _delta in stream:
                if time.monotonic() - last >= UPDATE_EVERY_S:
                    last = time.monotonic()
                    self._update(index, state="streaming", text=stream.text)
            info = stream.info
            self._update(
                index,
                state="done",
                text=stream.text,
                **{m: info.get(m) for m in METRICS},
            )
        except asyncio.CancelledError:
            self._update(index, state="stopped")
            raise
        except Exception as exc:
            self._update(index, state="failed", error=one_line(exc, 300))
        finally:
            if session is not None:
                if self.keep_sessions:
                    self.opened.append(session)
                else:
                    try:
                        await session.close()
                    except Exception as exc:  # journaled: the workbench closes it later
                        self._update(index, error=f"closing failed: {one_line(exc, 300)}")
