"""History from chain events, provider comparisons, and the figures drawn from them."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

import mor_workbench as mor
from mor_workbench.sandbox.market import PROVIDERS


@pytest.fixture
def wb(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    workbench.close()


def test_history_lists_the_sessions_opened_in_the_window(wb) -> None:
    with wb.open_session("qwen3-235b", duration="6m") as session:
        session.chat("hi", max_tokens=2)
    recent = wb.history(days=1, progress=False)
    row = recent.set_index("id").loc[session.id]
    assert row["model"] == "qwen3-235b" and row["provider"] == session.info()["provider"]
    assert row["planned_s"] >= 360 and 0 <= row["used_s"] < row["planned_s"]
    assert recent["opened_at"].is_monotonic_increasing
    # this young sandbox's sessions all fall in the window: the consumer's rows are its own
    mine = recent.loc[recent["user"] == wb.address, "id"]
    assert set(mine) == set(wb.sessions()["id"])
    with pytest.raises(mor.ConfigurationError, match="positive"):
        wb.history(days=0)


def test_compare_measures_every_provider_side_by_side(wb) -> None:
    table = wb.compare("Describe a harbor.", "llama-3.3-70b", runs=2, max_tokens=12)
    assert len(table) == len(PROVIDERS) and set(table["errors"]) == {0}
    assert (table["runs"] == 2).all()
    assert (table["ttft_p50_s"] > 0).all() and (table["ttft_p90_s"] >= table["ttft_p50_s"]).all()
    assert (table["e2e_p50_s"] > table["ttft_p50_s"]).all() and (table["itl_p50_s"] > 0).all()
    assert (table["completion_tokens_mean"] == 12).all()
    assert len(set(table["answer"])) == 1  # the same prompt, the same (deterministic) answer
    assert (table["cost_per_1k_tokens"] > 0).all()
    assert table["e2e_p50_s"].is_monotonic_increasing  # fastest first
    # the slow-profile provider is the slowest to its first token
    slowest = table.sort_values("ttft_p50_s").iloc[-1]
    assert slowest["price_per_second"] == table["price_per_second"].min()
    active = wb.sessions().loc[lambda s: s["is_active"], "bid_id"]
    assert not set(table["bid_id"]) & set(active)  # every comparison session was closed


def test_figures_are_drawn_from_the_tables(wb) -> None:
    bids = wb.bids("llama-3.3-70b")
    assert isinstance(mor.plots.price_vs_score(bids), go.Figure)
    joined = mor.plots.effective_token_prices(wb.bids(), wb.stats())
    measured = joined.dropna(subset=["mor_per_1k_tokens"])
    assert not measured.empty
    assert (
        measured["mor_per_1k_tokens"] == 1000 * measured["price_per_second"] / measured["tps"]
    ).all()
    assert isinstance(mor.plots.price_per_token(wb.bids(), wb.stats()), go.Figure)
    history = wb.history(days=1, progress=False)
    figure = mor.plots.sessions_over_time(history)
    assert sum(sum(trace.y) for trace in figure.data) == len(history)
    with pytest.raises(mor.ConfigurationError, match=r"wb\.compare"):
        mor.plots.compare_latency(pd.DataFrame({"x": [1]}))
