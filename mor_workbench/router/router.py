"""The in-process router: rank a model's bids, open a session with the best provider that
accepts, send prompts to it, and close what it opened — journaled so nothing is stranded.

Before any transaction every candidate provider is pinged once and gated on the model health
it reports in its pong (`mor_workbench.router.health`, the strategy's `health` policy).

Every session is written to the journal before the openSession transaction is sent and
updated after each step; `recover()` closes or settles whatever a previous process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from mor_workbench._tasks import cancel_and_wait
from mor_workbench.chain import listings
from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import (
    ConfigurationError,
    ContractReverted,
    InsufficientFunds,
    MorError,
    NoProviderAvailable,
    ProviderError,
)
from mor_workbench.protocol import (
    PongRes,
    ProtocolError,
    Receipt,
    decode_approval,
    encode_receipt,
    eth_sign,
)
from mor_workbench.protocol.ecies import BoxSealer
from mor_workbench.protocol.fastchannel import Offer
from mor_workbench.router import health, peer
from mor_workbench.router.attestation import Attestation, TeeVerifier, attestation_for
from mor_workbench.router.journal import JournalEntry, SessionJournal
from mor_workbench.router.scoring import Score, ScoreInput, score_bid
from mor_workbench.router.states import SessionEvent, SessionState
from mor_workbench.router.strategy import Cooldowns, Strategy
from mor_workbench.router.transport import TCP, ConnectionPool, PeerTransport

__all__ = ["NoProviderAvailable", "OpenSession", "RankedBid", "Router", "rank_bids", "rank_book"]

log = logging.getLogger(__name__)
_PEER_FAILURES = (ProviderError, ProtocolError, OSError, TimeoutError)

OPENED, CLOSE, CLOSED = SessionEvent.OPENED, SessionEvent.CLOSE, SessionEvent.CLOSED
ABANDON, REOPENED = SessionEvent.ABANDON, SessionEvent.REOPENED
SpendGuard = Callable[["RankedBid", int, int], AbstractContextManager[Callable[[bytes], None]]]
"""(bid, deposit in wei, duration in s) -> a context around the open, yielding a function to
call with the session id once it is paid; raising from it refuses the open."""
APPROVAL_TTL_S = 600  # an approval can no longer open a session after this
RECHECK_CLOSED_S = 7 * 86400  # closed rows re-checked on chain by recover() (rollbacks)
EXPIRED_KEPT = 4096  # sessions remembered as ended by housekeeping (32 bytes each)


@contextlib.contextmanager
def _no_guard(bid: RankedBid, amount: int, duration_s: int) -> Iterator[Callable[[bytes], None]]:
    yield lambda session_id: None


@dataclass(frozen=True)
class RankedBid:
    """A bid with everything needed to open a session on it, and its score."""

    bid_id: bytes
    model_id: bytes
    provider: str
    endpoint: str
    price_per_second: int
    score: Score


@dataclass(frozen=True)
class OpenSession:
    """A session this router opened and may use."""

    session_id: bytes
    model_id: bytes
    bid_id: bytes
    provider: str
    endpoint: str
    provider_pubkey: bytes
    encrypt: bool
    ends_at: int
    approval_hash: str
    price_per_second: int = 0
    fast_channel: bool = False  # the provider advertised it: prompts offer the fast channel
    keep_alive: bool = False  # it keeps connections open after such prompts (KEEP_ALIVE)


async def rank_bids(chain: Chain, model: str) -> list[RankedBid]:
    """A model's active bids, best score first (the reference's default scorer), from one
    batched read of bids, providers and stats (`listings.bid_book`)."""
    return rank_book(await listings.bid_book(chain, model))


def rank_book(book: listings.BidBook) -> list[RankedBid]:
    """The bids of `book`, each scored against its own model (the reference's default
    scorer), best score first."""
    ranked = []
    for bid_id, bid in book.bids:
        model_id, provider, price = bid["modelId"], bid["provider"], bid["pricePerSecond"]
        info = book.providers[provider]
        score = score_bid(
            ScoreInput(
                price,
                info["stake"],
                book.provider_minimum_stake,
                book.pair_stats[(model_id, provider)],
                book.model_stats[model_id],
            )
        )
        ranked.append(RankedBid(bid_id, model_id, provider, info["endpoint"], price, score))
    return sorted(ranked, key=lambda b: b.score.score, reverse=True)


class Router:
    """Sessions and prompts for one account on one chain.

    `transport` carries every exchange with a provider: TCP, as on the live network, unless a
    test passes an in-memory one (`mor_workbench.router.transport.MockTransport`)."""

    def __init__(
        self,
        chain: Chain,
        signer: Signer,
        journal: SessionJournal,
        *,
        strategy: Strategy | None = None,
        require_encrypted_prompts: bool = False,
        housekeeping_s: float = 30.0,
        standing_allowance: int = 0,
        on_change: Callable[[str, OpenSession], None] | None = None,
        transport: PeerTransport = TCP,
        tee_verifier: TeeVerifier | None = None,
    ) -> None:
        self.chain = chain
        # checks the providers of tee-tagged models at open and before each prompt
        self.tee_verifier = tee_verifier or TeeVerifier()
        # by session id, for the sessions this router holds open (dropped when one closes: a
        # `serve` process opens sessions for weeks); see `attestation`
        self.attestations: dict[bytes, Attestation] = {}
        self._prompt_boxes: dict[bytes, BoxSealer] = {}  # by session id, open sessions only
        self._offers: dict[bytes, Offer] = {}  # the next prompt's fast-channel key, by session
        self._model_tags: dict[bytes, list[str]] = {}
        # around each open once its deposit (wei) is known, before the provider is asked: may
        # refuse it (a spend cap); told the session id once paid (`SpendGuard`)
        self.spend_guard: SpendGuard | None = None
        self.transport = transport
        # idle connections to providers that keep them alive, for the next prompt's request
        self.connections = ConnectionPool()
        # told "opened" or "closed" with the session, on this router's loop, after each change
        self.on_change = on_change
        self.standing_allowance = standing_allowance  # wei the Diamond may spend without asking
        self.signer = signer
        self.journal = journal
        self.strategy = strategy or Strategy()
        self.require_encrypted_prompts = require_encrypted_prompts
        self.fast_channel = True  # offer it to providers that advertise it (protocol.fastchannel)
        self.housekeeping_s = housekeeping_s
        self.cooldowns = Cooldowns()
        self.opened: dict[bytes, OpenSession] = {}  # sessions this router opened, still open
        # closed by housekeeping because their time was up, the latest EXPIRED_KEPT (a
        # process that runs for weeks closes sessions without end): how a prompt on one is
        # refused (ended, or closed); a dict as an ordered set, oldest first
        self.expired: dict[bytes, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # a lock per session being closed, with how many closes share it: one close at a time
        self._closes: dict[bytes, tuple[asyncio.Lock, int]] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        # allowance check, approve and openSession as one step: two opens at once would each
        # approve only their own amount, and the second approve replaces the first
        self._paying = asyncio.Lock()

    # ----- choosing a provider -----
    async def rank(self, model: str) -> list[RankedBid]:
        """The model's active bids, best score first (the reference's default scorer)."""
        return await rank_bids(self.chain, model)

    async def candidates(self, model: str, exclude: Iterable[str] = ()) -> list[RankedBid]:
        """The bids to ask, in the order the strategy chooses; `exclude` are providers."""
        return self._choose(await self.rank(model), exclude)

    def _choose(self, ranked: list[RankedBid], exclude: Iterable[str]) -> list[RankedBid]:
        skip = {p.lower() for p in exclude}
        kept = [b for b in ranked if b.provider.lower() not in skip]
        return self.strategy.choose(kept, self.cooldowns.cooling(self.strategy.cooldown_s))

    async def healthy_candidates(
        self, ranked: list[RankedBid], candidates: list[RankedBid]
    ) -> tuple[list[tuple[RankedBid, PongRes]], list[tuple[str, str]]]:
        """`candidates` gated on their providers' health reports under the strategy's health
        policy (one ping per provider, concurrently, before any transaction): the bids to ask
        in order, each with its pong, and the providers skipped with why. `ranked` are all the
        model's bids (a model with one provider opens permissively)."""
        checked = await health.check_all(candidates, self.signer, transport=self.transport)
        for provider, answer in checked.items():
            if answer.pong is None:  # unreachable: a failure, so others go first for a while
                self.failed(provider)
        single = len({b.provider.lower() for b in ranked}) == 1
        return health.gate(candidates, checked, self.strategy.health, single_provider=single)

    def failed(self, provider: str) -> None:
        """Remember that `provider` failed us, so the strategy tries others first for a while."""
        self.cooldowns.failed(provider)

    # ----- opening -----
    async def open(
        self,
        model: str,
        duration_s: int,
        *,
        direct_payment: bool = False,
        bid: bytes | None = None,
        exclude: Iterable[str] = (),
    ) -> OpenSession:
        """Open a session with the best provider that accepts, trying each in strategy order
        (or on one given bid).

        Every provider is pinged first and gated on the health it reports for the model
        (`Strategy.health`; a provider that says it cannot serve the model is never asked for
        an approval, so never paid). Raises `ConfigurationError` (before any transaction)
        when `duration_s` is outside the contract's limits, `NoProviderAvailable` when no
        provider accepts (its `tried` says why each provider was skipped or failed), and
        `InsufficientFunds` when the account cannot pay the deposit."""
        await self.check_duration(duration_s)
        ranked = await self.rank(model)
        candidates = self._choose(ranked, exclude)
        if bid is not None:
            candidates = [b for b in ranked if b.bid_id == bid]
            if not candidates:
                raise NoProviderAvailable(model, [], f"bid 0x{bid.hex()} is not an active bid")
        elif not candidates:
            raise NoProviderAvailable(model, [], "no bid passes the strategy's filters")
        plan, tried = await self.healthy_candidates(ranked, candidates)
        for candidate, pong in plan:
            attestation = await self.attest(candidate, pong)
            if self.strategy.tee and not attestation.attested:  # skipped, never paid
                tried.append((candidate.provider, f"TEE attestation failed: {attestation.status}"))
                continue
            try:
                session = await self._open_on(candidate, pong, duration_s, direct_payment)
            except _PEER_FAILURES as exc:
                self.failed(candidate.provider)
                tried.append((candidate.provider, str(exc) or type(exc).__name__))
                continue
            self.attestations[session.session_id] = attestation
            return self._adopt(session)
        raise NoProviderAvailable(model, tried)

    async def open_on(
        self, bid: RankedBid, duration_s: int, *, direct_payment: bool = False
    ) -> OpenSession:
        """Open a session on exactly `bid`, at `bid.endpoint` (no ranking, no failover): for
        tools and tests that reach a provider somewhere other than its endpoint on chain. The
        same checks as `open` (duration limits, the pong's signature, the approval's) apply."""
        await self.check_duration(duration_s)
        pong = await peer.ping(bid.endpoint, self.signer, bid.provider, transport=self.transport)
        attestation = await self.attest(bid, pong)
        if self.strategy.tee and not attestation.attested:
            raise ProviderError(
                f"provider {bid.provider}: TEE attestation failed: {attestation.status}"
            )
        session = await self._open_on(bid, pong, duration_s, direct_payment)
        self.attestations[session.session_id] = attestation
        return self._adopt(session)

    async def attest(self, bid: RankedBid, pong: PongRes) -> Attestation:
        """What `bid`'s provider proves about itself: for a model tagged `tee`, its TEE quote
        checked by `tee_verifier` as the reference consumer does before it pays (see
        `router.attestation`); for any other model, nothing to check."""
        if bid.model_id not in self._model_tags:
            self._model_tags[bid.model_id] = list(
                (await self.chain.call("getModel", bid.model_id))["tags"]
            )
        attestation = attestation_for(self._model_tags[bid.model_id])
        if not attestation.tee:
            return attestation
        return await self.tee_verifier.check(bid.endpoint, pong.version)

    async def _recheck_attestation(self, session: OpenSession) -> None:
        """Before a prompt, re-check a provider that attested at open (cached: a re-fetch of
        its quote, compared with the one verified). Under a tee-only strategy a provider that
        no longer attests raises `ProviderError`, so the call fails over before the prompt is
        sent."""
        known = self.attestations.get(session.session_id)
        if known is None or not known.attested:
            return
        fresh = await self.tee_verifier.check(session.endpoint, known.version or "")
        self.attestations[session.session_id] = fresh
        if self.strategy.tee and not fresh.attested:
            raise ProviderError(f"provider {session.provider} no longer attests: {fresh.status}")

    def _adopt(self, session: OpenSession) -> OpenSession:
        """A session this router just opened: kept, closed when its time is up, announced."""
        self.opened[session.session_id] = session
        self._start_housekeeping()
        self._changed("opened", session)
        return session

    async def check_duration(self, duration_s: int) -> None:
        """Refuse a duration the contract would refuse, naming the limit: at least
        MIN_SESSION_DURATION and at most getMaxSessionDuration() seconds (read from the chain;
        SessionRouter's openSession reverts with SessionTooShort below the minimum and caps
        the session at the maximum)."""
        shortest, longest = await self.chain.read_many(
            [Call("MIN_SESSION_DURATION"), Call("getMaxSessionDuration")]
        )
        if isinstance(shortest, int) and duration_s < shortest:
            raise ConfigurationError(
                f"a session of {duration_s} s is too short: this marketplace's contract opens "
                f"sessions of at least {_span(shortest)} ({shortest} s); ask for more"
            )
        if isinstance(longest, int) and duration_s > longest:
            raise ConfigurationError(
                f"a session of {_span(duration_s)} is too long: this marketplace's contract "
                f"caps sessions at {_span(longest)} ({longest} s); ask for less"
            )

    async def _open_on(
        self, bid: RankedBid, pong: PongRes, duration_s: int, direct: bool
    ) -> OpenSession:
        encrypt = peer.encrypt_prompts_for(
            pong, require_encrypted_prompts=self.require_encrypted_prompts
        )
        amount = await peer.deposit_for(self.chain, bid.price_per_second, duration_s)
        held = await self.chain.call(
            "balanceOf", self.signer.address, to=self.chain.deployment.token
        )
        if held < amount:
            raise InsufficientFunds("MOR", amount, held, f"a {duration_s} s session")
        guard = self.spend_guard or _no_guard
        with guard(bid, amount, duration_s) as paid:  # a budget may refuse: nothing moved yet
            approved = await peer.request_approval(
                bid.endpoint,
                self.signer,
                bid.provider,
                bid.bid_id,
                amount,
                self.chain.deployment.chain_id,
                transport=self.transport,
            )
            entry = self.journal.record(
                JournalEntry(
                    approval_hash="0x" + keccak(approved.approval).hex(),
                    state="opening",
                    model_id="0x" + bid.model_id.hex(),
                    bid_id="0x" + bid.bid_id.hex(),
                    provider=bid.provider,
                    endpoint=bid.endpoint,
                    provider_pubkey="0x" + approved.pubkey.hex(),
                    amount=str(amount),
                    direct_payment=direct,
                    approval="0x" + approved.approval.hex(),
                    approval_signature="0x" + approved.signature.hex(),
                )
            )
            sent: list[str] = []

            def journal_hash(tx_hash: str) -> None:  # before the transaction is broadcast
                sent.append(tx_hash)
                self.journal.update(entry.approval_hash, tx_hash=",".join(sent))

            async with self._paying:
                session_id = await peer.open_session(
                    self.chain,
                    self.signer,
                    approved,
                    amount,
                    direct_payment=direct,
                    standing_allowance=self.standing_allowance,
                    on_hash=journal_hash,
                )
            paid(session_id)
        ends_at = (await self.chain.call("getSession", session_id))["endsAt"]
        self.journal.transition(
            entry.approval_hash, OPENED, session_id="0x" + session_id.hex(), ends_at=ends_at
        )
        return OpenSession(
            session_id,
            bid.model_id,
            bid.bid_id,
            bid.provider,
            bid.endpoint,
            approved.pubkey,
            encrypt,
            ends_at,
            entry.approval_hash,
            bid.price_per_second,
            self.fast_channel and peer.supports_fast_channel(pong),
            self.fast_channel and peer.supports_keep_alive(pong),
        )

    # ----- prompts -----
    async def stream(
        self,
        session: OpenSession,
        body: dict[str, Any],
        *,
        timeout: float = 60.0,
        on_accept: Callable[[], None] | None = None,
    ) -> AsyncIterator[Any]:
        """The provider's verified, decrypted chunks (or completion) for one request body;
        `timeout` bounds the wait for the first reply and between chunks (a stall);
        `on_accept` is called when the provider accepts it on the fast channel (`peer.prompt`)."""
        await self._recheck_attestation(session)
        # the fast channel's key for this prompt: made ahead (after the last prompt's first
        # chunk), each used once, so its making is off the time to first token
        offer = self._offers.pop(session.session_id, None) if session.fast_channel else None
        ahead = session.fast_channel
        async for payload in peer.prompt(
            session.endpoint,
            self.signer,
            session.session_id,
            session.provider_pubkey,
            body,
            encrypt=session.encrypt,
            prompt_boxes=self._prompt_sealer(session),
            first_reply_timeout=timeout,
            idle_timeout=timeout,
            transport=self.transport,
            fast_channel=session.fast_channel,
            offer=offer,
            pool=self.connections if session.keep_alive else None,
            on_accept=on_accept,
        ):
            yield payload
            if ahead and session.session_id in self.opened:
                ahead = False
                self._offers.setdefault(session.session_id, Offer.new())

    def attestation(self, session_id: bytes) -> Attestation:
        """What the provider of `session_id`, a session this router holds open, attested:
        checked at open and before each prompt (`router.attestation`). Kept for open sessions
        only (a long-running process opens sessions without end), so `ConfigurationError` for
        a closed session as for one this router did not open."""
        known = self.attestations.get(session_id)
        if known is not None:
            return known
        entry = self.journal.by_session("0x" + session_id.hex())
        if entry is not None and entry.state in (SessionState.CLOSED, SessionState.ABANDONED):
            raise ConfigurationError(
                f"session 0x{session_id.hex()[:8]}… is closed: a workbench reports the "
                "attestation of its sessions while it holds them open (checked at open and "
                "before each prompt), not of closed sessions nor of sessions not opened by "
                "this workbench"
            )
        raise ConfigurationError(
            f"session 0x{session_id.hex()[:8]}… was not opened by this workbench: "
            "pass a session from open_session() or wb.sessions()"
        )

    # ----- closing -----
    async def close(self, session: OpenSession) -> bool:
        """Close with the provider's receipt, or dispute-close with our own when it is gone.
        True when the provider signed the receipt.

        One close of a session at a time: a close asked while another runs (a widget closing
        its session while the workbench closes) waits for it, then finds it closed. A
        session closed already — by another workbench of this account, in this process or
        another (`close_all`, `close_session`, the Sessions widget), or by recovery — is
        recognised from its journal row or, when a close elsewhere is still under way, from
        the chain's `SessionAlreadyClosed`: nothing more is sent, the router drops it (its
        listeners told "closed" if it held it open) and the answer is True (this call made
        no dispute). Raises what the close transaction raises (`MorError`); the row then
        stays closing, for the next `recover()`."""
        lock, sharing = self._closes.get(session.session_id, (asyncio.Lock(), 0))
        self._closes[session.session_id] = (lock, sharing + 1)
        try:
            async with lock:
                return await self._close_once(session)
        finally:
            lock, sharing = self._closes.pop(session.session_id)
            if sharing > 1:
                self._closes[session.session_id] = (lock, sharing - 1)

    async def _close_once(self, session: OpenSession) -> bool:
        entry = self.journal.get(session.approval_hash)
        if entry is not None and entry.state in (SessionState.CLOSED, SessionState.ABANDONED):
            self._closed_elsewhere(session)
            return True
        self.journal.transition(session.approval_hash, CLOSE)
        signed = await self._provider_receipt(session)
        undisputed = signed is not None
        if signed is None:  # the provider cannot sign: close with our own receipt (a dispute)
            # stamped with the chain's clock, which closeSession checks (SIGNATURE_TTL)
            stamp = await self.chain.block_timestamp()
            receipt = encode_receipt(
                Receipt(session.session_id, self.chain.deployment.chain_id, stamp, 0, 0)
            )
            signed = receipt, eth_sign(receipt, self.signer.signing_key)
        try:
            await self.chain.transact(self.signer, "closeSession", *signed)
        except ContractReverted as exc:
            if exc.error != "SessionAlreadyClosed":
                raise
            # closed meanwhile by another close of this account (another workbench, or a
            # process that closed it on chain and has not yet journaled it)
            self._journal_closed(session)
            self._closed_elsewhere(session)
            return True
        # another close of the account may have sent this very transaction (signed alike) and
        # journaled it first
        self._journal_closed(session)
        self._forget(session)
        return undisputed

    def _journal_closed(self, session: OpenSession) -> None:
        """Move the session's row to closed unless another close has already."""
        entry = self.journal.get(session.approval_hash)
        if entry is None or entry.state == SessionState.CLOSING:
            self.journal.transition(session.approval_hash, CLOSED)

    def _closed_elsewhere(self, session: OpenSession) -> None:
        """Drop a session closed (or abandoned) by another close of this account, saying so;
        its listeners are told "closed" when this router held it open."""
        log.info(
            "session 0x%s was closed already by another close of this account (another "
            "workbench, or recovery): nothing more to send",
            session.session_id.hex(),
        )
        if session.session_id in self.opened:
            self._forget(session)
        else:
            self._drop_state(session.session_id)

    def _drop_closed_elsewhere(self, unfinished: list[JournalEntry]) -> None:
        """Drop the sessions of `opened` the journal no longer holds `unfinished` (the rows
        that may still hold MOR): another close of the account has closed them."""
        held = {e.approval_hash for e in unfinished}
        for session in [s for s in self.opened.values() if s.approval_hash not in held]:
            self._closed_elsewhere(session)

    def _forget(self, session: OpenSession) -> None:
        """A closed session leaves this router's books (its open sessions and attestations);
        its listeners are told."""
        self.opened.pop(session.session_id, None)
        self._drop_state(session.session_id)
        self._changed("closed", session)

    def _drop_state(self, session_id: bytes) -> None:
        """Let go of what this router keeps for an open session (its attestation, its prompt
        key, its next fast-channel key): it has closed."""
        self.attestations.pop(session_id, None)
        self._prompt_boxes.pop(session_id, None)
        self._offers.pop(session_id, None)

    def _prompt_sealer(self, session: OpenSession) -> BoxSealer | None:
        """The ECIES sealer of the session's prompts (one ephemeral key a session, so the
        provider derives its keys once: `ecies.BoxSealer`), None for a provider that takes
        prompts in the clear."""
        if not session.encrypt:
            return None
        sealer = self._prompt_boxes.get(session.session_id)
        if sealer is None:
            sealer = self._prompt_boxes[session.session_id] = BoxSealer(session.provider_pubkey)
        return sealer

    def _changed(self, event: str, session: OpenSession) -> None:
        """Tell `on_change`; its failure is logged, never the caller's."""
        if self.on_change is None:
            return
        try:
            self.on_change(event, session)
        except Exception:
            log.exception("a sessions-changed listener failed on %s", event)

    async def _provider_receipt(self, session: OpenSession) -> tuple[bytes, bytes] | None:
        """The provider's signed close receipt (receipt, signature), asked at the endpoint the
        session used and then, if that fails, at the endpoint the provider registers on chain
        now (a restarted provider may listen elsewhere); None only when it cannot be had, so
        an honest provider is never disputed (a dispute hurts its rating) for a stale address."""
        endpoints = [session.endpoint]
        for attempt in range(2):
            try:
                return await peer.report(
                    endpoints[-1],
                    self.signer,
                    session.session_id,
                    session.provider_pubkey,
                    session.provider,
                    transport=self.transport,
                )
            except _PEER_FAILURES:
                if attempt:
                    return None
            try:
                registered = (await self.chain.call("getProvider", session.provider))["endpoint"]
            except MorError:
                return None
            if registered == session.endpoint:
                return None
            endpoints.append(registered)
        return None

    def is_closed(self, session: OpenSession) -> bool:
        """Whether `session` is done with, as its journal row says (closing, closed or
        abandoned): the journal is the one owner of a session's state."""
        entry = self.journal.get(session.approval_hash)
        return entry is not None and entry.state not in (SessionState.OPENING, SessionState.OPEN)

    def close_soon(self, session: OpenSession) -> None:
        """Close `session` in the background (after a failover); `drain()` waits for it. It
        counts as closed at once (its journal row moves to closing), so it is never reused.
        Once: calls failing together on one session start one close (a session already
        closing or closed is left to that close, or to the next `recover()`)."""
        self.opened.pop(session.session_id, None)
        if self.is_closed(session):  # its close (this router's or another's) drops the rest
            self._drop_state(session.session_id)
            return
        self.journal.transition(session.approval_hash, CLOSE)
        task = asyncio.create_task(self._close_quietly(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_quietly(self, session: OpenSession) -> None:
        try:
            await self.close(session)
        except MorError as exc:  # the journal keeps it; the next recover() closes it
            log.warning("could not close session 0x%s yet: %s", session.session_id.hex(), exc)

    async def drain(self) -> None:
        """Wait for background closes; stop housekeeping; close idle connections."""
        await cancel_and_wait(self._housekeeper)
        self._housekeeper = None
        await self.wait_for_closes()
        self.connections.close()

    async def wait_for_closes(self) -> None:
        """Wait for the background closes `close_soon` started (housekeeping goes on)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ----- housekeeping: close what ended, withdraw what was released -----
    def _start_housekeeping(self) -> None:
        if self._housekeeper is None or self._housekeeper.done():
            self._housekeeper = asyncio.create_task(self._housekeep_forever())

    async def _housekeep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_s)
            try:
                await self.housekeep()
            except MorError as exc:
                log.warning("housekeeping failed, will retry: %s", exc)

    async def housekeep(self) -> dict[str, int]:
        """Close the sessions this router opened whose time is up (the unused stake comes back
        only on close), and withdraw on-hold stakes whose timelock has passed. Sessions of this
        router that another close of the account has closed are dropped first (`closable`)."""
        self._drop_closed_elsewhere(self.journal.unfinished())
        now = await self.chain.block_timestamp()
        ended = [s for s in list(self.opened.values()) if s.ends_at <= now]
        for session in ended:
            self.expired[session.session_id] = None
            if len(self.expired) > EXPIRED_KEPT:
                del self.expired[next(iter(self.expired))]
            await self.close(session)
        return {"closed": len(ended), "withdrawn": await self.withdraw_released()}

    async def withdraw_released(self) -> int:
        """Withdraw on-hold stakes whose timelock has passed; the amount (wei)."""
        available, _ = await self.chain.call("getUserStakesOnHold", self.signer.address, 255)
        if available:
            await self.chain.transact(self.signer, "withdrawUserStakes", self.signer.address, 255)
        return available

    async def recover(self) -> dict[str, int]:
        """Settle what dead processes left: find sessions an interrupted open created, close
        sessions still open, and withdraw on-hold stakes whose time has come. Sessions of live
        processes (another notebook on the same account) are theirs to close.

        The chain is trusted over the journal: rows closed in the last week are read back, and
        a session a rollback reopened (a reorg, a sandbox restored from older state) is closed
        again, whichever process closed it first."""
        outcomes = ("found", "closed", "settled", "abandoned", "reopened", "withdrawn")
        done = dict.fromkeys(outcomes, 0)
        now = await self.chain.block_timestamp()
        for entry in self.journal.unfinished(orphaned=True):
            if entry.state == "opening":
                session_id = await self._find_opened(entry)
                if session_id is None:
                    if now > _approval_seconds(entry) + APPROVAL_TTL_S:
                        self.journal.transition(entry.approval_hash, ABANDON)
                        done["abandoned"] += 1
                    continue
                raw = await self.chain.call("getSession", session_id)
                entry = self.journal.transition(
                    entry.approval_hash,
                    OPENED,
                    session_id="0x" + session_id.hex(),
                    ends_at=raw["endsAt"],
                )
                done["found"] += 1
            done[await self._settle(entry)] += 1
        await self._recheck_closed(done)
        done["withdrawn"] = await self.withdraw_released()
        return done

    async def _settle(self, entry: JournalEntry) -> str:
        """Bring one journaled session in line with the chain: "abandoned" when the chain does
        not hold it, "settled" when it is already closed there, else close it: "closed"."""
        raw = await self.chain.call("getSession", bytes.fromhex(entry.session_id[2:]))
        if int(raw["user"], 16) == 0:
            # not on this chain (a sandbox since reset, or an open a rollback undid)
            self.journal.transition(entry.approval_hash, ABANDON)
            return "abandoned"
        if raw["closedAt"]:
            self.journal.transition(entry.approval_hash, CLOSED)
            return "settled"
        await self.close(_from_entry(entry))
        return "closed"

    async def _recheck_closed(self, done: dict[str, int]) -> None:
        """Close again what the journal marks closed but the chain holds open (one batched
        read of the last week's closed rows)."""
        closed = self.journal.closed_since(time.time() - RECHECK_CLOSED_S)
        if not closed:
            return
        reads = [Call("getSession", (bytes.fromhex(e.session_id[2:]),)) for e in closed]
        for entry, raw in zip(closed, await self.chain.read_many(reads), strict=True):
            if isinstance(raw, Exception) or raw["closedAt"]:
                continue
            log.warning("session %s is open again on chain: closing it", entry.session_id)
            outcome = await self._settle(self.journal.transition(entry.approval_hash, REOPENED))
            done["reopened" if outcome == "closed" else outcome] += 1

    async def _find_opened(self, entry: JournalEntry) -> bytes | None:
        """The session an interrupted open created from this entry, if any: read from the
        receipt of the openSession transaction whose hashes the journal holds (written before
        each was broadcast); None when none was mined (or it reverted). Without a hash
        nothing was sent, unless the row predates hashes: then the session id derived from
        the approval (our contracts' getSessionId) is tried."""
        for tx_hash in filter(None, (entry.tx_hash or "").split(",")):
            receipt = await self.chain.rpc.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                if int(receipt["status"], 16) != 1:
                    return None
                return peer.opened_session_id(self.chain, receipt)
        if entry.tx_hash:
            return None
        approval = bytes.fromhex(entry.approval[2:])
        if not await self.chain.call("getIsProviderApprovalUsed", approval):
            return None
        exact = await self.chain.call(
            "getSessionId",
            self.signer.address,
            entry.provider,
            bytes.fromhex(entry.bid_id[2:]),
            decode_approval(approval).timestamp,
        )
        raw = await self.chain.call("getSession", exact)
        if raw["user"] == self.signer.address and "0x" + raw["bidId"].hex() == entry.bid_id:
            return exact
        log.warning("could not find the session of approval %s on chain", entry.approval_hash)
        return None

    def closable(self) -> dict[bytes, OpenSession]:
        """Sessions this account can close from here, by id: those this router opened and
        those its journal holds open (from this or an earlier process). A session this router
        opened that another close of the account has closed since is dropped here."""
        unfinished = self.journal.unfinished()
        self._drop_closed_elsewhere(unfinished)
        journaled = {
            bytes.fromhex(e.session_id[2:]): _from_entry(e)
            for e in unfinished
            if e.state in ("open", "closing") and e.session_id
        }
        return {**journaled, **self.opened}

    async def close_all(self) -> int:
        """Close every session this account's journal holds open; how many were closed."""
        closable = self.closable()
        for session in closable.values():
            await self.close(session)
        return len(closable)


def _approval_seconds(entry: JournalEntry) -> int:
    """When the entry's approval was signed, in chain seconds (live providers sign ms)."""
    stamp = decode_approval(bytes.fromhex(entry.approval[2:])).timestamp
    return stamp // 1000 if stamp > 10**12 else stamp


def _span(seconds: int) -> str:
    """600 -> "10 min", 86400 -> "1 day": a duration as people say it."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}"
    return f"{seconds} s"


def _from_entry(entry: JournalEntry) -> OpenSession:
    """A journaled session, enough to close it (it is not prompted again: no encryption)."""
    return OpenSession(
        bytes.fromhex(entry.session_id[2:]),
        bytes.fromhex(entry.model_id[2:]),
        bytes.fromhex(entry.bid_id[2:]),
        entry.provider,
        entry.endpoint,
        bytes.fromhex(entry.provider_pubkey[2:]),
        False,
        entry.ends_at or 0,
        entry.approval_hash,
    )
