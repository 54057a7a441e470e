"""Provider choice on top of the reference score: weighted among the top, cooldown, filters."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

import mor_workbench as mor
from mor_workbench.router.scoring import Score


@dataclass(frozen=True)
class Bid:
    provider: str
    price_per_second: int
    score: Score


def bid(provider: str, score: float, price_mor: float = 1e-4) -> Bid:
    return Bid(provider, int(price_mor * 1e18), Score(0, 0, 0, 0, 0, 0, score))


BIDS = [bid("0xA", 40.0), bid("0xB", 30.0), bid("0xC", 20.0), bid("0xD", 10.0)]


def test_best_is_the_reference_order() -> None:
    order = mor.Strategy(order="best").choose(list(reversed(BIDS)))
    assert [b.provider for b in order] == ["0xA", "0xB", "0xC", "0xD"]


def test_weighted_spreads_first_picks_over_the_top_by_score() -> None:
    rng = random.Random(7)
    strategy = mor.Strategy()  # the default: weighted among the top 3
    firsts = Counter(strategy.choose(BIDS, rng=rng)[0].provider for _ in range(9000))
    assert set(firsts) == {"0xA", "0xB", "0xC"}  # 0xD is not in the top 3
    for provider, score in (("0xA", 40), ("0xB", 30), ("0xC", 20)):
        assert firsts[provider] / 9000 == pytest.approx(score / 90, abs=0.03)
    order = strategy.choose(BIDS, rng=rng)
    assert sorted(b.provider for b in order) == ["0xA", "0xB", "0xC", "0xD"]  # all still asked


def test_providers_cooling_down_are_asked_last() -> None:
    order = mor.Strategy(order="best").choose(BIDS, cooling=["0xa", "0xC"])
    assert [b.provider for b in order] == ["0xB", "0xD", "0xA", "0xC"]


def test_allow_deny_and_price_cap_filter_bids() -> None:
    cheap = [bid("0xA", 40.0, 5e-4), bid("0xB", 30.0, 1e-4), bid("0xC", 20.0, 2e-4)]
    assert [b.provider for b in mor.Strategy("best", deny=["0xB"]).choose(cheap)] == ["0xA", "0xC"]
    allowed = mor.Strategy("best", allow=["0xc", "0xb"]).choose(cheap)
    assert [b.provider for b in allowed] == ["0xB", "0xC"]
    capped = mor.Strategy("best", max_price_per_second=2e-4).choose(cheap)
    assert [b.provider for b in capped] == ["0xB", "0xC"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": "cheapest"}, "not known"),
        ({"top": 0}, "at least 1"),
        ({"deny": "0xA"}, "list of addresses"),
        ({"colour": "red"}, "not understood"),
    ],
)
def test_bad_strategies_are_named(options, message) -> None:
    with pytest.raises(mor.ConfigurationError, match=message):
        mor.Strategy.of(options)


def test_filters_that_leave_nothing_say_so(sandbox_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    with (
        mor.connect("sandbox", sandbox_dir=sandbox_dir, strategy={"max_price_per_second": 0}) as wb,
        pytest.raises(mor.NoProviderAvailable, match="strategy's filters"),
    ):
        wb.chat("hi", model="llama-3.3-70b")
