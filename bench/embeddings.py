"""Embeddings throughput on the sandbox (issue 15): texts/s and input tokens/s of `wb.embed`
through a real provider router, at batch sizes 1 and 64 (texts per request), after a warm-up
call has opened the session. One line per batch size:

    batch, texts, requests, seconds, texts/s, tokens/s, the sandbox provider that answered (its
    simulated backend's latency profile sets most of the time: see `sandbox.market.PROVIDERS`)

    .venv/bin/python bench/embeddings.py [--texts 256] [--batch 1 --batch 64] [--dir DIR]

With no --dir it starts a sandbox of its own in a temporary directory and stops it after.
Tokens are the sandbox tokenizer's (`count_tokens`), which is what its providers count.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.sandbox.market import PROVIDERS
from mor_workbench.sandbox.model_server import count_tokens

MODEL = "text-embedding-bge-m3"
WORDS = ("river", "harbor", "boat", "market", "provider", "session", "token", "ledger", "garden")


def corpus(n: int) -> list[str]:
    """`n` distinct texts of 20 to 40 words."""
    return [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(20 + i % 21)) + f" #{i}"
        for i in range(n)
    ]


def run(directory: Path, texts: int, batches: list[int]) -> None:
    os.environ.setdefault("MOR_WORKBENCH_HOME", str(directory / "home"))
    info = sandbox.status(directory)
    assert info is not None, f"no sandbox runs in {directory}"
    names = {
        info.signer(f"provider:{p.name}").address: f"{p.name} ({p.profile})" for p in PROVIDERS
    }
    with mor.connect("sandbox", sandbox_dir=directory, strategy="best") as wb:
        wb.embed("warm up: open the session", model=MODEL)
        for batch in batches:
            items = corpus(texts if batch > 1 else min(texts, 64))
            tokens = sum(map(count_tokens, items))
            started = time.perf_counter()
            vectors = wb.embed(items, model=MODEL, batch_size=batch)
            seconds = time.perf_counter() - started
            assert vectors.shape[0] == len(items)
            (session,) = wb.aio.router.opened.values()
            requests = -(-len(items) // batch)
            print(
                f"batch {batch}: {len(items)} texts, {requests} requests, {seconds:.2f} s, "
                f"{len(items) / seconds:,.1f} texts/s, {tokens / seconds:,.0f} tokens/s, "
                f"provider {names.get(session.provider, session.provider)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256, help="texts per run (64 at batch 1)")
    parser.add_argument("--batch", type=int, action="append", help="texts per request")
    parser.add_argument("--dir", type=Path, help="an existing sandbox directory")
    args = parser.parse_args()
    batches = args.batch or [1, 64]
    if args.dir is not None:
        run(args.dir, args.texts, batches)
        return
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as scratch:
        directory = Path(scratch)
        sandbox.start(directory)
        try:
            run(directory, args.texts, batches)
        finally:
            sandbox.stop(directory)


if __name__ == "__main__":
    main()
