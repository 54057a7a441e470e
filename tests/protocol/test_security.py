"""Freshness on the receiver's clock and one use per signature."""

from __future__ import annotations

import pytest

from mor_workbench.protocol import RemoteProtocolError, ReplayGuard, check_fresh


def test_stale_and_future_timestamps_are_refused() -> None:
    check_fresh(1_000_000, 1_000_000 + 119_000)
    with pytest.raises(RemoteProtocolError, match="off the provider's clock"):
        check_fresh(1_000_000, 1_000_000 + 121_000)
    with pytest.raises(RemoteProtocolError):
        check_fresh(1_000_000 + 121_000, 1_000_000)


def test_a_signature_is_accepted_once_within_the_window() -> None:
    guard = ReplayGuard(window_ms=1000)
    guard.check(b"sig-a", 10_000, 10_000)
    guard.check(b"sig-b", 10_000, 10_100)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        guard.check(b"sig-a", 10_000, 10_200)
    # after the window the old request is stale anyway, and its memory is released
    with pytest.raises(RemoteProtocolError):
        guard.check(b"sig-a", 10_000, 13_000)
    guard.check(b"sig-c", 13_000, 13_000)
    assert b"sig-a" not in guard._seen


def test_memory_is_bounded() -> None:
    guard = ReplayGuard(window_ms=10**9, max_entries=10)
    for i in range(100):
        guard.check(i.to_bytes(4, "big"), 0, 0)
    assert len(guard._seen) <= 10
