"""Benchmark: our router beside LiteLLM's proxy, in front of the same simulated backend.

One simulated model server (fixed latency, no jitter) with, in front of it, a provider router
in a process of its own (as in `router_overhead.py`). This process streams the same requests
  - directly to the model server (the floor),
  - through `wb.stream` (the in-process router: MOR-RPC to that provider),
  - through our `serve` (an OpenAI-compatible endpoint over a workbench, in its own process),
  - through LiteLLM's proxy (in its own process and its own venv, which this bench creates
    under .bench-venvs/litellm with `python -m venv` and `pip install 'litellm[proxy]'` on
    first use; LiteLLM is not a dependency of ours),
and prints, for 1 and 50 concurrent streams, each path's TTFT and end-to-end p50/p99, the
milliseconds each adds over the direct call, and how many times our added latency LiteLLM's
is. Every HTTP path (direct, serve, LiteLLM) is read by the same client: aiohttp, the leanest
(a floor), or with `--client openai` the official openai client, what an application calls
(issue 16's baseline). On a small machine the processes share its cores, so the 50-concurrent
figures include CPU queueing.

    .venv/bin/python bench/peer_bench.py [--requests 100] [--concurrency 1 50]
        [--client aiohttp|openai]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
from eth_account import Account
from router_overhead import (
    MODEL,
    Call,
    Timing,
    direct_aiohttp,
    direct_openai,
    pct,
    provider_process,
    run_cell,
)

from mor_workbench import sandbox
from mor_workbench.chain.keys import Signer
from mor_workbench.serve import serve
from mor_workbench.workbench import AsyncWorkbench, aconnect

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / ".bench-venvs" / "litellm"
LITELLM_START_S = 180.0  # its proxy imports a lot before it listens


def litellm_venv() -> Path:
    """LiteLLM's `litellm` command, in a venv of its own (created on first use)."""
    command = LITELLM_VENV / "bin" / "litellm"
    if not command.exists():
        print(f"creating {LITELLM_VENV} with litellm[proxy] (once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = LITELLM_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", "litellm[proxy]"], check=True)
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll `url` until it answers (any HTTP status); RuntimeError when the process exits or
    `timeout` (s) passes first."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url):
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@contextlib.asynccontextmanager
async def litellm_proxy(backend_url: str, tmp: Path, master_key: str):
    """LiteLLM's proxy in front of `backend_url` (OpenAI-compatible), serving MODEL to
    requests bearing `master_key` (it refuses to start without one); its base URL while it
    runs."""
    command = litellm_venv()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {backend_url}\n"
        "      api_key: unused\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of its price list
        # no tokenizer download per request (it retries for ~20 s where there is no network)
        "HF_HUB_OFFLINE": "1",
        "LITELLM_LOG": "ERROR",
    }
    log = (tmp / "litellm.log").open("wb")
    process = subprocess.Popen(
        [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", process, LITELLM_START_S)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def run_serve(directory: Path, provider: str, pipe: Any) -> None:
    """Our `serve` over a workbench that uses only `provider`; sends its base URL through
    `pipe` and serves until told to stop."""
    workbench = await aconnect("sandbox", sandbox_dir=directory, strategy={"allow": [provider]})
    task = asyncio.create_task(serve(workbench, port=0, ready=pipe.send))
    await asyncio.to_thread(pipe.recv)  # stop
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def serve_process(directory: Path, provider: str, home: str, pipe: Any) -> None:
    os.environ["MOR_WORKBENCH_HOME"] = home  # a journal of its own
    asyncio.run(run_serve(directory, provider, pipe))


def through_stream(wb: AsyncWorkbench, max_tokens: int) -> Call:
    """`wb.stream` on the workbench's session for MODEL: TTFT at the first text delta."""

    async def call(body: dict[str, Any]) -> Timing:
        started = time.perf_counter()
        ttft = None
        stream = wb.stream(body["messages"], model=MODEL, max_tokens=max_tokens)
        async for delta in stream:
            if ttft is None and delta:
                ttft = time.perf_counter() - started
        return ttft, time.perf_counter() - started

    return call


@contextlib.asynccontextmanager
async def http_reader(client: str) -> AsyncIterator[Callable[[str, str], Call]]:
    """A maker of `Call`s reading an OpenAI-compatible base URL with an API key, all through
    one `client` ("aiohttp": one session; "openai": the official client, one per URL)."""
    async with contextlib.AsyncExitStack() as stack:
        if client == "openai":

            def reader(base_url: str, api_key: str) -> Call:
                made = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
                stack.push_async_callback(made.close)
                return direct_openai(made)

        else:
            http = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
            )

            def reader(base_url: str, api_key: str) -> Call:
                return direct_aiohttp(http, base_url, {"Authorization": f"Bearer {api_key}"})

        yield reader


def table(label: str, direct: list[float], paths: dict[str, list[float]]) -> list[str]:
    """Rows: the direct floor, then each path's p50/p99 and what it adds (ms), then how many
    times our added latency LiteLLM's is."""
    lines = [f"  {label}"]
    lines.append(f"    {'direct':<12}p50 {pct(direct, 50):8.1f}   p99 {pct(direct, 99):8.1f}")
    added: dict[str, tuple[float, float]] = {}
    for name, values in paths.items():
        add50, add99 = pct(values, 50) - pct(direct, 50), pct(values, 99) - pct(direct, 99)
        added[name] = add50, add99
        lines.append(
            f"    {name:<12}p50 {pct(values, 50):8.1f}   p99 {pct(values, 99):8.1f}   "
            f"added p50 {add50:+8.1f}   p99 {add99:+8.1f}"
        )
    theirs = added["litellm"]
    for ours in ("wb.stream", "serve"):
        ratios = [
            t / o if o > 0 else float("inf") for t, o in zip(theirs, added[ours], strict=True)
        ]
        lines.append(
            f"    litellm adds {ratios[0]:.1f}x (p50) / {ratios[1]:.1f}x (p99) what {ours} adds"
        )
    return lines


async def bench(tmp: Path, args: argparse.Namespace) -> None:
    os.environ["MOR_WORKBENCH_HOME"] = str(tmp / "home")
    directory = tmp / "sandbox"
    await asyncio.to_thread(sandbox.start, directory)
    context = multiprocessing.get_context("spawn")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, sandbox.reset, directory)
        key = Account.create().key.hex()
        provider = Signer(key).address
        ours, theirs = multiprocessing.Pipe()
        side = context.Process(target=provider_process, args=(directory, key, args, theirs))
        side.start()

        async def stop(pipe: Any, process: Any) -> None:
            pipe.send("stop")
            await asyncio.to_thread(process.join, 30)

        stack.push_async_callback(stop, ours, side)
        if not await asyncio.to_thread(ours.poll, 120):
            raise RuntimeError("the provider process did not start")
        backend_url, _bid = ours.recv()

        serve_ours, serve_theirs = multiprocessing.Pipe()
        home = str(tmp / "serve-home")
        served = context.Process(
            target=serve_process, args=(directory, provider, home, serve_theirs)
        )
        served.start()
        stack.push_async_callback(stop, serve_ours, served)
        if not await asyncio.to_thread(serve_ours.poll, 120):
            raise RuntimeError("the serve process did not start")
        serve_url = serve_ours.recv()

        master_key = "sk-" + os.urandom(16).hex()
        litellm_url = await stack.enter_async_context(litellm_proxy(backend_url, tmp, master_key))
        wb = await aconnect("sandbox", sandbox_dir=directory, strategy={"allow": [provider]})
        stack.push_async_callback(wb.close)
        reader = await stack.enter_async_context(http_reader(args.client))
        paths: dict[str, Call] = {
            "direct": reader(backend_url, "unused"),
            "wb.stream": through_stream(wb, args.max_tokens),
            "serve": reader(serve_url, "unused"),
            "litellm": reader(litellm_url, master_key),
        }
        top = max(args.concurrency)
        for call in paths.values():  # warm up: sessions, connections, pools, code paths
            await run_cell(call, True, 1, 10, "warm-up", args.max_tokens)
            await run_cell(call, True, top, top, "warm-up", args.max_tokens)

        print(
            f"peer bench: {MODEL} on one simulated backend (TTFT {args.ttft_ms:g} ms, "
            f"{args.tps:g} tokens/s, no jitter, max_tokens {args.max_tokens}), streamed; "
            f"n={args.requests} per cell; HTTP paths read by {args.client}; milliseconds"
        )
        for concurrency in args.concurrency:
            timings: dict[str, list[Timing]] = {}
            for name, call in paths.items():
                timings[name] = await run_cell(
                    call, True, concurrency, args.requests, name, args.max_tokens
                )
            direct = timings.pop("direct")
            for what, index in (("TTFT", 0), ("e2e", 1)):
                rows = table(
                    f"{concurrency} concurrent: {what}",
                    [t[index] for t in direct],
                    {name: [t[index] for t in ts] for name, ts in timings.items()},
                )
                print("\n".join(rows), flush=True)


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(Path(tmp), args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--tps", type=float, default=400.0, help="tokens per second")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--client", choices=["aiohttp", "openai"], default="aiohttp", help="reads every HTTP path"
    )
    main(parser.parse_args())
