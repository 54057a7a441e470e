"""Benchmark: `wb.map` throughput and the consumer's CPU, at several concurrencies.

On an isolated sandbox (its three providers, each answering from its own simulated model
server with its latency profile) this process maps `--rows` distinct prompts over the sandbox
model at each concurrency (1, 8 and 32 sessions by default) and prints, per run: rows/s (rows
over the whole map's wall time, opening and closing the sessions included), CPU per row (this
process's CPU time, every thread, over the rows) and the consumer's CPU share (CPU time over
wall time: 1.0 is one core kept busy). A share near 1.0 means one process is the bottleneck
and the work should spread over processes; well below it, the providers are.

The providers and anvil run in the sandbox's own processes, which share the machine's cores
with this one; the figures include that contention.

    .venv/bin/python bench/batch_map.py [--rows 400] [--concurrency 1 8 32] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.sandbox.paths import HOME_ENV

MODEL = "llama-3.3-70b"


def measure(wb: mor.Workbench, rows: int, concurrency: int, max_tokens: int) -> dict[str, float]:
    """One map of `rows` fresh prompts at `concurrency`: rows/s, CPU ms per row, CPU share."""
    prompts = [f"Batch bench k={concurrency} row {i}: describe a canal." for i in range(rows)]
    cpu, wall = time.process_time(), time.perf_counter()
    frame = wb.map(
        prompts, model=MODEL, concurrency=concurrency, max_tokens=max_tokens, progress=False
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = int(frame["error"].notna().sum())
    return {
        "concurrency": concurrency,
        "rows": rows,
        "failed": failed,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "cpu_ms_per_row": 1000 * cpu / rows,
        "cpu_share": cpu / wall,
        "spent_mor": float(frame["cost_mor"].sum()),
    }


def main(rows: int, concurrencies: list[int], max_tokens: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[HOME_ENV] = str(Path(tmp) / "home")  # a journal of the bench's own
        directory = Path(tmp) / "sandbox"
        sandbox.start(directory)
        try:
            with mor.connect("sandbox", sandbox_dir=directory) as wb:
                results = [measure(wb, rows, k, max_tokens) for k in concurrencies]
        finally:
            sandbox.reset(directory)
    print(f"wb.map on the sandbox: {rows} rows of up to {max_tokens} tokens, model {MODEL}")
    header = f"{'k':>4} {'rows/s':>8} {'CPU ms/row':>11} {'CPU share':>10} {'wall s':>8} "
    print(header + f"{'failed':>7} {'MOR spent':>12}")
    for r in results:
        print(
            f"{r['concurrency']:>4} {r['rows_per_s']:>8.1f} {r['cpu_ms_per_row']:>11.2f} "
            f"{r['cpu_share']:>10.2f} {r['wall_s']:>8.2f} {r['failed']:>7} {r['spent_mor']:>12.6f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400, help="rows per map (default 400)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer at most")
    args = parser.parse_args()
    main(args.rows, args.concurrency, args.max_tokens)
