"""Benchmark: sandbox cold start, restart from saved state, and attach, side by side.

Targets (issue 2): cold start under 10 s, attach under 1 s. Prints one line per case.

    .venv/bin/python bench/sandbox_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mor_workbench as mor
from mor_workbench import sandbox


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def connect_and_read(directory: Path) -> None:
    with mor.connect("sandbox", sandbox_dir=directory) as wb:
        wb.bids()


def one_round(directory: Path) -> dict[str, float]:
    """Each case once on a fresh sandbox directory."""
    times = {
        "cold start (deploy + seed)": timed(sandbox.start, directory),
        "attach to running sandbox": timed(sandbox.start, directory),
        "connect + read bids table": timed(connect_and_read, directory),
    }
    sandbox.stop(directory)
    times["restart from saved state"] = timed(sandbox.start, directory)
    sandbox.reset(directory)
    return times


def main(repeat: int) -> None:
    rounds = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_round(Path(tmp) / "sandbox"))
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        print(
            f"{name}: median {statistics.median(runs) * 1000:.0f} ms  "
            f"max {max(runs) * 1000:.0f} ms  (n={len(runs)})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    main(parser.parse_args().repeat)
