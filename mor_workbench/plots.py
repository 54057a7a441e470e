"""Plotly figures of the market tables: prices against scores, the price of an effective
token, sessions over time, and provider comparisons. Each takes the DataFrame the matching
workbench method returns and gives back a `plotly.graph_objects.Figure`."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mor_workbench.errors import ConfigurationError

__all__ = [
    "compare_cost",
    "compare_latency",
    "effective_token_prices",
    "price_per_token",
    "price_vs_score",
    "sessions_over_time",
]


def _need(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"this figure needs the table from {source} (missing {missing})")


def price_vs_score(bids: pd.DataFrame) -> go.Figure:
    """Each bid's price per hour against its score (from `wb.bids(model)`): up and to the
    left is the better deal."""
    _need(bids, ["price_per_hour", "score", "model", "provider_short"], "wb.bids(model)")
    figure = px.scatter(
        bids,
        x="price_per_hour",
        y="score",
        color="model",
        hover_data=["provider_short", "price_per_second", "id_short"],
        labels={"price_per_hour": "price (MOR per hour)", "score": "score (higher is better)"},
        title="Bids: price against score",
    )
    return figure.update_traces(marker={"size": 12})


def effective_token_prices(bids: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Bids joined with their provider's measured speed: MOR per 1K tokens actually generated
    (price per second over tokens per second), the price a per-second bid really costs."""
    _need(bids, ["model", "provider", "price_per_second"], "wb.bids()")
    _need(stats, ["model", "provider", "tps"], "wb.stats()")
    joined = bids.merge(stats[["model", "provider", "tps"]], on=["model", "provider"], how="left")
    speed = joined["tps"].where(joined["tps"] > 0)
    joined["mor_per_1k_tokens"] = 1000 * joined["price_per_second"] / speed
    return joined


def price_per_token(bids: pd.DataFrame, stats: pd.DataFrame) -> go.Figure:
    """MOR per 1K generated tokens for each bid with measured speed, grouped by model."""
    joined = effective_token_prices(bids, stats).dropna(subset=["mor_per_1k_tokens"])
    return px.bar(
        joined,
        x="model",
        y="mor_per_1k_tokens",
        color="provider_short",
        barmode="group",
        labels={"mor_per_1k_tokens": "MOR per 1K tokens"},
        title="The price of an effective token",
    )


def sessions_over_time(history: pd.DataFrame, freq: str = "1h") -> go.Figure:
    """Sessions opened per `freq` interval, by model (from `wb.history()`)."""
    _need(history, ["opened_at", "model"], "wb.history()")
    counts = (
        history.groupby([pd.Grouper(key="opened_at", freq=freq), "model"])
        .size()
        .rename("sessions")
        .reset_index()
    )
    return px.bar(
        counts, x="opened_at", y="sessions", color="model", title=f"Sessions opened per {freq}"
    )


def compare_latency(compare: pd.DataFrame) -> go.Figure:
    """Median TTFT and end-to-end latency per provider, whiskers to the 90th percentile
    (from `wb.compare()`)."""
    _need(
        compare,
        ["provider_short", "ttft_p50_s", "ttft_p90_s", "e2e_p50_s", "e2e_p90_s"],
        "wb.compare()",
    )
    figure = go.Figure()
    for metric, label in (("ttft", "time to first token"), ("e2e", "end to end")):
        p50, p90 = compare[f"{metric}_p50_s"], compare[f"{metric}_p90_s"]
        figure.add_bar(
            name=label,
            x=compare["provider_short"],
            y=p50,
            error_y={"type": "data", "symmetric": False, "array": p90 - p50},
        )
    return figure.update_layout(
        barmode="group", title="Latency by provider (median, whisker to p90)", yaxis_title="s"
    )


def compare_cost(compare: pd.DataFrame) -> go.Figure:
    """Cost per 1K tokens against tokens per second, one point per provider."""
    _need(compare, ["provider_short", "tokens_per_s_p50", "cost_per_1k_tokens"], "wb.compare()")
    figure = px.scatter(
        compare,
        x="tokens_per_s_p50",
        y="cost_per_1k_tokens",
        text="provider_short",
        labels={"tokens_per_s_p50": "tokens per second", "cost_per_1k_tokens": "MOR per 1K tokens"},
        title="Speed against cost",
    )
    return figure.update_traces(marker={"size": 14}, textposition="top center")
