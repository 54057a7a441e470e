"""The provider's claims: collecting on chain what its sessions earned and the user's close did
not pay, in rounds, with a pause that doubles after each failed round."""

from __future__ import annotations

import asyncio
import logging

from mor_workbench._tasks import cancel_and_wait
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import MorError, one_line
from mor_workbench.provider.capacity import Capacity

__all__ = ["CLAIM_BACKOFF_MAX_S", "STATS_KEPT_AFTER_END_S", "Claimer"]

log = logging.getLogger("mor_workbench.provider")
CLAIM_BACKOFF_MAX_S = 600.0
STATS_KEPT_AFTER_END_S = 86_400  # how long an ended, unclosed session's measurements are kept


class Claimer:
    """Claims for the provider `signer` the payments of the sessions `capacity` follows."""

    def __init__(
        self,
        *,
        chain: Chain,
        signer: Signer,
        capacity: Capacity,
        interval: float | None,
        backoff_max: float = CLAIM_BACKOFF_MAX_S,
    ) -> None:
        """`interval` (s): the pause between rounds (None: no rounds but `claim_owed()`);
        after a failed round the pause doubles, up to `backoff_max` (s)."""
        self.chain = chain
        self.signer = signer
        self.capacity = capacity
        self.interval = interval
        self.backoff_max = backoff_max
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Claim every `interval` s from now on (nothing without an interval)."""
        if self.interval:
            self._task = asyncio.create_task(self._claim_forever(self.interval))

    async def stop(self) -> None:
        """Stop claiming (a round under way is cancelled)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _claim_forever(self, interval: float) -> None:
        """Claim rounds every `interval` s; after a failed round, one log line with the reason
        and a pause that doubles per failure, up to `backoff_max` s."""
        failures = 0
        while True:
            try:
                await self.claim_owed()
                failures = 0
            except asyncio.CancelledError:
                raise
            except MorError as exc:  # the chain unreachable or refusing: a reason, no traceback
                failures += 1
                log.warning(
                    "claiming provider payments failed (%s); retrying in %g s",
                    one_line(exc),
                    self._pause(interval, failures),
                )
            except Exception:  # a bug: keep the traceback, but back off all the same
                failures += 1
                log.exception(
                    "claiming provider payments failed; retrying in %g s",
                    self._pause(interval, failures),
                )
            await asyncio.sleep(self._pause(interval, failures))

    def _pause(self, interval: float, failures: int) -> float:
        if not failures:
            return interval
        return min(interval * 2**failures, max(interval, self.backoff_max))

    async def claim_owed(self) -> int:
        """Find our sessions on chain and claim what has become payable; how many claims paid.

        Payment normally arrives in the user's closeSession; a claim collects sessions the user
        never closed (after their end), the day's part held back by a disputed close (the next
        day), and what the payout cap left unpaid (when the cap's period resets). A session
        paid in full is let go, with what was kept about it, once it is closed (or a day after
        its end, as a user may still close an ended session with a receipt); the sessions
        held open are re-read each round, so one closed early is let go within a round.
        Raises `ChainError` when the chain cannot be read or refuses a claim.
        """
        capacity = self.capacity
        await capacity.sync()
        await capacity.reread_open()
        now = await self.chain.block_timestamp()
        paid = 0
        for session_id, not_before in list(capacity.owed.items()):
            if now < not_before:
                continue
            session = await self.chain.call("getSession", session_id)
            bid = await self.chain.call("getBid", session["bidId"])
            capacity.note(session_id, session, bid["modelId"], now)
            closed, ends = session["closedAt"], session["endsAt"]
            end = closed if closed and closed < ends else ends
            earned = (end - session["openedAt"]) * bid["pricePerSecond"]
            if session["providerWithdrawnAmount"] >= earned:  # fully paid
                if closed or now >= end + STATS_KEPT_AFTER_END_S:
                    del capacity.owed[session_id]
                    capacity.forget(session_id)
                else:
                    capacity.owed[session_id] = end + STATS_KEPT_AFTER_END_S
                continue
            if now < end:
                capacity.owed[session_id] = end
                continue
            before = session["providerWithdrawnAmount"]
            await self.chain.transact(self.signer, "claimForProvider", session_id)
            after = (await self.chain.call("getSession", session_id))["providerWithdrawnAmount"]
            if after > before:
                paid += 1
            if after < earned:  # held for the day or capped: look again tomorrow
                capacity.owed[session_id] = now - now % 86400 + 86400
        return paid
