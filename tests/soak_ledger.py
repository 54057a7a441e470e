"""What the chain says about one consumer's money and sessions, for the soak test and the chaos
bench (bench/chaos.py). Everything here is read from the chain, never from a journal: these
are the instruments that check the journal and the router.

The consumer's MOR is conserved: every wei that leaves its wallet is in an open session's
stake, on hold (released at the next UTC day, as the contract keeps today's used stake), or
was paid to a provider out of a direct-payment session (in staking mode providers are paid
from the funding account, not from the consumer). `Ledger.unaccounted` is what is left over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mor_workbench.chain.client import Call, Chain

__all__ = ["Ledger", "SessionFacts", "ledger", "session_count", "warp"]

ON_HOLD_ITERATIONS = 255  # how many on-hold entries the contract's views and withdraw walk


@dataclass(frozen=True)
class SessionFacts:
    """One session of the consumer as the chain holds it (wei, chain seconds)."""

    session_id: str
    provider: str
    stake: int
    direct: bool
    opened_at: int
    ends_at: int
    closed_at: int
    disputed: bool  # closed with the consumer's own receipt (closeoutType 1)
    price_per_second: int

    @property
    def is_open(self) -> bool:
        return self.closed_at == 0

    @property
    def paid_by_consumer(self) -> int:
        """What a closed direct-payment session took from the consumer's stake for the
        provider: (min(closedAt, endsAt) - openedAt) * price, as SessionFacet._close does."""
        if not self.direct or self.is_open:
            return 0
        return (min(self.closed_at, self.ends_at) - self.opened_at) * self.price_per_second


@dataclass(frozen=True)
class Ledger:
    """The consumer's MOR (wei) and its sessions since a starting index."""

    wallet: int
    on_hold_available: int  # released, waiting for withdrawUserStakes
    on_hold_locked: int  # released at a later UTC day
    sessions: list[SessionFacts] = field(default_factory=list)

    @property
    def staked(self) -> int:
        return sum(s.stake for s in self.sessions if s.is_open)

    @property
    def paid_to_providers(self) -> int:
        return sum(s.paid_by_consumer for s in self.sessions)

    @property
    def on_hold(self) -> int:
        return self.on_hold_available + self.on_hold_locked

    def unaccounted(self, before: Ledger) -> int:
        """Wei of the consumer's MOR (from `before`, with no session open then) that is not in
        its wallet, on hold, or paid to a provider: stakes still in open sessions count here,
        since nothing will bring them back unless someone closes them."""
        return before.wallet + before.on_hold - self.wallet - self.on_hold - self.paid_to_providers

    def open_sessions(self) -> list[SessionFacts]:
        return [s for s in self.sessions if s.is_open]

    def disputed(self) -> list[SessionFacts]:
        return [s for s in self.sessions if s.disputed]


async def session_count(chain: Chain, user: str) -> int:
    """How many sessions `user` ever opened (the index the next one will have)."""
    _, total = await chain.call("getUserSessions", user, 0, 1)
    return total


async def ledger(chain: Chain, user: str, since: int = 0) -> Ledger:
    """`user`'s balances now and its sessions from index `since` on (oldest first)."""
    token = chain.deployment.token
    wallet = await chain.call("balanceOf", user, to=token)
    available, locked = await chain.call("getUserStakesOnHold", user, ON_HOLD_ITERATIONS)
    total = await session_count(chain, user)
    ids: list[bytes] = []
    while since + len(ids) < total:
        page, _ = await chain.call("getUserSessions", user, since + len(ids), 500)
        if not page:
            break
        ids.extend(page)
    raw = await chain.read_many([Call("getSession", (i,)) for i in ids])
    bid_ids = sorted({r["bidId"] for r in raw})
    found = await chain.read_many([Call("getBid", (b,)) for b in bid_ids])
    bids = dict(zip(bid_ids, found, strict=True))
    sessions = [_facts(i, r, bids[r["bidId"]]) for i, r in zip(ids, raw, strict=True)]
    return Ledger(wallet, available, locked, sessions)


def _facts(session_id: bytes, raw: dict[str, Any], bid: dict[str, Any]) -> SessionFacts:
    return SessionFacts(
        "0x" + session_id.hex(),
        bid["provider"],
        raw["stake"],
        raw["isDirectPaymentFromUser"],
        raw["openedAt"],
        raw["endsAt"],
        raw["closedAt"],
        raw["closeoutType"] == 1,
        bid["pricePerSecond"],
    )


async def warp(chain: Chain, seconds: int) -> None:
    """Move the (anvil) chain's clock `seconds` ahead and mine a block at the new time."""
    await chain.rpc.request("evm_increaseTime", [seconds])
    await chain.rpc.request("evm_mine", [])
