"""Rank bids the way the live proxy-router does (its default scorer), with its stake overflow fixed.

Inputs come from chain: the provider-model stats, the model's stats across providers, the
provider's stake, the minimum stake and the bid price. Each part is kept so `bids()` can show why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_WEIGHTS", "Score", "ScoreInput", "explain_score", "score_bid"]

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


_PART_WORDS: Mapping[str, tuple[str, str]] = {
    "tps": ("fast", "slow"),
    "ttft": ("quick first token", "slow first token"),
    "duration": ("much used", "little used"),
    "success": ("reliable", "unreliable"),
}


def explain_score(score: Score, price_rank: str | None = None) -> str:
    """Why a bid scores as it does, in a few words from its parts: each stat part well above or
    below the market's middle (0.5; success above 0.8 or below 0.5) with its value, then the
    price when `price_rank` ("cheapest", "dearest") says it stands out, e.g.
    "fast (tps 0.68), reliable (success 1.00), dearest". "no history" when the provider has no
    closed sessions (the stats parts then carry no information and the price decides)."""
    words = []
    for part, (good, bad) in _PART_WORDS.items():
        value = getattr(score, part)
        high, low = (0.8, 0.5) if part == "success" else (0.55, 0.45)
        if value >= high:
            words.append(f"{good} ({part} {value:.2f})")
        elif value <= low and not (part == "success" and value == 0):
            words.append(f"{bad} ({part} {value:.2f})")
    if score.success == 0 and score.tps == score.ttft == score.duration == 0.5:
        words = ["no history"]
    if price_rank:
        words.append(price_rank)
    return ", ".join(words)
