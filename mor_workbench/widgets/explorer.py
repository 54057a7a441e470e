"""Explorer: models → bids → providers, sortable and filterable, with a plotly price/score
scatter of every bid."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ipywidgets
import pandas as pd
import plotly.graph_objects as go
import traitlets

from mor_workbench import plots
from mor_workbench.widgets._base import MorWidget, asset, records
from mor_workbench.workbench import AsyncWorkbench, Workbench

__all__ = ["Explorer"]

# Each view's columns: key, label, kind (how the front end formats it).
COLUMNS: dict[str, list[dict[str, str]]] = {
    "models": [
        {"key": "name", "label": "model", "kind": "text"},
        {"key": "tags", "label": "tags", "kind": "text"},
        {"key": "bids", "label": "bids", "kind": "int"},
        {"key": "best_price_per_hour", "label": "from MOR/h", "kind": "mor"},
        {"key": "best_score", "label": "best score", "kind": "num"},
        {"key": "tps", "label": "tok/s", "kind": "num"},
        {"key": "fee", "label": "fee MOR", "kind": "mor"},
        {"key": "stake", "label": "stake MOR", "kind": "mor"},
        {"key": "id_short", "label": "id", "kind": "code"},
    ],
    "bids": [
        {"key": "model", "label": "model", "kind": "text"},
        {"key": "provider_short", "label": "provider", "kind": "code"},
        {"key": "price_per_hour", "label": "MOR/h", "kind": "mor"},
        {"key": "score", "label": "score", "kind": "num"},
        {"key": "why", "label": "why", "kind": "text"},
        {"key": "tps", "label": "tok/s", "kind": "num"},
        {"key": "ttft_ms", "label": "TTFT ms", "kind": "num"},
        {"key": "success_rate", "label": "success", "kind": "pct"},
        {"key": "total_count", "label": "calls", "kind": "int"},
        {"key": "endpoint", "label": "endpoint", "kind": "code"},
        {"key": "id_short", "label": "bid", "kind": "code"},
    ],
    "providers": [
        {"key": "address_short", "label": "provider", "kind": "code"},
        {"key": "endpoint", "label": "endpoint", "kind": "code"},
        {"key": "models", "label": "models", "kind": "text"},
        {"key": "bids", "label": "bids", "kind": "int"},
        {"key": "best_price_per_hour", "label": "from MOR/h", "kind": "mor"},
        {"key": "tps", "label": "tok/s", "kind": "num"},
        {"key": "success_rate", "label": "success", "kind": "pct"},
        {"key": "stake", "label": "stake MOR", "kind": "mor"},
        {"key": "earned", "label": "earned MOR", "kind": "mor"},
    ],
}
DEFAULT_SORT = {"models": ("name", False), "bids": ("score", True), "providers": ("stake", True)}
DIMMED = 0.2  # opacity of the other models' bids in the scatter while one model is selected


class Explorer(MorWidget):
    """The market at a glance: pick a view (models, bids, providers), click a column to sort,
    type to filter, click a model to see its bids. Below the table, `plot` (a plotly
    `FigureWidget`) shows every bid's price against its score, the selected model's bids
    highlighted.

    State: `view`, `model` ("" = all models), `sort_by`, `descending`, `filter` (words that
    must all appear in a row); `rows` is what the table shows.
    """

    _esm = asset("common.js", "explorer.js")
    _css = asset("widgets.css")

    view = traitlets.Enum(list(COLUMNS), default_value="models").tag(sync=True)
    model = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("name").tag(sync=True)
    descending = traitlets.Bool(False).tag(sync=True)
    filter = traitlets.Unicode("").tag(sync=True)
    model_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    columns = traitlets.List().tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)

    def __init__(self, wb: Workbench | AsyncWorkbench, *, model: str = "", **kwargs: Any) -> None:
        self._tables: dict[str, list[dict[str, Any]]] = {v: [] for v in COLUMNS}
        self._render_lock = threading.Lock()
        super().__init__(wb, model=model, columns=COLUMNS["models"], **kwargs)
        self.plot = go.FigureWidget(layout={"height": 380, "title": "Bids: price against score"})
        self._shown = ipywidgets.VBox([self, self.plot])
        self.observe(self._on_view, names="view")
        self.observe(self._render, names=["model", "sort_by", "descending", "filter"])
        self.observe(self._highlight, names="model")
        if model:
            self.view = "bids"
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        """Shown in a notebook as the table with the scatter under it."""
        return self._shown._repr_mimebundle_(**kwargs)

    def _actions(self) -> dict[str, Any]:
        return {"refresh": lambda _msg: self.refresh()}

    def refresh(self) -> None:
        """Reload models, bids (with scores), providers and stats in the background."""
        self._submit(self._load(), "loading the market")

    def table(self, view: str | None = None) -> pd.DataFrame:
        """The rows a view shows (after the filter and sort) as a DataFrame."""
        return pd.DataFrame(self._rows_for(view or self.view))

    async def _load(self) -> None:
        aio = self._aio
        models, bids, providers, stats = await asyncio.gather(
            aio.models(), aio.bids(), aio.providers(), aio.stats()
        )  # bids() scores every model's bids in one pass
        names = list(models["name"])
        measured = [s for s in records(stats) if s["total_count"]]  # zeros mean "no data yet"
        by_pair = {(s["model"], s["provider"]): s for s in measured}
        endpoints = dict(zip(providers["address"], providers["endpoint"], strict=True))
        bid_rows = []
        for row in records(bids):
            s = by_pair.get((row["model"], row["provider"]), {})
            bid_rows.append(
                {
                    **row,
                    "tps": s.get("tps"),
                    "ttft_ms": s.get("ttft_ms"),
                    "success_rate": s.get("success_rate"),
                    "total_count": s.get("total_count", 0),
                    "endpoint": endpoints.get(row["provider"], ""),
                }
            )
        model_rows = []
        for row in records(models):
            mine = [b for b in bid_rows if b["model"] == row["name"]]
            model_rows.append(
                {
                    **row,
                    "tags": ", ".join(row["tags"] or []),
                    "bids": len(mine),
                    "best_price_per_hour": _min(b["price_per_hour"] for b in mine),
                    "best_score": _max(b["score"] for b in mine),
                    "tps": _max(b["tps"] for b in mine),
                }
            )
        provider_rows = []
        for row in records(providers):
            mine = [b for b in bid_rows if b["provider"] == row["address"]]
            calls = sum(b["total_count"] or 0 for b in mine)
            ok = sum((b["success_rate"] or 0) * (b["total_count"] or 0) for b in mine)
            provider_rows.append(
                {
                    **row,
                    "models": ", ".join(sorted({b["model"] for b in mine})),
                    "bids": len(mine),
                    "best_price_per_hour": _min(b["price_per_hour"] for b in mine),
                    "tps": _max(b["tps"] for b in mine),
                    "success_rate": ok / calls if calls else None,
                    "earned": row["limit_period_earned"],
                }
            )
        self._tables = {"models": model_rows, "bids": bid_rows, "providers": provider_rows}
        self.model_names = names
        self.counts = {k: len(v) for k, v in self._tables.items()}
        self._render()
        self._draw_plot(bids)

    def _draw_plot(self, bids: pd.DataFrame) -> None:
        figure = plots.price_vs_score(bids) if not bids.empty else go.Figure()
        self.plot.data = ()
        self.plot.add_traces(list(figure.data))
        self.plot.update_layout(
            xaxis_title=figure.layout.xaxis.title.text,
            yaxis_title=figure.layout.yaxis.title.text,
            legend_title=figure.layout.legend.title.text,
        )
        self._highlight()

    def _highlight(self, _change: Any = None) -> None:
        with self.plot.batch_update():
            for trace in self.plot.data:
                on = not self.model or trace.name == self.model
                trace.marker.opacity = 1.0 if on else DIMMED

    def _on_view(self, change: dict[str, Any]) -> None:
        keys = [c["key"] for c in COLUMNS[change["new"]]]
        if self.sort_by not in keys:
            with self.hold_trait_notifications():
                self.sort_by, self.descending = DEFAULT_SORT[change["new"]]
        self._render()

    def _rows_for(self, view: str) -> list[dict[str, Any]]:
        rows = self._tables[view]
        if view == "bids" and self.model:
            rows = [r for r in rows if r["model"] == self.model]
        keys = [c["key"] for c in COLUMNS[view]]
        words = self.filter.lower().split()
        if words:
            rows = [r for r in rows if all(w in _haystack(r, keys) for w in words)]
        if self.sort_by in keys:
            present = [r for r in rows if r.get(self.sort_by) is not None]
            missing = [r for r in rows if r.get(self.sort_by) is None]
            present.sort(key=lambda r: _sort_key(r[self.sort_by]), reverse=self.descending)
            rows = present + missing  # blanks last either way
        extras = [k for k in ("id", "name", "provider", "address") if k not in keys]
        return [{k: r.get(k) for k in keys} | {k: r[k] for k in extras if k in r} for r in rows]

    def _render(self, _change: Any = None) -> None:
        with self._render_lock:
            rows = self._rows_for(self.view)
            self.columns = COLUMNS[self.view]
            self.rows = rows


def _haystack(row: dict[str, Any], keys: list[str]) -> str:
    return " ".join(str(row.get(k, "")) for k in [*keys, "provider", "address", "id"]).lower()


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value).lower())


def _min(values: Any) -> float | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _max(values: Any) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None
