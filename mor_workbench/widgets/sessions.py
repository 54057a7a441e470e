"""Sessions: the account's open sessions with countdowns and close buttons, on-hold stakes
with a withdraw button, and balances."""

from __future__ import annotations

import asyncio
from typing import Any

import traitlets

from mor_workbench.market.tables import short
from mor_workbench.widgets._base import MorWidget, asset, jsonable, records
from mor_workbench.workbench import AsyncWorkbench, Workbench

__all__ = ["Sessions"]

SESSION_COLUMNS = [
    "id",
    "id_short",
    "model",
    "provider",
    "provider_short",
    "stake",
    "price_per_second",
    "opened_at",
    "ends_at",
    "closed_at",
    "is_active",
]


class Sessions(MorWidget):
    """This account's sessions: the open ones count down to their end and can be closed
    (the unused stake comes back at once; the part used today is held until the next UTC
    midnight); on-hold stakes whose time has come can be withdrawn. `balance` holds ETH, MOR,
    staked and on-hold MOR.

    It reloads whenever a session of the same workbench is opened or closed, whichever
    surface did it (`wb.chat`, `%%mor`, a Chat widget, housekeeping; see
    `Workbench.on_sessions_changed`); `loaded` is True once the first load is done, so an
    empty table then says "no open sessions". `close_session(id)`, `withdraw()` and
    `refresh()` are what the buttons call.
    """

    _esm = asset("common.js", "sessions.js")
    _css = asset("widgets.css")

    sessions = traitlets.List().tag(sync=True)
    closed_count = traitlets.Int(0).tag(sync=True)
    balance = traitlets.Dict().tag(sync=True)
    chain_now = traitlets.Float(0.0).tag(sync=True)
    closing = traitlets.List(traitlets.Unicode()).tag(sync=True)
    loaded = traitlets.Bool(False).tag(sync=True)

    def __init__(self, wb: Workbench | AsyncWorkbench, **kwargs: Any) -> None:
        super().__init__(wb, **kwargs)
        if self._aio.address is None:
            self.error = "a read-only workbench has no sessions: connect with a key"
            return
        self._reload_pending = False
        self._follow_sessions(self._on_sessions_changed)
        self.refresh()

    def _on_sessions_changed(self, _event: str, _session_id: str) -> None:
        """Another surface opened or closed a session: reload (once for a burst of them)."""
        if not self._reload_pending:
            self._reload_pending = True
            self.refresh(quiet=True)

    def _actions(self) -> dict[str, Any]:
        return {
            "refresh": lambda _msg: self.refresh(quiet=True),
            "close": lambda msg: self.close_session(str(msg["id"])),
            "withdraw": lambda _msg: self.withdraw(),
        }

    def refresh(self, *, quiet: bool = False) -> None:
        """Reload sessions and balances in the background."""
        self._submit(self._load(), "loading sessions", quiet=quiet)

    def close_session(self, session_id: str) -> None:
        """Close one open session on chain (with the provider's receipt)."""
        self.closing = [*self.closing, session_id]
        self._submit(self._close(session_id), f"closing session {session_id[:10]}…")

    def withdraw(self) -> None:
        """Withdraw the on-hold stakes whose timelock has passed."""
        self._submit(self._withdraw(), "withdrawing released stakes")

    # ----- on the loop -----
    async def _load(self) -> None:
        self._reload_pending = False  # a change from now on needs another load
        aio = self._aio
        frame, balance, now, closable = await asyncio.gather(
            aio.sessions(), aio.balance(), aio.chain_time(), aio.closable()
        )
        if not frame.empty:
            frame = frame.assign(provider_short=frame["provider"].map(short))
        active = frame[frame["is_active"]] if not frame.empty else frame
        rows = records(active, SESSION_COLUMNS)
        for row in rows:
            row["closable"] = row["id"] in closable
        self.sessions = rows
        self.closed_count = len(frame) - len(active)
        self.balance = jsonable(balance)
        self.chain_now = float(now)
        self.loaded = True

    async def _close(self, session_id: str) -> None:
        try:
            await self._aio.close_session(session_id)
            self.status = f"closed session {session_id[:10]}…"
        finally:
            self.closing = [s for s in self.closing if s != session_id]
        await self._load()

    async def _withdraw(self) -> None:
        withdrawn = await self._aio.withdraw()
        await self._load()
        if withdrawn:
            self.status = f"withdrew {withdrawn:.6f} MOR"
        else:
            held = self.balance.get("mor_on_hold") or 0
            self.status = f"nothing released yet ({held:.6f} MOR still on hold)"
