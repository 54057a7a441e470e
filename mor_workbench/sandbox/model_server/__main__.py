"""python -m mor_workbench.sandbox.model_server: print the base URL, serve until SIGINT/SIGTERM.

python -m mor_workbench.sandbox.model_server --model llama-3.3-70b --profile fast --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Sequence

from mor_workbench.sandbox.model_server.profiles import PROFILES
from mor_workbench.sandbox.model_server.server import ModelServer

__all__ = ["main"]


async def _serve(args: argparse.Namespace) -> None:
    profile = PROFILES[args.profile]
    if args.ttft is not None:
        profile = dataclasses.replace(profile, ttft_s=args.ttft)
    if args.tps is not None:
        profile = dataclasses.replace(profile, tokens_per_second=args.tps)
    server = ModelServer(
        args.model or ["llama-3.3-70b"],
        profile=profile,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(server.base_url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until a signal."""
    parser = argparse.ArgumentParser(
        prog="python -m mor_workbench.sandbox.model_server",
        description="Run a simulated OpenAI-compatible model server; prints its base URL.",
    )
    parser.add_argument("--model", action="append", help="a model id to serve (repeatable)")
    parser.add_argument("--profile", default="balanced", choices=sorted(PROFILES))
    parser.add_argument("--ttft", type=float, help="override the profile's TTFT (seconds)")
    parser.add_argument("--tps", type=float, help="override the profile's tokens per second")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="require this Bearer token")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and jitter RNG")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
