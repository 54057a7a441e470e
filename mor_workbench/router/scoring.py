"""Rank bids the way the live proxy-router does (its default scorer), with its stake overflow fixed.

Inputs come from chain: the provider-model stats, the model's stats across providers, the
provider's stake, the minimum stake and the bid price. Each part is kept so `bids()` can show why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_WEIGHTS", "Score", "ScoreInput", "score_bid"]

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "tps": 0.24,
    "ttft": 0.08,
    "duration": 0.24,
    "success": 0.32,
    "stake": 0.12,
}
_Z_RANGE = 3.0


@dataclass(frozen=True)
class ScoreInput:
    """Everything the scorer reads for one bid (contract structs as decoded dicts)."""

    price_per_second: int
    provider_stake: int
    min_stake: int
    provider_model: Mapping[str, Any]  # getProviderModelStats
    model: Mapping[str, Any]  # getModelStats


@dataclass(frozen=True)
class Score:
    """The score of one bid and its parts (each part in [0, 1] before weighting)."""

    tps: float
    ttft: float
    duration: float
    success: float
    stake: float
    raw: float
    score: float


def _sd(stat: Mapping[str, int], observations: int) -> float:
    if observations <= 1:
        return 0.0
    variance = stat["sqSum"] / (observations - 1)
    # Rounding in the contract's integer running sums can leave a tiny negative sum of squares;
    # the reference then takes sqrt of a negative number (NaN) and drops the bid. Treat as 0.
    return math.sqrt(variance) if variance > 0 else 0.0


def _z(value: int, stat: Mapping[str, int], observations: int) -> float:
    sd = _sd(stat, observations)
    return 0.0 if sd == 0 else (value - stat["mean"]) / sd


def _norm_range(z: float) -> float:
    return min(1.0, max(0.0, (z + _Z_RANGE) / (2 * _Z_RANGE)))


def _norm_min_max(value: int, low: int, high: int) -> float:
    # Exact integers: the reference converts wei to int64 first, which wraps above ~9.22 MOR.
    if high == low or value < low:
        return 0.0
    if value > high:
        return 1.0
    return (value - low) / (high - low)


def score_bid(bid: ScoreInput, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> Score:
    """The reference's default score: weighted stats and stake, divided by the price in MOR/s."""
    pm, model = bid.provider_model, bid.model
    count = int(model["count"])
    tps = _norm_range(_z(pm["tpsScaled1000"]["mean"], model["tpsScaled1000"], count))
    ttft = _norm_range(-_z(pm["ttftMs"]["mean"], model["ttftMs"], count))
    duration = _norm_range(_z(pm["totalDuration"], model["totalDuration"], count))
    total = pm["totalCount"]
    success = (pm["successCount"] / total) ** 2 if total else 0.0
    stake = _norm_min_max(bid.provider_stake, bid.min_stake, 10 * bid.min_stake)
    raw = (
        weights["tps"] * tps
        + weights["ttft"] * ttft
        + weights["duration"] * duration
        + weights["success"] * success
        + weights["stake"] * stake
    )
    score = raw / (bid.price_per_second / 1e18)
    return Score(tps, ttft, duration, success, stake, raw, score)
