"""Benchmark: chunks per second and CPU per chunk through a real provider router.

An isolated sandbox runs the providers (each a provider router in front of a simulated model
server) in its daemon process; this process opens one session with the "fast" provider and
streams prompts concurrently (1, 50, 200 at once), verifying and decrypting every chunk.
CPU per chunk is measured for the daemon (provider router + its simulated backend) from
/proc and for the client from process_time(). Prints one line per case.

    .venv/bin/python bench/provider_throughput.py [--streams-per-worker 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.router import peer

MODEL = "llama-3.3-70b"


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stream_once(endpoint, consumer, session_id, pubkey, index: int) -> tuple[int, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"tell me more {index}"}],
        "stream": True,
    }
    started = time.perf_counter()
    ttft, chunks = 0.0, 0
    async for _ in peer.prompt(endpoint, consumer, session_id, pubkey, body, encrypt=True):
        if chunks == 0:
            ttft = time.perf_counter() - started
        chunks += 1
    return chunks, ttft


async def run_case(ctx: dict, concurrency: int, per_worker: int) -> str:
    semaphore = asyncio.Semaphore(concurrency)
    total = concurrency * per_worker

    async def one(i: int) -> tuple[int, float]:
        async with semaphore:
            return await stream_once(
                ctx["endpoint"], ctx["consumer"], ctx["session"], ctx["pubkey"], i
            )

    daemon_cpu, client_cpu = process_cpu(ctx["pid"]), time.process_time()
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - started
    daemon_cpu, client_cpu = process_cpu(ctx["pid"]) - daemon_cpu, time.process_time() - client_cpu
    chunks = sum(c for c, _ in results)
    ttfts = sorted(t for _, t in results)
    p99 = ttfts[int(0.99 * (len(ttfts) - 1))]
    return (
        f"{concurrency:>3} concurrent streams: {chunks} chunks in {wall:.2f} s = "
        f"{chunks / wall:,.0f} chunks/s; provider+backend CPU "
        f"{daemon_cpu / chunks * 1e6:.0f} us/chunk, client CPU {client_cpu / chunks * 1e6:.0f} "
        f"us/chunk; TTFT p50 {statistics.median(ttfts) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms"
    )


async def main(per_worker: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        info = sandbox.start(Path(tmp) / "sandbox")
        try:
            chain = Chain(RpcClient(info.rpc_url), info.deployment)
            consumer = info.signer("consumer")
            fast = info.signer("provider:fast")
            bids = await tables.bids(chain, MODEL)
            bid = bids[bids["provider"] == fast.address].iloc[0]
            endpoint = (await chain.call("getProvider", fast.address))["endpoint"]
            approved = await peer.request_approval(
                endpoint,
                consumer,
                fast.address,
                bytes.fromhex(bid["id"][2:]),
                10**18,
                info.deployment.chain_id,
            )
            amount = await peer.deposit_for(chain, int(bid["price_per_second_wei"]), 3600)
            session = await peer.open_session(chain, consumer, approved, amount)
            ctx = {
                "endpoint": endpoint,
                "consumer": consumer,
                "session": session,
                "pubkey": approved.pubkey,
                "pid": info.pid,
            }
            for concurrency in (1, 50, 200):
                print(await run_case(ctx, concurrency, per_worker), flush=True)
            await chain.rpc.aclose()
        finally:
            sandbox.reset(Path(tmp) / "sandbox")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams-per-worker", type=int, default=3)
    asyncio.run(main(parser.parse_args().streams_per_worker))
