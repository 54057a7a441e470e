"""Marketplace data as pandas DataFrames, read in a few batched round trips.

Amounts are MOR as floats in the main column (`stake`) with the exact wei integer beside it
(`stake_wei`); times are UTC datetimes; ids and addresses come full and short (`id_short`).
Columns a person reads come first (names and short ids, then amounts and times); the full ids
and addresses and the wei integers that code joins and computes on follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import checksum_address
from mor_workbench.chain.listings import (
    BidBook,
    active_model_ids,
    bid_book,
    check,
    listing,
    models_by_id,
    resolve_model,
)
from mor_workbench.market.catalog import model_type
from mor_workbench.router.attestation import is_tee

__all__ = [
    "bid_book",
    "bids",
    "bids_frame",
    "models",
    "providers",
    "resolve_model",
    "sessions",
    "sessions_by_id",
    "stats",
]

WEI_PER_MOR = 10**18


def short(value: str) -> str:
    """`0x1234…abcd` for a long hex id or address."""
    return f"{value[:6]}…{value[-4:]}" if len(value) > 12 else value


def hex32(raw: bytes) -> str:
    return "0x" + raw.hex()


def mor(wei: int) -> float:
    return wei / WEI_PER_MOR


def when(seconds: int) -> pd.Timestamp:
    """A UTC timestamp, or NaT for the contracts' "not set" zero."""
    if not seconds:
        return pd.NaT
    return pd.Timestamp(datetime.fromtimestamp(seconds, UTC))


_MODEL_COLUMNS = [
    "name",
    "id_short",
    "tags",
    "fee",
    "stake",
    "owner_short",
    "created_at",
    "type",
    "tee",
    "id",
    "owner",
    "fee_wei",
    "stake_wei",
    "is_deleted",
]


async def models(chain: Chain) -> pd.DataFrame:
    """Active models: one row each, newest last; `type` is LLM, EMBEDDING, STT, TTS or
    UNKNOWN, derived from the tags as the live proxy-router does (`catalog.model_type`);
    `tee` says the model is tagged `tee` (the live network's "secure" models: a claim by its
    owner, not a verified attestation, see `router.attestation`)."""
    ids = await active_model_ids(chain)
    rows = []
    for model_id, m in (await models_by_id(chain, ids)).items():
        rows.append(
            {
                "id": hex32(model_id),
                "name": m["name"],
                "type": model_type(m["tags"]),
                "tee": is_tee(m["tags"]),
                "tags": list(m["tags"]),
                "fee": mor(m["fee"]),
                "stake": mor(m["stake"]),
                "owner": m["owner"],
                "owner_short": short(m["owner"]),
                "created_at": when(m["createdAt"]),
                "id_short": short(hex32(model_id)),
                "fee_wei": m["fee"],
                "stake_wei": m["stake"],
                "is_deleted": m["isDeleted"],
            }
        )
    return _frame(rows, _MODEL_COLUMNS, sort="created_at")


_BID_COLUMNS = [
    "model",
    "type",
    "tee",
    "provider_short",
    "id_short",
    "price_per_second",
    "price_per_hour",
    "created_at",
    "id",
    "model_id",
    "provider",
    "price_per_second_wei",
    "nonce",
]


async def bids(chain: Chain, model: str | None = None) -> pd.DataFrame:
    """Active bids, of one model (name or id, see `resolve_model`) or of every active model,
    cheapest first, with the model's `type` and `tee` (tagged tee, see `models`)."""
    return bids_frame(await bid_book(chain, model))


def bids_frame(book: BidBook) -> pd.DataFrame:
    """The bids of `book` (see `bids`), without another read."""
    found = book.models
    names = {i: m["name"] for i, m in found.items()}
    types = {i: model_type(m["tags"]) for i, m in found.items()}
    tee = {i: is_tee(m["tags"]) for i, m in found.items()}
    rows = []
    for bid_id, b in book.bids:
        price = b["pricePerSecond"]
        rows.append(
            {
                "id": hex32(bid_id),
                "model_id": hex32(b["modelId"]),
                "model": names.get(b["modelId"], ""),
                "type": types.get(b["modelId"], "UNKNOWN"),
                "tee": tee.get(b["modelId"], False),
                "provider": b["provider"],
                "price_per_second": mor(price),
                "price_per_hour": mor(price * 3600),
                "created_at": when(b["createdAt"]),
                "id_short": short(hex32(bid_id)),
                "provider_short": short(b["provider"]),
                "price_per_second_wei": price,
                "nonce": b["nonce"],
            }
        )
    return _frame(rows, _BID_COLUMNS, sort=["model", "price_per_second"])


_PROVIDER_COLUMNS = [
    "address_short",
    "endpoint",
    "stake",
    "created_at",
    "is_active",
    "address",
    "stake_wei",
    "limit_period_end",
    "limit_period_earned",
]


async def providers(chain: Chain) -> pd.DataFrame:
    """Active providers with their endpoint and stake."""
    addresses = (await listing(chain, "getActiveProviders", [()]))[0]
    found = check(await chain.read_many([Call("getProvider", (a,)) for a in addresses]))
    rows = [
        {
            "address": a,
            "endpoint": p["endpoint"],
            "stake": mor(p["stake"]),
            "created_at": when(p["createdAt"]),
            "is_active": not p["isDeleted"],
            "address_short": short(a),
            "stake_wei": p["stake"],
            "limit_period_end": when(p["limitPeriodEnd"]),
            "limit_period_earned": mor(p["limitPeriodEarned"]),
        }
        for a, p in zip(addresses, found, strict=True)
    ]
    return _frame(rows, _PROVIDER_COLUMNS, sort="created_at")


_SESSION_COLUMNS = [
    "id_short",
    "model",
    "provider_short",
    "stake",
    "opened_at",
    "ends_at",
    "closed_at",
    "is_active",
    "direct_payment",
    "id",
    "user",
    "provider",
    "bid_id",
    "stake_wei",
    "price_per_second",
    "provider_withdrawn",
    "closeout_type",
]


async def sessions(chain: Chain, user: str) -> pd.DataFrame:
    """Every session of `user`, newest first."""
    user = checksum_address(user, what="user")
    ids = (await listing(chain, "getUserSessions", [(user,)]))[0]
    return await sessions_by_id(chain, ids)


async def sessions_by_id(chain: Chain, ids: Sequence[bytes]) -> pd.DataFrame:
    """These sessions, with their provider, model and price, newest first."""
    found = check(await chain.read_many([Call("getSession", (i,)) for i in ids]))
    bid_ids = sorted({s["bidId"] for s in found})
    bid_info = dict(
        zip(
            bid_ids,
            check(await chain.read_many([Call("getBid", (b,)) for b in bid_ids])),
            strict=True,
        )
    )
    model_ids = sorted({b["modelId"] for b in bid_info.values()})
    names = {i: m["name"] for i, m in (await models_by_id(chain, model_ids)).items()}
    rows = []
    for session_id, s in zip(ids, found, strict=True):
        bid = bid_info[s["bidId"]]
        rows.append(
            {
                "id": hex32(session_id),
                "user": s["user"],
                "provider": bid["provider"],
                "model": names.get(bid["modelId"], hex32(bid["modelId"])),
                "bid_id": hex32(s["bidId"]),
                "stake": mor(s["stake"]),
                "opened_at": when(s["openedAt"]),
                "ends_at": when(s["endsAt"]),
                "closed_at": when(s["closedAt"]),
                "is_active": s["isActive"],
                "direct_payment": s["isDirectPaymentFromUser"],
                "id_short": short(hex32(session_id)),
                "provider_short": short(bid["provider"]),
                "stake_wei": s["stake"],
                "price_per_second": mor(bid["pricePerSecond"]),
                "provider_withdrawn": mor(s["providerWithdrawnAmount"]),
                "closeout_type": s["closeoutType"],
            }
        )
    return _frame(rows, _SESSION_COLUMNS, sort="opened_at", ascending=False)


_STATS_COLUMNS = [
    "model",
    "provider_short",
    "tps",
    "ttft_ms",
    "total_duration_s",
    "success_count",
    "total_count",
    "success_rate",
    "provider",
    "model_id",
]


async def stats(chain: Chain) -> pd.DataFrame:
    """Provider-model rating stats (as the contracts keep them) for every active bid, from
    the same batched read as `bids` (`bid_book`)."""
    book = await bid_book(chain)
    names = {i: m["name"] for i, m in book.models.items()}
    rows = []
    for (model_id, provider), s in book.pair_stats.items():
        total = s["totalCount"]
        rows.append(
            {
                "model": names.get(model_id, ""),
                "provider": provider,
                "tps": s["tpsScaled1000"]["mean"] / 1000,
                "ttft_ms": float(s["ttftMs"]["mean"]),
                "total_duration_s": s["totalDuration"],
                "success_count": s["successCount"],
                "total_count": total,
                "success_rate": s["successCount"] / total if total else float("nan"),
                "model_id": hex32(model_id),
                "provider_short": short(provider),
            }
        )
    return _frame(rows, _STATS_COLUMNS, sort=["model", "provider"])


def _frame(
    rows: list[dict[str, Any]], columns: list[str], *, sort: str | list[str], ascending: bool = True
) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for name in columns:
        if name.endswith("_at") or name == "limit_period_end":
            frame[name] = pd.to_datetime(frame[name], utc=True)
        elif name.endswith("_wei") or name == "nonce":
            frame[name] = frame[name].astype(object)
    if rows:
        frame = frame.sort_values(sort, ascending=ascending, kind="stable")
    return frame.reset_index(drop=True)
