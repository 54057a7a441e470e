"""Compare providers of one model on the same prompt, llmperf-style: a session on each bid,
`runs` streamed calls each, and per provider the percentiles of time to first token,
inter-token latency, end-to-end latency and tokens per second, with the cost per 1K tokens.

An embedding model is compared on embeddings requests of the prompt (one text or a list):
there is no first token nor generation, so per provider the end-to-end latency percentiles,
the input tokens embedded per second (the provider's `usage.prompt_tokens` over the whole
call) and the cost per 1M input tokens, as embeddings are priced."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mor_workbench.chain.listings import find_model
from mor_workbench.errors import ConfigurationError, MorError
from mor_workbench.market.catalog import check_chat_model, model_type
from mor_workbench.router.calls import CallRecord, Lease, embeddings_request, run_call
from mor_workbench.router.router import RankedBid, Router

__all__ = ["COMPARE_COLUMNS", "EMBEDDING_COMPARE_COLUMNS", "compare"]

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


EMBEDDING_COMPARE_COLUMNS = [
    "provider",
    "provider_short",
    "price_per_second",
    "runs",
    "errors",
    "e2e_p50_s",
    "e2e_p90_s",
    "e2e_p99_s",
    "tokens_per_s_p50",
    "prompt_tokens_mean",
    "dim",
    "cost_per_1m_tokens",
    "bid_id",
    "error",
]


def _prompt_tokens(record: CallRecord) -> int:
    return (record.usage or {}).get("prompt_tokens", 0)


def _embedding_tokens_per_s(record: CallRecord) -> float | None:
    """Input tokens embedded per second over the whole call (None without usage)."""
    tokens = _prompt_tokens(record)
    return tokens / max(record.e2e_s, 1e-6) if tokens else None


def _itl(record: CallRecord) -> float | None:
    """Mean inter-token latency of one call: generation time over the gaps between tokens."""
    if record.first_token is None or record.finished is None or record.completion_tokens < 2:
        return None
    return (record.finished - record.first_token) / (record.completion_tokens - 1)


def _dimension(embedding: Any) -> int:
    """Length of one embedding: a float list, or base64 of float32 (4 bytes a value)."""
    if isinstance(embedding, str):
        return len(base64.b64decode(embedding)) // 4
    return len(embedding or ())


def _embeddings_body(model: str, prompt: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The session.prompt body of an embeddings request of `prompt` (vectors as base64)."""
    if isinstance(prompt, list) and all(isinstance(t, str) and t for t in prompt) and prompt:
        texts: str | list[str] = prompt
    elif isinstance(prompt, str) and prompt:
        texts = prompt
    else:
        raise ConfigurationError(
            f"model {model!r} embeds text: compare it on a text or a list of texts, not messages"
        )
    return embeddings_request(
        {"encoding_format": "base64", **params, "model": model, "input": texts}
    )


def _pct(values: Sequence[float | None], q: float) -> float:
    kept = [v for v in values if v is not None]
    return float(np.percentile(kept, q)) if kept else float("nan")


async def _measure(
    router: Router,
    bid: RankedBid,
    model: str,
    body: dict[str, Any],
    runs: int,
    duration_s: int,
    embeddings: bool = False,
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
                    for item in (payload.get("data") or ())[:1]:  # an embedding's size
                        row["dim"] = _dimension(item.get("embedding"))
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
    cost = sum(r.cost_mor for r in records)
    if embeddings:
        tokens = sum(_prompt_tokens(r) for r in records)
        row.update(
            runs=len(records),
            e2e_p50_s=_pct([r.e2e_s for r in records], 50),
            e2e_p90_s=_pct([r.e2e_s for r in records], 90),
            e2e_p99_s=_pct([r.e2e_s for r in records], 99),
            tokens_per_s_p50=_pct([_embedding_tokens_per_s(r) for r in records], 50),
            prompt_tokens_mean=tokens / len(records) if records else float("nan"),
            cost_per_1m_tokens=10**6 * cost / tokens if tokens else float("nan"),
        )
        return row
    tokens = sum(r.completion_tokens for r in records)
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
    An embedding model is sent `prompt` (a text or a list of texts) as embeddings requests and
    gets `EMBEDDING_COMPARE_COLUMNS` (see the module doc); other models `COMPARE_COLUMNS`.
    Raises `ConfigurationError`, before any session is opened, for `runs` < 1, a model that
    cannot chat (`catalog.check_chat_model`) nor embed, or messages for an embedding model."""
    if runs < 1:
        raise ConfigurationError(f"runs={runs} must be at least 1")
    _, found = await find_model(router.chain, model)
    embeddings = model_type(found["tags"]) == "EMBEDDING"
    if embeddings:
        body = _embeddings_body(model, prompt, params)
        columns = EMBEDDING_COMPARE_COLUMNS
    else:
        check_chat_model(found["name"], found["tags"])
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        body = {"model": model, "messages": messages, **params, "stream": True}
        body["stream_options"] = {"include_usage": True, **(params.get("stream_options") or {})}
        columns = COMPARE_COLUMNS
    bids = await router.rank(model)
    if providers is not None:
        wanted = {p.lower() for p in providers}
        bids = [b for b in bids if b.provider.lower() in wanted]
        if not bids:
            raise ConfigurationError(f"none of those providers has a bid on {model!r}")
    rows = await asyncio.gather(
        *(_measure(router, b, model, body, runs, duration_s, embeddings) for b in bids)
    )
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("e2e_p50_s", kind="stable").reset_index(drop=True)
