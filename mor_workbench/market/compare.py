"""Compare providers of one model on the same prompt, llmperf-style: a session on each bid,
`runs` streamed calls each, and per provider the percentiles of time to first token,
inter-token latency, end-to-end latency and tokens per second, with the cost per 1K tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mor_workbench.chain.listings import find_model
from mor_workbench.errors import ConfigurationError, MorError
from mor_workbench.market.catalog import check_chat_model
from mor_workbench.router.calls import CallRecord, Lease, run_call
from mor_workbench.router.router import RankedBid, Router

__all__ = ["COMPARE_COLUMNS", "compare"]

COMPARE_COLUMNS = [
    "provider",
    "provider_short",
    "price_per_second",
    "runs",
    "errors",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p90_s",
    "e2e_p50_s",
    "e2e_p90_s",
    "e2e_p99_s",
    "tokens_per_s_p50",
    "completion_tokens_mean",
    "cost_per_1k_tokens",
    "answer",
    "bid_id",
    "error",
]


def _itl(record: CallRecord) -> float | None:
    """Mean inter-token latency of one call: generation time over the gaps between tokens."""
    if record.first_token is None or record.finished is None or record.completion_tokens < 2:
        return None
    return (record.finished - record.first_token) / (record.completion_tokens - 1)


def _pct(values: Sequence[float | None], q: float) -> float:
    kept = [v for v in values if v is not None]
    return float(np.percentile(kept, q)) if kept else float("nan")


async def _measure(
    router: Router, bid: RankedBid, model: str, body: dict[str, Any], runs: int, duration_s: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "provider": bid.provider,
        "provider_short": f"{bid.provider[:6]}…{bid.provider[-4:]}",
        "price_per_second": bid.price_per_second / 1e18,
        "bid_id": "0x" + bid.bid_id.hex(),
        "runs": 0,
        "errors": 0,
        "answer": "",
        "error": "",
    }
    records: list[CallRecord] = []
    try:
        opened = await router.open(model, duration_s, bid=bid.bid_id)
    except MorError as exc:
        return {**row, "errors": runs, "error": str(exc)}
    lease = Lease(model, duration_s, False, opened, renew=False, max_failovers=0)
    try:
        for _ in range(runs):
            record = CallRecord(model)
            text = ""
            try:
                async for payload in run_call(router, lease, body, record):
                    text += "".join(
                        (c.get("delta") or {}).get("content") or ""
                        for c in payload.get("choices") or ()
                    )
            except MorError as exc:
                row["errors"] += 1
                row["error"] = str(exc)
                continue
            records.append(record)
            row["answer"] = row["answer"] or text
    finally:
        try:
            await router.close(lease.opened)
        except MorError as exc:  # journaled; the next start closes it
            row["error"] = row["error"] or f"close failed: {exc}"
    tokens = sum(r.completion_tokens for r in records)
    cost = sum(r.cost_mor for r in records)
    row.update(
        runs=len(records),
        ttft_p50_s=_pct([r.ttft_s for r in records], 50),
        ttft_p90_s=_pct([r.ttft_s for r in records], 90),
        ttft_p99_s=_pct([r.ttft_s for r in records], 99),
        itl_p50_s=_pct([_itl(r) for r in records], 50),
        itl_p90_s=_pct([_itl(r) for r in records], 90),
        e2e_p50_s=_pct([r.e2e_s for r in records], 50),
        e2e_p90_s=_pct([r.e2e_s for r in records], 90),
        e2e_p99_s=_pct([r.e2e_s for r in records], 99),
        tokens_per_s_p50=_pct([r.tokens_per_s for r in records], 50),
        completion_tokens_mean=tokens / len(records) if records else float("nan"),
        cost_per_1k_tokens=1000 * cost / tokens if tokens else float("nan"),
    )
    return row


async def compare(
    router: Router,
    prompt: str | list[dict[str, Any]],
    model: str,
    *,
    providers: Sequence[str] | None = None,
    runs: int = 3,
    duration_s: int = 300,
    **params: Any,
) -> pd.DataFrame:
    """One row per provider of `model` (or of those in `providers`), measured side by side:
    every provider's session is opened, prompted `runs` times and closed concurrently.
    Raises `ConfigurationError`, before any session is opened, for `runs` < 1 or a model that
    cannot chat (`catalog.check_chat_model`)."""
    if runs < 1:
        raise ConfigurationError(f"runs={runs} must be at least 1")
    _, found = await find_model(router.chain, model)
    check_chat_model(found["name"], found["tags"])
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    body = {"model": model, "messages": messages, **params, "stream": True}
    body["stream_options"] = {"include_usage": True, **(params.get("stream_options") or {})}
    bids = await router.rank(model)
    if providers is not None:
        wanted = {p.lower() for p in providers}
        bids = [b for b in bids if b.provider.lower() in wanted]
        if not bids:
            raise ConfigurationError(f"none of those providers has a bid on {model!r}")
    rows = await asyncio.gather(*(_measure(router, b, model, body, runs, duration_s) for b in bids))
    frame = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    return frame.sort_values("e2e_p50_s", kind="stable").reset_index(drop=True)
