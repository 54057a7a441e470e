"""The market's bids are read in a handful of batched round trips, each bid once (issue 16 §3):
round trips counted at the RPC layer (`RpcClient.round_trips`, one per HTTP request) on the
sandbox's real chain."""

from __future__ import annotations

import pytest

import mor_workbench as mor
from mor_workbench.chain import client, listings
from mor_workbench.market import tables
from mor_workbench.router.router import rank_bids
from mor_workbench.sandbox.market import MODELS, PROVIDERS

# active model ids; models, model stats, minimum stake, first bid-id pages; bids; providers
# and provider-model stats
LEVELS = 4


async def round_trips(wb: mor.AsyncWorkbench, read) -> tuple[int, object]:
    rpc = wb.chain.rpc
    before = rpc.round_trips
    result = await read()
    return rpc.round_trips - before, result


async def test_bids_with_scores_read_the_market_once(sandbox_dir) -> None:
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    try:
        spent, frame = await round_trips(wb, wb.bids)
    finally:
        await wb.close()
    assert len(frame) == len(MODELS) * len(PROVIDERS)
    assert frame["score"].notna().all()
    # was 34: the listing's 4, then for each of the 6 models its bids read again to rank them
    assert spent == LEVELS


async def test_later_pages_cost_one_more_round_trip_per_listing(
    sandbox_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    try:
        _, whole = await round_trips(wb, lambda: tables.bids(wb.chain))
        # the 6 model ids, and each model's 3 bid ids, come in pages of 2
        monkeypatch.setattr(listings, "PAGE", 2)
        spent, paged = await round_trips(wb, lambda: tables.bids(wb.chain))
    finally:
        await wb.close()
    assert sorted(paged["id"]) == sorted(whole["id"])
    assert spent == LEVELS + 2  # the later pages of model ids, then of all bid ids at once


async def test_one_models_ranking_reads_its_bids_once(sandbox_dir) -> None:
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    try:
        spent, ranked = await round_trips(wb, lambda: rank_bids(wb.chain, MODELS[0].name))
    finally:
        await wb.close()
    assert len(ranked) == len(PROVIDERS)
    # the name is resolved first (model ids, then the models), then the 3 levels below them
    assert spent == 2 + 3


async def test_stats_cover_each_provider_model_pair_of_the_bids(sandbox_dir) -> None:
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    try:
        bids = await tables.bids(wb.chain)
        spent, stats = await round_trips(wb, lambda: tables.stats(wb.chain))
    finally:
        await wb.close()
    assert set(zip(stats["model_id"], stats["provider"], strict=True)) == set(
        zip(bids["model_id"], bids["provider"], strict=True)
    )
    assert (stats["total_count"] > 0).all()  # the sandbox's service records
    assert spent == LEVELS


async def test_a_market_larger_than_one_multicall_still_reads_in_one_round_trip_a_level(
    sandbox_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reads of one level that fill many Multicall3 calls go in one JSON-RPC batch (a
    10,000-bid market made 60 HTTP requests, one per 400 reads): here 3 reads a multicall."""
    wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    try:
        _, whole = await round_trips(wb, wb.bids)
        monkeypatch.setattr(client, "_MULTICALL_CHUNK", 3)
        spent, small = await round_trips(wb, wb.bids)
    finally:
        await wb.close()
    assert small.drop(columns="score").equals(whole.drop(columns="score"))
    assert spent == LEVELS
