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
    bids = fresh.bids("llama-3.3-70b")
    stats = fresh.stats().set_index(["model", "provider"])
    pairs = zip(bids["provider"], bids["why"], strict=True)
    why = {stats.loc[("llama-3.3-70b", p), "tps"]: w for p, w in pairs}
    fast, balanced, slow = (PROFILES[n].tokens_per_second for n in ("fast", "balanced", "slow"))
    assert why[fast].startswith("fast (tps 0.68)") and "reliable (success 1.00)" in why[fast]
    assert why[fast].endswith("dearest")
    assert why[slow].startswith("slow (tps 0.36)") and "unreliable (success 0.11)" in why[slow]
    assert why[slow].endswith("cheapest")
    assert "fast" not in why[balanced] and "cheapest" not in why[balanced]


def test_tables_put_what_a_person_reads_first(fresh) -> None:
    assert list(fresh.models().columns[:2]) == ["name", "id_short"]
    assert list(fresh.bids().columns[:6]) == [
        "model",
        "provider_short",
        "id_short",
        "price_per_second",
        "score",
        "why",
    ]
    assert fresh.providers().columns[0] == "address_short"
    assert list(fresh.stats().columns[:2]) == ["model", "provider_short"]
    assert list(fresh.sessions().columns[:3]) == ["id_short", "model", "provider_short"]


def _pretty(value: object) -> str:
    from IPython.lib.pretty import pretty

    return pretty(value)


def test_balance_shows_rounded_mor_with_units_and_keeps_exact_values(fresh) -> None:
    balance = fresh.balance()
    assert isinstance(balance, dict) and balance["mor"] == 10_000.0  # exact, as before
    assert balance["mor_allowance"] == 0.0
    for shown in (repr(balance), _pretty(balance), balance._repr_html_()):
        assert "10,000 MOR" in shown and "1,000 ETH" in shown
    assert "mor_staked=0 MOR" in repr(balance)


def test_session_and_stream_info_show_short_addresses_ms_and_mor(fresh) -> None:
    with fresh.open_session("llama-3.3-70b", duration="10m") as session:
        info = session.info()
        provider = info["provider"]
        assert len(provider) == 42 and info["price_per_second"] > 0  # exact values
        shown = repr(info)
        assert f"provider={provider[:6]}…{provider[-4:]}" in shown and provider not in shown
        assert f"{info['price_per_second']:.5g} MOR/s" in shown
        assert f"{info['ends_at']:%Y-%m-%d %H:%M:%S} UTC" in _pretty(info)
        stream = session.stream("Hi", max_tokens=8)
        assert "".join(stream)
        call = stream.info
        assert isinstance(call["ttft_s"], float) and call["session_id"] == session.id
        shown = repr(call)
        assert f"ttft_s={call['ttft_s'] * 1000:,.0f} ms" in shown
        assert f"tokens_per_s={call['tokens_per_s']:,.1f} tokens/s" in shown
        assert "cost_mor=" in shown and " MOR" in shown and session.id not in shown
        assert "<code>cost_mor</code>" in call._repr_html_()
