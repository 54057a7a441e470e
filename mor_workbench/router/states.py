"""A session's life as data (as h11 keeps its connection states): the states, the events that
move a session between them, and one function that applies an event or refuses it.

The journal is the one owner of every session's state and persists each move; nothing sets a
state by hand, so an illegal move (a closed session opened again, a close of a session that
was never opened) is an error instead of a silent corruption.

    opening ──opened──▶ open ──close──▶ closing ──closed──▶ closed
       │                 │  └─────────closed───────────────▶  │ (already closed on chain)
       └──abandon──▶ abandoned ◀──abandon── open / closing    │
                                                              │
    closed ──reopened──▶ open     (the chain rolled back the close: trust the chain)
    closed ──abandon───▶ abandoned  (the chain rolled back the open itself)
"""

from __future__ import annotations

from enum import StrEnum

from mor_workbench.errors import IllegalTransition

__all__ = [
    "TRANSITIONS",
    "UNFINISHED",
    "IllegalTransition",
    "SessionEvent",
    "SessionState",
    "advance",
]


class SessionState(StrEnum):
    OPENING = "opening"  # approval in hand, the open transaction about to be / being sent
    OPEN = "open"  # on chain and usable
    CLOSING = "closing"  # no longer used; the close transaction about to be / being sent
    CLOSED = "closed"  # closed on chain
    ABANDONED = "abandoned"  # never opened on this chain (or an open the chain undid)


class SessionEvent(StrEnum):
    OPENED = "opened"  # the open transaction was mined (or recovery found the session)
    CLOSE = "close"  # the router starts closing it (again, after an interrupted close)
    CLOSED = "closed"  # the chain shows it closed
    ABANDON = "abandon"  # the chain does not hold it and never will
    REOPENED = "reopened"  # the chain shows open a session that was closed (a rollback)


S, E = SessionState, SessionEvent
TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (S.OPENING, E.OPENED): S.OPEN,
    (S.OPENING, E.ABANDON): S.ABANDONED,
    (S.OPEN, E.CLOSE): S.CLOSING,
    (S.OPEN, E.CLOSED): S.CLOSED,
    (S.OPEN, E.ABANDON): S.ABANDONED,
    (S.CLOSING, E.CLOSE): S.CLOSING,
    (S.CLOSING, E.CLOSED): S.CLOSED,
    (S.CLOSING, E.ABANDON): S.ABANDONED,
    (S.CLOSED, E.REOPENED): S.OPEN,
    (S.CLOSED, E.ABANDON): S.ABANDONED,
}
UNFINISHED = (S.OPENING, S.OPEN, S.CLOSING)  # may still hold the account's MOR


def advance(state: SessionState | str, event: SessionEvent | str) -> SessionState:
    """The state after `event`; `IllegalTransition` when the table has no such move."""
    state, event = SessionState(state), SessionEvent(event)
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None
