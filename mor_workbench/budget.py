"""Spend control: a budget around any code, whichever surface makes the calls.

    with mor.budget(max_mor=5, per_call=0.05, max_sessions=3) as b:
        wb.chat("Hi", model="llama-3.3-70b")      # also ChatMorpheus, %%mor, widgets, serve
    b.spent, b.held, b.report()

What a budget counts, in MOR (floats; the exact wei in `spent_wei`, `held_wei`):

- `held`: the stake of the sessions opened inside it that are still open. An open moves the
  stake from the wallet (quoted to the wei by `wb.quote`); a close returns the unused part at
  once and the contract holds the part used today until the next UTC midnight (see README
  "Closing"); the budget stops counting a session's stake when it closes.
- `spent`: what the calls made inside it used, each call's session seconds at the bid's price
  (`CallRecord.cost_mor`): paid from the stake in direct-payment mode, from the protocol's
  compute budget in staking mode.

Caps (None: no cap): `max_mor` bounds `held + spent`; `per_call` bounds one call's spend;
`max_sessions` bounds the sessions opened inside it (failovers and renewals included). A
session whose stake would cross `max_mor`, or one session too many, is refused before any
money moves (`BudgetExceeded`, with the figures); a stream whose spend crosses `max_mor` or
`per_call` is stopped and its session closed on chain. A whole (non-streamed) completion is
charged when it arrives (it cannot be stopped half-way), and a call made once the budget is
spent is refused before it starts. The checks are the router's own hooks
(`Router.spend_guard`) and the session's call metering, which every surface goes through.

Which budget is active: the innermost `with`/`async with` in the current context (a
contextvar, so each asyncio task and thread sees its own; the workbench's sync twin carries the
caller's into its event loop), else the process-wide one set by `activate()` (`%mor budget 5`,
`mor-workbench serve --budget 5`), which also covers widgets and serve. Budgets nest: every
charge counts in the budget and all its outer ones, and an inner cap may not exceed its outer
one (a cap the inner one leaves out is still the outer's). A Python thread starts with an
empty context: enter the same budget in it (`with b:`) to share one budget between threads;
the ledger is locked.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from mor_workbench.errors import BudgetExceeded, ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Budget", "BudgetExceeded", "active", "budget", "paying", "session_closed"]

WEI_PER_MOR = 10**18
_CAPS = ("max_mor", "per_call", "max_sessions")

_ACTIVE: ContextVar[Budget | None] = ContextVar("mor_workbench_budget", default=None)
# the contextvar tokens of the `with` blocks entered in this context, innermost last
_ENTERED: ContextVar[tuple[Token[Budget | None], ...]] = ContextVar(
    "mor_workbench_budgets_entered", default=()
)
_process: Budget | None = None  # activate(): every thread and task without a `with` of its own
_ledger = threading.RLock()  # one lock for every ledger: a charge updates a budget and its outers
_holding: weakref.WeakSet[Budget] = weakref.WeakSet()  # budgets holding open sessions


def active() -> Budget | None:
    """The budget calls made here count in: the innermost `with` in this context, else the
    process-wide one (`Budget.activate`), else None."""
    return _ACTIVE.get() or _process


def _amount(name: str, value: float | int | None, *, whole: bool = False) -> float | int | None:
    if value is None:
        return None
    kind = "a whole number of sessions" if whole else "an amount of MOR"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        raise ConfigurationError(f"budget {name}={value!r} is not {kind}: pass e.g. {name}=5")
    if value < 0 or value != value:
        raise ConfigurationError(f"budget {name}={value!r} is negative: pass e.g. {name}=5")
    return value


class Budget:
    """Caps on what the calls made inside it may commit; its ledger. See the module's doc for
    what is counted and how. Use `with`/`async with` (nestable), or `activate()` for the whole
    process. Raises `ConfigurationError` for a cap that is not a non-negative amount, or an
    inner cap above its outer one."""

    def __init__(
        self,
        max_mor: float | None = None,
        per_call: float | None = None,
        max_sessions: int | None = None,
    ) -> None:
        self.max_mor = _amount("max_mor", max_mor)
        self.per_call = _amount("per_call", per_call)
        self.max_sessions = _amount("max_sessions", max_sessions, whole=True)
        self.outer: Budget | None = None
        self.spent_wei = 0
        self.sessions = 0  # opened inside it (failovers and renewals count)
        self._held: dict[bytes, int] = {}  # stake (wei) of its open sessions, by session id
        self._reserved_wei = 0  # stakes of opens under way
        self._calls: list[dict[str, Any]] = []

    # ----- the ledger -----
    @property
    def spent(self) -> float:
        """MOR the calls made inside used (see the module's doc)."""
        return self.spent_wei / WEI_PER_MOR

    @property
    def held_wei(self) -> int:
        with _ledger:
            return sum(self._held.values())

    @property
    def held(self) -> float:
        """MOR staked in the sessions opened inside and still open."""
        return self.held_wei / WEI_PER_MOR

    def report(self) -> pd.DataFrame:
        """One row per call made inside (inner budgets' calls too): `surface`, `model`,
        `provider`, `session_id`, `tokens` (completion), `prompt_tokens`, `mor` (its spend),
        `seconds`, `outcome` ("ok", "stopped by the budget", or the error) and `at` (UTC)."""
        import pandas as pd

        columns = ["surface", "model", "provider", "session_id", "tokens", "prompt_tokens"]
        columns += ["mor", "seconds", "outcome", "at"]
        with _ledger:
            frame = pd.DataFrame(list(self._calls), columns=columns)
        frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
        return frame

    def __repr__(self) -> str:
        caps = ", ".join(f"{c}={getattr(self, c)}" for c in _CAPS if getattr(self, c) is not None)
        return (
            f"<Budget {caps or 'no caps'}: spent {self.spent:.6g} MOR, held {self.held:.6g} "
            f"MOR, {self.sessions} sessions, {len(self._calls)} calls>"
        )

    # ----- where it applies -----
    def _nest(self, outer: Budget | None) -> None:
        if outer is self or outer is None:
            return
        if self.outer is not None and self.outer is not outer:
            raise ConfigurationError(
                "this budget is already nested in another one: enter a new mor.budget(...) here"
            )
        for cap in _CAPS:
            inner, limit = getattr(self, cap), getattr(outer, cap)
            if limit is not None and inner is not None and inner > limit:
                raise ConfigurationError(
                    f"an inner budget's {cap}={inner} exceeds the outer budget's {limit}: "
                    f"pass {cap}={limit} or less"
                )
        self.outer = outer

    def __enter__(self) -> Budget:
        self._nest(active())
        _ENTERED.set((*_ENTERED.get(), _ACTIVE.set(self)))
        return self

    def __exit__(self, *exc: object) -> None:
        *rest, token = _ENTERED.get()
        _ENTERED.set(tuple(rest))
        _ACTIVE.reset(token)

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def activate(self) -> Budget:
        """Make this the process-wide budget: it covers every call without a `with` budget of
        its own, in any thread, and the widgets' and serve's calls (`%mor budget 5`,
        `serve --budget 5`). Replaces the previous one; `deactivate()` lifts it."""
        global _process
        with _ledger:
            _process = self
        return self

    def deactivate(self) -> None:
        """Stop being the process-wide budget (its ledger stays readable)."""
        global _process
        with _ledger:
            if _process is self:
                _process = None

    # ----- checks and charges (the workbench's hooks call these) -----
    def _chain(self) -> list[Budget]:
        chain, budget = [], self
        while budget is not None:
            chain.append(budget)
            budget = budget.outer
        return chain

    def _committed(self) -> int:
        return self.spent_wei + sum(self._held.values()) + self._reserved_wei

    def reserve(self, stake_wei: int, what: str) -> None:
        """Count the stake of an open about to be paid, or raise `BudgetExceeded` before any
        money moves: one session too many, or a stake crossing `max_mor`."""
        with _ledger:
            for budget in self._chain():
                if budget.max_sessions is not None and budget.sessions + 1 > budget.max_sessions:
                    raise BudgetExceeded(
                        "max_sessions", budget.max_sessions, budget.sessions + 1, what
                    )
                if budget.max_mor is not None:
                    would_be = (budget._committed() + stake_wei) / WEI_PER_MOR
                    if would_be > budget.max_mor:
                        raise BudgetExceeded("max_mor", budget.max_mor, would_be, what)
            for budget in self._chain():
                budget._reserved_wei += stake_wei
                budget.sessions += 1

    def settle(self, stake_wei: int, session_id: bytes | None) -> None:
        """An open reserved with `reserve` ended: its stake is held by `session_id`, or (None:
        it failed before paying) released."""
        with _ledger:
            for budget in self._chain():
                budget._reserved_wei -= stake_wei
                if session_id is None:
                    budget.sessions -= 1
                else:
                    budget._held[session_id] = stake_wei
                    _holding.add(budget)

    def check(self, call_wei: int, what: str) -> None:
        """Raise `BudgetExceeded` when a call that has used `call_wei` so far crosses
        `per_call`, or `max_mor` with what the budget already committed."""
        with _ledger:
            for budget in self._chain():
                if budget.per_call is not None and call_wei / WEI_PER_MOR > budget.per_call:
                    raise BudgetExceeded("per_call", budget.per_call, call_wei / WEI_PER_MOR, what)
                if budget.max_mor is not None:
                    would_be = (budget._committed() + call_wei) / WEI_PER_MOR
                    if would_be > budget.max_mor:
                        raise BudgetExceeded("max_mor", budget.max_mor, would_be, what)

    def charge(self, call: dict[str, Any], spent_wei: int) -> None:
        """Add one finished (or stopped) call to the ledger of this budget and its outers."""
        with _ledger:
            for budget in self._chain():
                budget.spent_wei += spent_wei
                budget._calls.append(call)


def budget(
    max_mor: float | None = None,
    per_call: float | None = None,
    max_sessions: int | None = None,
) -> Budget:
    """A `Budget`: `max_mor` (MOR held + spent), `per_call` (MOR one call may spend),
    `max_sessions` (sessions opened); use it with `with` or `async with`."""
    return Budget(max_mor, per_call, max_sessions)


@contextlib.contextmanager
def paying(stake_wei: int, what: str) -> Iterator[Callable[[bytes], None]]:
    """Around an open that will move `stake_wei`: refuses it (`BudgetExceeded`) when the
    active budget would cross a cap, else counts it until the open says which session holds
    it (call the yielded function with the session id) or fails (the stake is released)."""
    current = active()
    if current is None:
        yield lambda session_id: None
        return
    current.reserve(stake_wei, what)
    held: list[bytes] = []
    try:
        yield held.append
    finally:
        current.settle(stake_wei, held[0] if held else None)


def session_closed(session_id: bytes) -> None:
    """A session closed (by any surface, housekeeping or failover): no budget holds its stake
    any more."""
    with _ledger:
        for budget in list(_holding):
            budget._held.pop(session_id, None)


def call_wei(record: Any) -> int:
    """What a call (a `CallRecord`) has spent so far, in wei: its session seconds at the bid's
    price (`CallRecord.cost_mor`, exact)."""
    return round(record.price_per_second * record.e2e_s)


def call_row(record: Any, outcome: str) -> tuple[dict[str, Any], int]:
    """The ledger row of a call (a `CallRecord`) and its spend in wei."""
    spent_wei = call_wei(record)
    usage = record.usage or {}
    row = {
        "surface": record.surface,
        "model": record.model,
        "provider": record.provider,
        "session_id": record.session_id,
        "tokens": record.completion_tokens,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "mor": spent_wei / WEI_PER_MOR,
        "seconds": record.e2e_s,
        "outcome": outcome,
        "at": time.time(),
    }
    return row, spent_wei
