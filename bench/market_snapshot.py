"""Benchmark: load a 10,000-bid market, with its providers and stats, into a DataFrame.

Builds a fresh market on a private anvil (2,500 providers x 4 models = 10,000 active bids, each
with one closed session on record, so every bid has stats), seeded in batches of real contract
calls (`sandbox.market.transact_many`). Then times the snapshot `wb.bids()` is made of, less
the health pings: every bid with its model, its provider's endpoint and stake and its stats
(`bid_book`), as a frame (`bids_frame`) with each bid's score (`rank_book`); and counts its
round trips at the RPC layer. `--naive` adds the one-eth_call-per-row read of the same data
for comparison (slow: one round trip per bid). Prints one line of figures per case.

    .venv/bin/python bench/market_snapshot.py [--providers 2500] [--repeat 5] [--naive]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from eth_account import Account

from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import deploy_marketplace
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.router.router import rank_book
from mor_workbench.sandbox.market import MODELS, ProviderSpec, ServiceRecord, seed_market

BENCH_MODELS = MODELS[:4]
PRICE_STEPS = 50  # distinct price factors among the providers


async def build_market(rpc: RpcClient, n_providers: int) -> Chain:
    owner = Signer(Account.create().key)
    await rpc.request("anvil_setBalance", [owner.address, hex(10**24)])
    chain = Chain(rpc, await deploy_marketplace(rpc, owner))
    providers = [
        (
            Signer(Account.create().key),
            ProviderSpec(
                f"p{i}",
                "balanced",
                0.5 + (i % PRICE_STEPS) / PRICE_STEPS,
                record=ServiceRecord(receipts=1),
            ),
            f"10.0.{i // 250}.{i % 250}:3333",
        )
        for i in range(n_providers)
    ]
    await seed_market(chain, owner, Signer(Account.create().key), providers, BENCH_MODELS)
    return chain


async def naive_bids(chain: Chain) -> int:
    """One eth_call per item, as the reference proxy-router's per-item pattern does."""
    count = 0
    for model_id in (await chain.call("getActiveModelIds", 0, 1000))[0]:
        ids, _ = await chain.call("getModelActiveBids", model_id, 0, 10_000)
        await chain.call("getModel", model_id)
        for bid_id in ids:
            await chain.call("getBid", bid_id)
            count += 1
    return count


async def timed(fn, repeat: int) -> tuple[float, int]:
    runs, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = await fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), rows


async def main(n_providers: int, repeat: int, naive: bool) -> None:
    with Anvil() as node:
        rpc = RpcClient(node.url)
        started = time.perf_counter()
        chain = await build_market(rpc, n_providers)
        print(
            f"setup: {n_providers} providers x {len(BENCH_MODELS)} models built in "
            f"{time.perf_counter() - started:.1f} s"
        )

        async def snapshot() -> int:
            book = await tables.bid_book(chain)
            frame = tables.bids_frame(book)
            frame["score"] = [b.score.score for b in rank_book(book)]  # shape only
            return len(frame)

        before = rpc.round_trips
        await snapshot()
        trips = rpc.round_trips - before
        fast, rows = await timed(snapshot, repeat)
        expected = n_providers * len(BENCH_MODELS)
        assert rows == expected, (rows, expected)
        print(
            f"snapshot (bids + providers + stats + scores): {rows} rows  median "
            f"{fast * 1000:.0f} ms  {rows / fast:,.0f} rows/s  {trips} HTTP round trips"
        )
        if naive:
            slow, naive_rows = await timed(lambda: naive_bids(chain), 1)
            assert naive_rows == rows, (naive_rows, rows)
            print(
                f"naive per-row eth_call (bids only): {naive_rows} rows  {slow * 1000:.0f} ms  "
                f"{naive_rows / slow:,.0f} rows/s  (the snapshot is {slow / fast:.1f}x faster)"
            )
        await rpc.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--naive", action="store_true", help="also time the per-row read")
    args = parser.parse_args()
    asyncio.run(main(args.providers, args.repeat, args.naive))
