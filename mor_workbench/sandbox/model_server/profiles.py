"""Latency profiles: how fast a simulated server answers and how often it misbehaves."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PROFILES", "LatencyProfile"]


@dataclass(frozen=True)
class LatencyProfile:
    """How one simulated server behaves: time to first token, speed, and how often it fails.

    Rates are per-request probabilities drawn from the server's seeded RNG, so the n-th request
    to a server with a given seed always meets the same fate.
    """

    ttft_s: float = 0.05  # seconds before the first token (and before a non-streamed reply)
    tokens_per_second: float = 200.0  # generation speed after the first token (inf: no wait)
    jitter: float = 0.1  # each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
    error_rate: float = 0.0  # answer HTTP 500 before any output
    stall_rate: float = 0.0  # pause for stall_s once, somewhere mid-stream
    stall_s: float = 5.0
    disconnect_rate: float = 0.0  # close the connection mid-stream (or mid-generation)
    # Embeddings have a latency of their own: no generation, a fixed overhead plus the input
    # read at a rate far above generation speed (an encoder pass over every input token).
    embedding_base_s: float = 0.01  # seconds before any embeddings answer
    embedding_tokens_per_second: float = 20_000.0  # input tokens embedded per second (inf: no wait)

    def __post_init__(self) -> None:
        if not (self.ttft_s >= 0 and self.stall_s >= 0 and self.embedding_base_s >= 0):
            raise ValueError("ttft_s, stall_s and embedding_base_s must be >= 0")
        if not (self.tokens_per_second > 0 and self.embedding_tokens_per_second > 0):
            raise ValueError("tokens_per_second and embedding_tokens_per_second must be > 0")
        for name in ("jitter", "error_rate", "stall_rate", "disconnect_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


PROFILES: dict[str, LatencyProfile] = {
    "fast": LatencyProfile(
        ttft_s=0.03,
        tokens_per_second=400.0,
        embedding_base_s=0.005,
        embedding_tokens_per_second=50_000.0,
    ),
    "balanced": LatencyProfile(ttft_s=0.08, tokens_per_second=150.0),
    "slow": LatencyProfile(
        ttft_s=0.25,
        tokens_per_second=50.0,
        embedding_base_s=0.04,
        embedding_tokens_per_second=5_000.0,
    ),
    "flaky": LatencyProfile(
        ttft_s=0.08,
        tokens_per_second=150.0,
        jitter=0.3,
        error_rate=0.2,
        stall_rate=0.1,
        stall_s=3.0,
        disconnect_rate=0.1,
    ),
    # No waiting at all: for tests that check content, not timing.
    "instant": LatencyProfile(
        ttft_s=0.0,
        tokens_per_second=math.inf,
        jitter=0.0,
        embedding_base_s=0.0,
        embedding_tokens_per_second=math.inf,
    ),
}
