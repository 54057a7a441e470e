"""What a provider knows of its sessions on chain: which are open (each takes a slot of its
model), which approvals still hold a slot, and what was measured per session for its receipt.

The chain is the source of truth: capacity counts the sessions open on chain (plus approvals
not yet used), each prompt re-reads its session, and everything kept about a session is let go
in one place (`forget`) once it is closed, so a provider running for days keeps bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from mor_workbench.chain.client import Call, Chain
from mor_workbench.protocol import RemoteProtocolError, address_of
from mor_workbench.provider.backend import BackendStream
from mor_workbench.provider.config import ModelConfig

__all__ = ["APPROVAL_TTL_S", "Capacity", "SessionStats"]

APPROVAL_TTL_S = 600  # the contract's SIGNATURE_TTL (LibMarket): an approval's and a receipt's life
_SESSIONS_PAGE = 100
_NO_USER = "0x" + "0" * 40


@dataclass
class SessionStats:
    """What the provider measured for one session, signed into its close receipt."""

    answers: int = 0
    tps_total: int = 0  # output tokens per second x 1000, summed over answers
    ttft_total_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class _Reservation:
    """A slot held for an approval until its session opens or the approval expires."""

    user: str
    bid_id: bytes
    at: float  # time.monotonic() of the approval


class Capacity:
    """The sessions of the provider at `address` on `chain`, and the slots of its `models`.

    `open`: our sessions open when last read -> model id (and `_users`: -> their user's address);
    `owed`: our sessions not yet paid and
    settled -> chain time (s) from which the claimer looks again; `stats`: measurements of each
    session until it is closed (or long over); `reservations`: per model id, approvals whose
    session has not been seen on chain yet.
    """

    def __init__(self, *, chain: Chain, address: str, models: Mapping[bytes, ModelConfig]) -> None:
        self.chain = chain
        self.address = address
        self.models = models
        self.open: dict[bytes, bytes] = {}
        self._users: dict[bytes, str] = {}  # the user of each session in `open`
        self.owed: dict[bytes, int] = {}
        self.stats: dict[bytes, SessionStats] = {}
        self.reservations: dict[bytes, list[_Reservation]] = {}
        self._prompt_slots = {
            m.model_id: asyncio.Semaphore(m.concurrent_slots)
            for m in models.values()
            if m.concurrent_slots
        }
        self._bid_models: dict[bytes, bytes] = {}  # our bids' models (a bid never changes them)
        self._sessions_read = 0  # how many of our sessions (getProviderSessions) were read
        self._sync_lock = asyncio.Lock()
        self._capacity_lock = asyncio.Lock()
        # getSession and the chain's time being read, by session: one read in flight a session
        self._session_reads: dict[bytes, asyncio.Future[tuple[dict[str, Any], int]]] = {}

    def prompt_slot(self, model_id: bytes) -> AbstractAsyncContextManager[Any]:
        """Held while a prompt of `model_id` is answered: at most its `concurrent_slots` at once
        (unlimited when it sets none)."""
        semaphore = self._prompt_slots.get(model_id)
        return semaphore if semaphore is not None else contextlib.nullcontext()

    def prompt_slots_taken(self, model_id: bytes) -> bool:
        """Whether a prompt of `model_id` would wait for its `prompt_slot` now."""
        semaphore = self._prompt_slots.get(model_id)
        return semaphore is not None and semaphore.locked()

    async def reserve(self, model: ModelConfig, user: str, bid_id: bytes) -> None:
        """Hold a slot for an approved session until it opens or its approval expires.

        Capacity counts the model's sessions open on chain plus approvals not yet used: new
        sessions of ours are read from the chain first, and when that count is full the open
        ones are re-read, so a session closed early frees its slot at once.
        Raises RemoteProtocolError "Provider at capacity" when every slot is taken.
        """
        if not model.concurrent_slots:
            return
        async with self._capacity_lock:
            await self.sync()
            if self._slots_taken(model.model_id) >= model.concurrent_slots:
                await self.reread_open(model.model_id)
                if self._slots_taken(model.model_id) >= model.concurrent_slots:
                    raise RemoteProtocolError("Provider at capacity")
            self.reservations.setdefault(model.model_id, []).append(
                _Reservation(user, bid_id, time.monotonic())
            )

    def _slots_taken(self, model_id: bytes) -> int:
        now = time.monotonic()
        live = [r for r in self.reservations.get(model_id, []) if now - r.at < APPROVAL_TTL_S]
        self.reservations[model_id] = live
        return len(live) + sum(1 for m in self.open.values() if m == model_id)

    def remember_bid(self, bid_id: bytes, model_id: bytes) -> None:
        """Note that our bid `bid_id` is on `model_id` (read on chain by the caller)."""
        self._bid_models[bid_id] = model_id

    async def bid_model(self, bid_id: bytes) -> bytes | None:
        """The model of `bid_id` if the bid is ours, else None (our bids are cached)."""
        if bid_id not in self._bid_models:
            bid = await self.chain.call("getBid", bid_id)
            if bid["provider"] != self.address:
                return None
            self._bid_models[bid_id] = bid["modelId"]
        return self._bid_models[bid_id]

    def note(self, session_id: bytes, raw: dict[str, Any], model_id: bytes, now: int) -> None:
        """Keep what getSession said about one of our sessions (at chain time `now`, s): an
        open one takes a slot; a closed one is forgotten; an ended one frees its slot but keeps
        its measurements for a late close."""
        if raw["closedAt"] or not raw["isActive"]:
            self.forget(session_id)
        elif raw["endsAt"] <= now:
            self._free_slot(session_id)
        else:
            self.open[session_id] = model_id
            self._users[session_id] = raw["user"]

    def forget(self, session_id: bytes) -> None:
        """Let go of the session's slot and measurements."""
        self._free_slot(session_id)
        self.stats.pop(session_id, None)

    def _free_slot(self, session_id: bytes) -> None:
        self.open.pop(session_id, None)
        self._users.pop(session_id, None)

    def known_model(self, session_id: bytes, sender_pubkey: bytes) -> bytes | None:
        """The model id of `session_id` if the last read of it found it open with
        `sender_pubkey`'s address as its user, else None (a session never seen open, one seen
        closed or ended, another user's).

        No answer to whether the session is open now (only `session_model` says that): what
        a prompt may start backend work on while that read is under way, so a stranger's
        prompt never costs backend compute.
        """
        model_id = self.open.get(session_id)
        if model_id is None or self._users.get(session_id) != address_of(sender_pubkey):
            return None
        return model_id

    def record(self, session_id: bytes, answer: BackendStream) -> None:
        """Add one answer's measurements to the session's, unless the session was settled
        while the answer ran (nothing is left to sign for it)."""
        if session_id not in self.open and session_id not in self.owed:
            return
        stats = self.stats.setdefault(session_id, SessionStats())
        stats.answers += 1
        stats.tps_total += answer.tps_scaled1000
        stats.ttft_total_ms += answer.ttft_ms
        stats.input_tokens += answer.prompt_tokens
        stats.output_tokens += answer.completion_tokens

    async def sync(self) -> None:
        """Read the sessions opened on our bids since the last read (the provider's session
        list on chain, oldest first): each is followed until paid, an open one takes its
        model's slot, and each frees the reservation its approval held.
        Raises `ChainError` when the chain cannot be read."""
        async with self._sync_lock:
            while True:
                ids, total = await self.chain.call(
                    "getProviderSessions", self.address, self._sessions_read, _SESSIONS_PAGE
                )
                if not ids:
                    return
                raws, now = await self.chain.read_with_time([Call("getSession", (i,)) for i in ids])
                for session_id, raw in zip(ids, raws, strict=True):
                    if isinstance(raw, Exception):
                        raise raw
                    model_id = await self.bid_model(raw["bidId"])
                    if model_id is None:  # not ours after all (cannot happen on our contracts)
                        continue
                    self.owed.setdefault(session_id, 0)
                    self.note(session_id, raw, model_id, now)
                    self._release_reservation(model_id, raw["user"], raw["bidId"])
                self._sessions_read += len(ids)
                if self._sessions_read >= total:
                    return

    def _release_reservation(self, model_id: bytes, user: str, bid_id: bytes) -> None:
        held = self.reservations.get(model_id, [])
        for index, reservation in enumerate(held):
            if (reservation.user.lower(), reservation.bid_id) == (user.lower(), bid_id):
                del held[index]
                return

    async def reread_open(self, model_id: bytes | None = None) -> None:
        """Re-read the sessions we hold open, of one model or all (Multicall3: one round
        trip), so those closed or ended since let go of their slot (and, closed, of their
        measurements). Raises `ChainError` when the chain cannot be read."""
        held = {i: m for i, m in self.open.items() if model_id in (None, m)}
        if not held:
            return
        raws, now = await self.chain.read_with_time([Call("getSession", (i,)) for i in held])
        for (session_id, session_model), raw in zip(held.items(), raws, strict=True):
            if isinstance(raw, Exception):
                raise raw
            self.note(session_id, raw, session_model, now)

    async def _read_session(self, session_id: bytes) -> tuple[dict[str, Any], int]:
        """getSession and the latest block's timestamp (s), read once for all the callers that
        ask while it is in flight (a single flight, not a cache: the next caller after it ends
        reads again). One caller cancelled does not cancel the read for the others."""
        pending = self._session_reads.get(session_id)
        if pending is None:
            pending = asyncio.ensure_future(self._read_session_now(session_id))
            self._session_reads[session_id] = pending

            def done(future: asyncio.Future[Any]) -> None:
                if self._session_reads.get(session_id) is future:
                    del self._session_reads[session_id]
                if not future.cancelled():
                    future.exception()  # retrieved: every waiter may have gone

            pending.add_done_callback(done)
        return await asyncio.shield(pending)

    async def _read_session_now(self, session_id: bytes) -> tuple[dict[str, Any], int]:
        (raw,), now = await self.chain.read_with_time([Call("getSession", (session_id,))])
        if isinstance(raw, Exception):
            raise raw
        return raw, now

    async def session_model(self, session_id: bytes, sender_pubkey: bytes) -> bytes:
        """The session's model id, if it is open, unexpired, ours, and `sender_pubkey` is its
        user's; else RemoteProtocolError ("unknown session", "Session is closed", ...).

        Read on chain for every prompt (getSession and the latest block: one eth_call and one
        block read, small beside an inference): a session the user closed is refused at once
        ("Session is closed"), where a cache would serve it free until its booked end, and
        expiry is judged on the chain's clock, as the contract judges it. Prompts of one session
        arriving while its read is under way share that read (`_read_session`), so a burst of
        them costs one read, and no answer is older than the read itself.
        """
        raw, now = await self._read_session(session_id)
        if raw["user"] == _NO_USER:
            raise RemoteProtocolError("unknown session")
        model_id = await self.bid_model(raw["bidId"])
        if model_id is None:
            raise RemoteProtocolError("this session belongs to another provider")
        self.note(session_id, raw, model_id, now)
        if raw["closedAt"] or not raw["isActive"]:
            raise RemoteProtocolError("Session is closed")
        if raw["endsAt"] <= now:
            raise RemoteProtocolError("session expired")
        if address_of(sender_pubkey) != raw["user"]:
            raise RemoteProtocolError("the request is not signed by the session's user")
        return model_id
