"""The reference scorer, reproduced: a worked example, its documented behaviours, the stake fix."""

from __future__ import annotations

import math

import pytest

from mor_workbench.router.scoring import ScoreInput, score_bid

MOR = 10**18


def stats(mean: int, sq_sum: int) -> dict[str, int]:
    return {"mean": mean, "sqSum": sq_sum}


def make(**changes) -> ScoreInput:
    base = {
        "price_per_second": 10**13,
        "provider_stake": MOR,
        "min_stake": MOR // 5,
        "provider_model": {
            "tpsScaled1000": stats(12_000, 0),
            "ttftMs": stats(300, 0),
            "totalDuration": 3600,
            "successCount": 3,
            "totalCount": 4,
        },
        "model": {
            "tpsScaled1000": stats(10_000, 8_000_000),
            "ttftMs": stats(500, 20_000),
            "totalDuration": stats(3600, 720_000),
            "count": 3,
        },
    }
    base.update(changes)
    return ScoreInput(**base)


def test_worked_example() -> None:
    # sd(tps) = sqrt(8e6 / 2) = 2000 -> z = +1 -> 4/6; sd(ttft) = 100 -> -z = +2 -> 5/6;
    # duration at the mean -> 1/2; success (3/4)^2; stake (1 - 0.2) / (2 - 0.2) MOR.
    s = score_bid(make())
    assert s.tps == pytest.approx(4 / 6)
    assert s.ttft == pytest.approx(5 / 6)
    assert s.duration == pytest.approx(0.5)
    assert s.success == pytest.approx(0.5625)
    assert s.stake == pytest.approx(0.8 / 1.8)
    assert s.raw == pytest.approx(
        0.24 * 4 / 6 + 0.08 * 5 / 6 + 0.24 * 0.5 + 0.32 * 0.5625 + 0.12 * 0.8 / 1.8
    )
    assert s.score == pytest.approx(s.raw / 1e-5)


def test_new_provider_scores_half_on_stats_and_zero_on_success() -> None:
    fresh = {
        "tpsScaled1000": stats(0, 0),
        "ttftMs": stats(0, 0),
        "totalDuration": 0,
        "successCount": 0,
        "totalCount": 0,
    }
    empty = {
        "tpsScaled1000": stats(0, 0),
        "ttftMs": stats(0, 0),
        "totalDuration": stats(0, 0),
        "count": 0,
    }
    s = score_bid(make(provider_model=fresh, model=empty))
    assert (s.tps, s.ttft, s.duration, s.success) == (0.5, 0.5, 0.5, 0.0)
    assert math.isfinite(s.score)


def test_z_scores_are_cut_at_three_sigma() -> None:
    far = make(provider_model={**make().provider_model, "tpsScaled1000": stats(10**9, 0)})
    assert score_bid(far).tps == 1.0


def test_price_divides_the_score() -> None:
    cheap, dear = score_bid(make()), score_bid(make(price_per_second=2 * 10**13))
    assert cheap.score == pytest.approx(2 * dear.score)


def test_large_stakes_do_not_wrap() -> None:
    # 10,000 MOR is above int64 in wei: the reference's Int64() wraps; ours saturates at 1.
    assert score_bid(make(provider_stake=10_000 * MOR)).stake == 1.0
    assert score_bid(make(provider_stake=MOR // 10)).stake == 0.0


def test_negative_rounding_variance_counts_as_no_spread() -> None:
    model = {**make().model, "tpsScaled1000": stats(10_000, -5)}
    assert score_bid(make(model=model)).tps == 0.5
