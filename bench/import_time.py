"""Benchmark: what `import mor_workbench` costs, beside a bare interpreter and the first use of
`mor.connect` (which loads the rest), each a fresh process. Target (issue 11): under 0.3 s.

    .venv/bin/python bench/import_time.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "bare interpreter": "pass",
    "import mor_workbench": "import mor_workbench",
    "import + mor.connect loaded": "import mor_workbench as mor; mor.connect",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    medians = {
        name: statistics.median(wall(c) for _ in range(args.repeat)) for name, c in CASES.items()
    }
    base = medians["bare interpreter"]
    for name, seconds in medians.items():
        added = "" if name == "bare interpreter" else f" (+{(seconds - base) * 1000:.0f} ms)"
        print(f"{name:32s} median {seconds * 1000:7.0f} ms{added}")


if __name__ == "__main__":
    main()
