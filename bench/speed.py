"""Benchmark: issue 16's figures side by side in one run, each section one bench of its own.

1. per streamed chunk, CPU µs on each side: the live wire, its primitives' floor and the fast
   channel between our own peers (`per_chunk.py`);
2. added TTFT and end-to-end p50/p99 over a direct call at 1 and 50 concurrent streams for
   `wb.stream`, `serve` and LiteLLM's proxy, with ratios, the HTTP paths read once by the
   openai client (issue 16's baseline) and once by aiohttp (`peer_bench.py`; it creates
   LiteLLM's own venv under .bench-venvs/litellm on first use);
3. the 10,000-bid market snapshot: bids, providers, stats and scores, with its round trips
   (`market_snapshot.py`, 2,500 providers x 4 models; seeding it takes minutes).

Each section runs in a process of its own, one after the other, so none loads the machine
while another is timed.

    .venv/bin/python bench/speed.py [--requests 100] [--providers 2500]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def section(title: str, argv: list[str]) -> None:
    """Run one bench script of this folder and print its output under `title`."""
    print(f"\n== {title}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], check=True)
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per cell")
    parser.add_argument("--providers", type=int, default=2500, help="x 4 models = bids")
    parser.add_argument("--iterations", type=int, default=3000, help="chunks per wire")
    args = parser.parse_args()
    section(
        "1. per streamed chunk: live wire, its floor, fast channel",
        ["per_chunk.py", "--iterations", str(args.iterations)],
    )
    for client, why in (("openai", "what an application calls"), ("aiohttp", "a leaner floor")):
        section(
            f"2. added latency over a direct call: wb.stream, serve, LiteLLM proxy; HTTP read "
            f"by {client} ({why})",
            [
                "peer_bench.py",
                "--requests",
                str(args.requests),
                "--concurrency",
                "1",
                "50",
                "--client",
                client,
            ],
        )
    section(
        f"3. market snapshot: {args.providers * 4:,} bids",
        ["market_snapshot.py", "--providers", str(args.providers), "--repeat", "5"],
    )


if __name__ == "__main__":
    main()
