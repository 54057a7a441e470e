"""Benchmark: load a 1,000-bid market into a DataFrame.

Builds a fresh market on a private anvil (250 providers x 4 models = 1,000 active bids), then
times `bids()` (batched through Multicall3) against the naive one-eth_call-per-row read of the
same data, side by side in one run. Prints one line of figures per case.

    .venv/bin/python bench/market_snapshot.py [--providers 250] [--repeat 5]
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
from mor_workbench.sandbox.market import MODELS, ProviderSpec, seed_market


async def build_market(rpc: RpcClient, n_providers: int) -> Chain:
    owner = Signer(Account.create().key)
    await rpc.request("anvil_setBalance", [owner.address, hex(10**24)])
    chain = Chain(rpc, await deploy_marketplace(rpc, owner))
    providers = [
        (
            Signer(Account.create().key),
            ProviderSpec(f"p{i}", "balanced", 0.5 + i / n_providers),
            f"10.0.0.{i % 250}:3333",
        )
        for i in range(n_providers)
    ]
    await seed_market(chain, owner, Signer(Account.create().key), providers, MODELS)
    return chain


async def naive_bids(chain: Chain) -> int:
    """One eth_call per item, as the reference proxy-router's per-item pattern does."""
    count = 0
    for model_id in (await chain.call("getActiveModelIds", 0, 1000))[0]:
        ids, _ = await chain.call("getModelActiveBids", model_id, 0, 1000)
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


async def main(n_providers: int, repeat: int) -> None:
    with Anvil() as node:
        rpc = RpcClient(node.url)
        started = time.perf_counter()
        chain = await build_market(rpc, n_providers)
        print(
            f"setup: {n_providers} providers x {len(MODELS)} models built in "
            f"{time.perf_counter() - started:.1f} s"
        )

        async def batched() -> int:
            return len(await tables.bids(chain))

        async def naive() -> int:
            return await naive_bids(chain)

        fast, rows = await timed(batched, repeat)
        slow, naive_rows = await timed(naive, max(1, repeat // 2))
        assert rows == naive_rows == n_providers * len(MODELS), (rows, naive_rows)
        print(
            f"bids() batched: {rows} rows  median {fast * 1000:.0f} ms  {rows / fast:,.0f} rows/s"
        )
        print(
            f"naive per-row eth_call: {naive_rows} rows  median {slow * 1000:.0f} ms  "
            f"{naive_rows / slow:,.0f} rows/s  (batched is {slow / fast:.1f}x faster)"
        )
        await rpc.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.providers, args.repeat))
