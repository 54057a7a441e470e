"""Checks the live protocol lacks, kept compatible with it: a request's timestamp must be
fresh on the receiver's clock, and a signature is accepted once (time is passed in)."""

from __future__ import annotations

from collections import OrderedDict

from mor_workbench.protocol.errors import RemoteProtocolError

__all__ = ["DEFAULT_WINDOW_MS", "ReplayGuard", "check_fresh"]

DEFAULT_WINDOW_MS = 120_000


def check_fresh(timestamp_ms: int, now_ms: int, window_ms: int = DEFAULT_WINDOW_MS) -> None:
    """Refuse a request stamped more than `window_ms` away from our clock."""
    if abs(now_ms - timestamp_ms) > window_ms:
        raise RemoteProtocolError(
            f"request timestamp is {abs(now_ms - timestamp_ms) // 1000} s off the provider's clock"
        )


class ReplayGuard:
    """Remembers signatures seen within the freshness window; a second use is a replay.

    A signature is remembered by r ‖ s: v (0/1, or 27/28 as on chain) only helps recover the
    signer's key, so the same signature with v rewritten recovers the same key and is the
    same signature."""

    def __init__(self, window_ms: int = DEFAULT_WINDOW_MS, max_entries: int = 100_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def check(self, signature: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Accept `signature` once; raise on a replay or a stale timestamp."""
        check_fresh(timestamp_ms, now_ms, self.window_ms)
        while self._seen:
            oldest, stamp = next(iter(self._seen.items()))
            if now_ms - stamp <= 2 * self.window_ms and len(self._seen) < self.max_entries:
                break
            self._seen.pop(oldest)
        signed = signature[:64]
        if signed in self._seen:
            raise RemoteProtocolError("replayed request: this signature was already used")
        self._seen[signed] = now_ms
