"""What a newcomer meets in the first hour: a sandbox whose "best" provider makes sense, and
reprs a person can read (issue 13, items 4 and 8)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.sandbox.market import MODELS, PROVIDERS
from mor_workbench.sandbox.model_server.profiles import PROFILES


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mor.Workbench]:
    """A sandbox of its own, as a newcomer's first `make demo` leaves it: no test traffic."""
    directory = tmp_path_factory.mktemp("fresh-sandbox")
    sandbox.start(directory)
    try:
        with mor.connect("sandbox", sandbox_dir=directory) as workbench:
            yield workbench
    finally:
        sandbox.reset(directory)


def test_fresh_sandbox_has_each_providers_record_on_chain(fresh) -> None:
    stats = fresh.stats()
    by_speed = {PROFILES[p.profile].tokens_per_second: p for p in PROVIDERS}
    for row in stats.itertuples():
        spec = by_speed[row.tps]
        assert row.ttft_ms == PROFILES[spec.profile].ttft_s * 1000
        assert row.success_count == spec.record.receipts
        assert row.total_count == spec.record.receipts + spec.record.disputes
    assert len(stats) == len(MODELS) * len(PROVIDERS)


def test_the_slowest_dearest_per_answer_provider_no_longer_ranks_first(fresh) -> None:
    bids = fresh.bids()
    stats = fresh.stats().set_index(["model", "provider"])
    for model in (m.name for m in MODELS):
        ranked = bids[bids["model"] == model].sort_values("score", ascending=False)
        tps = [stats.loc[(model, p), "tps"] for p in ranked["provider"]]
        # MOR per 1,000 generated tokens at each provider's own speed (what an answer costs)
        per_answer = list(ranked["price_per_second"] / [t / 1000 for t in tps])
        slowest = tps.index(min(tps))
        assert per_answer[slowest] == max(per_answer)  # the sandbox's trade-off, as built
        assert slowest == len(ranked) - 1, f"{model}: the slowest bid ranks {slowest + 1}"
        # quality before price (the score's numerator) follows speed and record
        assert list(ranked.sort_values("score_raw")["provider"]) == list(
            stats.loc[model].sort_values("tps").index
        )


def test_bids_say_why_each_bid_ranks_where_it_does(fresh) -> None:
    bids = fresh.bids("llama-3.2")
    stats = fresh.stats().set_index(["model", "provider"])
    pairs = zip(bids["provider"], bids["why"], strict=True)
    why = {stats.loc[("llama-3.2", p), "tps"]: w for p, w in pairs}
    fast, balanced, slow = (PROFILES[n].tokens_per_second for n in ("fast", "balanced", "slow"))
    assert why[fast].startswith("fast (tps 0.68)") and "reliable (success 1.00)" in why[fast]
    assert why[fast].endswith("dearest")
    assert why[slow].startswith("slow (tps 0.36)") and "unreliable (success 0.11)" in why[slow]
    assert why[slow].endswith("cheapest")
    assert "fast" not in why[balanced] and "cheapest" not in why[balanced]
