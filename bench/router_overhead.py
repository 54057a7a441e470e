"""Benchmark: the latency the router adds over calling the same simulated backend directly.

The provider side runs in a process of its own, as it would on another machine: one simulated
model server (fixed latency, no jitter) and, in front of it, a provider router registered with
its own bid on an isolated sandbox's chain. This process calls that model server (a) directly
over HTTP, and (b) through the marketplace: an `AsyncSession` opened on that bid sends the
prompts (signed, ECIES-encrypted, over MOR-RPC on a real socket) and verifies and decrypts
each streamed chunk. Both paths yield parsed OpenAI dicts. For streaming and non-streaming at
1 and 50 concurrent requests it prints p50/p99 of TTFT (streaming) and end-to-end latency for
each path, the milliseconds added and the ratio, and this process's CPU per request. The
session is opened once before timing (its latency is printed on its own).

`--breakdown` adds where one streamed prompt's time goes at 1 concurrent (median µs of
sequential prompts, timed at the router's transport seam, so the steps hold whatever the code
inside them becomes): the consumer's work before it connects (request body, journal check,
encryption, signature), the TCP connect, writing the request, the provider and its backend up
to the bytes of the first token, and the consumer's verification, decryption and parsing up
to the caller; beside the direct call's TTFT, so the provider's share is the difference.

The direct baseline is the official openai client by default (what one would call instead);
`--direct-client aiohttp` gives a leaner floor, `httpx` a third view. On a 2-core machine the
three processes (this one, the provider's, anvil) share the cores, so at 50 concurrent the
figures include CPU queueing; the CPU per request printed under each case shows where it went.

    .venv/bin/python bench/router_overhead.py [--requests 200]
        [--direct-client openai|aiohttp|httpx] [--breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
from eth_account import Account

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import resolve_model
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.calls import CallRecord
from mor_workbench.router.router import Router
from mor_workbench.router.transport import PeerConnection, PeerTransport
from mor_workbench.sandbox.model_server import LatencyProfile, ModelServer
from mor_workbench.session import AsyncSession
from mor_workbench.workbench import aconnect

MODEL = "llama-3.3-70b"
PRICE_WEI = 10**11  # per second; any price will do, the session is opened on this bid
WARMUP = 10  # sequential requests per path and mode, plus one burst at the top concurrency

# (ttft, e2e) in seconds for one request; ttft is None for a non-streamed reply
Timing = tuple[float | None, float]
Call = Callable[[dict[str, Any]], Awaitable[Timing]]


def has_content(payload: dict[str, Any]) -> bool:
    """Whether a chunk (or completion) carries answer text: what TTFT waits for."""
    for choice in payload.get("choices") or ():
        part = choice.get("delta") or choice.get("message") or {}
        if part.get("content"):
            return True
    return False


async def timed(payloads: AsyncIterator[dict[str, Any]], started: float) -> Timing:
    """Drain one answer: when its first text arrived and when it finished."""
    ttft = None
    async for payload in payloads:
        if ttft is None and has_content(payload):
            ttft = time.perf_counter() - started
    return ttft, time.perf_counter() - started


async def sse_payloads(http: httpx.AsyncClient, url: str, body: dict) -> AsyncIterator[dict]:
    async with http.stream("POST", url, json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    break
                yield json.loads(data)


def direct_httpx(http: httpx.AsyncClient, base_url: str) -> Call:
    """POST to the model server with httpx; SSE lines parsed to dicts, like the router's."""
    url = base_url + "/chat/completions"

    async def call(body: dict[str, Any]) -> Timing:
        started = time.perf_counter()
        if body.get("stream"):
            return await timed(sse_payloads(http, url, body), started)
        reply = await http.post(url, json=body)
        reply.raise_for_status()
        assert has_content(reply.json())
        return None, time.perf_counter() - started

    return call


def direct_aiohttp(
    http: aiohttp.ClientSession, base_url: str, headers: dict[str, str] | None = None
) -> Call:
    """POST to an OpenAI-compatible `base_url` (the model server) with aiohttp: the leanest
    client, a floor for comparison."""
    url = base_url + "/chat/completions"

    async def call(body: dict[str, Any]) -> Timing:
        started = time.perf_counter()
        async with http.post(url, json=body, headers=headers) as reply:
            reply.raise_for_status()
            if not body.get("stream"):
                assert has_content(await reply.json())
                return None, time.perf_counter() - started
            ttft = None
            async for line in reply.content:
                data = line.startswith(b"data: ") and line.strip() != b"data: [DONE]"
                if data and ttft is None and has_content(json.loads(line[6:])):
                    ttft = time.perf_counter() - started
            return ttft, time.perf_counter() - started

    return call


def direct_openai(client: openai.AsyncOpenAI) -> Call:
    """The official OpenAI client (which also builds pydantic objects per chunk)."""

    async def call(body: dict[str, Any]) -> Timing:
        started = time.perf_counter()
        reply = await client.chat.completions.create(**body)
        if not body.get("stream"):
            assert reply.choices[0].message.content
            return None, time.perf_counter() - started
        ttft = None
        async for chunk in reply:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - started
        return ttft, time.perf_counter() - started

    return call


def through_router(session: AsyncSession) -> Call:
    """The same body through the open session: MOR-RPC to the provider router and back."""

    async def call(body: dict[str, Any]) -> Timing:
        started = time.perf_counter()
        return await timed(session.payloads(body, CallRecord(MODEL)), started)

    return call


class TimedTransport:
    """The router's transport, timed (`--breakdown`): when the current prompt's connection was
    asked for, made, its request written, and each batch of reply bytes arrived
    (`time.perf_counter()` s). One prompt at a time."""

    def __init__(self, inner: PeerTransport) -> None:
        self.inner = inner
        self.marks: dict[str, float] = {}
        self.received: list[float] = []

    def reset(self) -> None:
        self.marks, self.received = {}, []

    async def connect(self, endpoint: str) -> PeerConnection:
        self.marks["connect"] = time.perf_counter()
        connection = await self.inner.connect(endpoint)
        self.marks["connected"] = time.perf_counter()
        return _TimedConnection(connection, self)


class _TimedConnection:
    def __init__(self, inner: PeerConnection, timing: TimedTransport) -> None:
        self._inner, self._timing = inner, timing

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)
        self._timing.marks["sent"] = time.perf_counter()

    async def receive(self) -> bytes:
        data = await self._inner.receive()
        self._timing.received.append(time.perf_counter())
        return data

    @property
    def open(self) -> bool:  # kept by the router's pool when the provider keeps it alive
        return bool(getattr(self._inner, "open", False))

    def close(self) -> None:
        self._inner.close()


BREAKDOWN_STEPS = (
    ("consumer: body, journal check, encrypt, sign", "started", "connect"),
    ("TCP connect to the provider", "connect", "connected"),
    ("write the request", "connected", "sent"),
    ("provider + backend: to the first token's bytes", "sent", "token bytes"),
    ("consumer: verify, decrypt, parse, to the caller", "token bytes", "first token"),
)


async def breakdown(
    router: Router, session: AsyncSession, direct: Call, count: int, max_tokens: int
) -> None:
    """Print where one streamed prompt's time goes (see the module docstring): `count`
    sequential prompts through `session` (opened by `router`), each beside a direct call for
    the baseline."""
    timed = TimedTransport(router.transport)
    router.transport = timed
    router.connections.close()  # every connection from here on is a timed one
    steps: list[dict[str, float]] = []
    direct_ttft: list[float] = []
    try:
        for i in range(count):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Tell me about rivers (b {i})."}],
                "max_tokens": max_tokens,
                "stream": True,
            }
            ttft, _ = await direct(body)
            direct_ttft.append(ttft or 0.0)
            timed.reset()
            marks = {"started": time.perf_counter()}
            async for payload in session.payloads(body, CallRecord(MODEL)):
                if "first token" not in marks and has_content(payload):
                    marks["first token"] = time.perf_counter()
                    marks["token bytes"] = timed.received[-1]  # the bytes that carried it
            if "connect" not in timed.marks:  # the request went on a kept connection
                timed.marks["connect"] = timed.marks["connected"] = timed.marks["sent"]
            steps.append(marks | timed.marks)
    finally:
        router.transport = timed.inner
    print(f"where a streamed prompt's time goes (median of {count} sequential prompts):")
    for label, start, end in BREAKDOWN_STEPS:
        seconds = [s[end] - s[start] for s in steps]
        print(f"  {label:<52}{pct(seconds, 50) * 1000:>9.0f} µs")  # pct gives ms
    total = [s["first token"] - s["started"] for s in steps]
    print(
        f"  {'TTFT through the router':<52}{pct(total, 50) * 1000:>9.0f} µs"
        f"   (direct: {pct(direct_ttft, 50) * 1000:.0f} µs)",
        flush=True,
    )


async def run_cell(
    call: Call, stream: bool, concurrency: int, count: int, tag: str, max_tokens: int
) -> list[Timing]:
    """`count` requests, at most `concurrency` in flight; the timing of each."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Timing:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Tell me about rivers ({tag} {i})."}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
        async with semaphore:
            return await call(body)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def measured(
    call: Call, stream: bool, concurrency: int, count: int, tag: str, args: argparse.Namespace
) -> tuple[list[Timing], float, float]:
    """A cell's timings, its wall time, and this process's CPU seconds per request (client,
    provider router and backend all run here)."""
    cpu, wall = time.process_time(), time.perf_counter()
    timings = await run_cell(call, stream, concurrency, count, tag, args.max_tokens)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return timings, wall, cpu / count


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (linear between closest ranks), in milliseconds."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return 1000 * (ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


async def register_provider(info: sandbox.SandboxInfo, key: str, endpoint: str) -> bytes:
    """Fund, stake and register the extra provider at `endpoint`; its bid id on MODEL."""
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    provider, owner = Signer(key), info.signer("owner")
    try:
        await chain.rpc.request("anvil_setBalance", [provider.address, hex(10**21)])
        token = chain.deployment.token
        await chain.transact(owner, "transfer", provider.address, 300 * MOR, to=token)
        await chain.transact(provider, "approve", chain.deployment.diamond, 2**255, to=token)
        await chain.transact(provider, "providerRegister", provider.address, 200 * MOR, endpoint)
        model_id, _ = await resolve_model(chain, MODEL)
        await chain.transact(provider, "postModelBid", provider.address, model_id, PRICE_WEI)
        bids = await tables.bids(chain, MODEL)
        ours = bids[bids["provider"].str.lower() == provider.address.lower()]
        return bytes.fromhex(ours.iloc[0]["id"][2:])
    finally:
        await chain.rpc.aclose()


async def model_id_of(info: sandbox.SandboxInfo) -> bytes:
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    try:
        return (await resolve_model(chain, MODEL))[0]
    finally:
        await chain.rpc.aclose()


def row(label: str, direct: list[float], router: list[float]) -> str:
    cells = []
    for q in (50, 99):
        d, r = pct(direct, q), pct(router, q)
        cells.append(f"{d:8.1f} {r:8.1f} {r - d:+8.1f} {r / d:6.2f}x")
    return f"{label:<28}" + "   ".join(cells)


async def serve_provider(directory: Path, key: str, args: argparse.Namespace, pipe: Any) -> None:
    """The provider side: model server, provider router, registration; sends (backend URL,
    bid id) through `pipe` and serves until told to stop."""
    info = sandbox.status(directory)
    assert info is not None
    profile = LatencyProfile(ttft_s=args.ttft_ms / 1000, tokens_per_second=args.tps, jitter=0.0)
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    model_id = await model_id_of(info)
    async with ModelServer([MODEL], profile=profile) as backend:
        config = ModelConfig(model_id, MODEL, backend.base_url + "/chat/completions")
        # 50 concurrent streams from this one host: above the default 32 connections per
        # peer address (a defence against one host taking every slot), as an operator serving
        # a known heavy consumer would set it
        async with ProviderServer(
            signer=Signer(key),
            chain=chain,
            models=[config],
            claim_interval=None,
            max_per_peer=max(64, max(args.concurrency) + 8),
        ) as provider:
            bid = await register_provider(info, key, provider.endpoint)
            pipe.send((backend.base_url, bid))
            await asyncio.to_thread(pipe.recv)  # stop
    await chain.rpc.aclose()


def provider_process(directory: Path, key: str, args: argparse.Namespace, pipe: Any) -> None:
    asyncio.run(serve_provider(directory, key, args, pipe))


async def bench(tmp: Path, args: argparse.Namespace) -> None:
    os.environ["MOR_WORKBENCH_HOME"] = str(tmp / "home")  # the journal stays in the temp dir
    directory = tmp / "sandbox"
    await asyncio.to_thread(sandbox.start, directory)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, sandbox.reset, directory)
        key = Account.create().key.hex()
        ours, theirs = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        side = context.Process(target=provider_process, args=(directory, key, args, theirs))
        side.start()

        async def stop_provider() -> None:
            ours.send("stop")
            await asyncio.to_thread(side.join, 30)

        stack.push_async_callback(stop_provider)
        if not await asyncio.to_thread(ours.poll, 120):
            raise RuntimeError("the provider process did not start")
        backend_url, bid = ours.recv()
        wb = await aconnect("sandbox", sandbox_dir=directory)
        stack.push_async_callback(wb.close)

        started = time.perf_counter()
        session = await wb.open_session(MODEL, duration="30m", bid=bid)
        open_s = time.perf_counter() - started
        stack.push_async_callback(session.close)
        assert session.provider == Signer(key).address

        http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=60.0,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
            )
        )
        if args.direct_client == "openai":
            client = openai.AsyncOpenAI(base_url=backend_url, api_key="unused", max_retries=0)
            stack.push_async_callback(client.close)
            direct = direct_openai(client)
        elif args.direct_client == "aiohttp":
            lean = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
            )
            direct = direct_aiohttp(lean, backend_url)
        else:
            direct = direct_httpx(http, backend_url)
        router = through_router(session)
        top = max(args.concurrency)
        for stream in (True, False):  # warm up: connections, pools, code paths
            for call in (direct, router):
                await run_cell(call, stream, 1, WARMUP, "warm-up", args.max_tokens)
                await run_cell(call, stream, top, top, "warm-up", args.max_tokens)

        print(
            f"router overhead: {MODEL} on one simulated backend (TTFT {args.ttft_ms:g} ms, "
            f"{args.tps:g} tokens/s, no jitter, max_tokens {args.max_tokens}); direct = "
            f"{args.direct_client}, router = AsyncSession -> provider router (own process) "
            f"(encrypted prompts: {session.opened.encrypt})"
        )
        print(f"session open (one time, excluded below): {open_s * 1000:.0f} ms")
        header = "   ".join(["  direct   router    added  ratio"] * 2)
        print(f"{'':<28}{'p50 (ms)':^34}   {'p99 (ms)':^34}")
        print(f"{'case':<28}{header}")
        summary = []
        for stream in (True, False):
            for concurrency in args.concurrency:
                count = args.requests
                d, d_wall, d_cpu = await measured(
                    direct, stream, concurrency, count, "direct", args
                )
                r, r_wall, r_cpu = await measured(
                    router, stream, concurrency, count, "router", args
                )
                mode = "stream" if stream else "non-stream"
                name = f"{mode}, {concurrency} concurrent"
                if stream:
                    print(row(f"{name}: TTFT", [t for t, _ in d], [t for t, _ in r]), flush=True)
                print(row(f"{name}: e2e", [e for _, e in d], [e for _, e in r]), flush=True)
                print(
                    f"{'':<28}n={count} each; wall {d_wall:.1f} s direct, {r_wall:.1f} s "
                    f"router; CPU of this process {d_cpu * 1000:.2f} ms/request direct, "
                    f"{r_cpu * 1000:.2f} ms/request router",
                    flush=True,
                )
                metric = [t for t, _ in d] if stream else [e for _, e in d]
                routed = [t for t, _ in r] if stream else [e for _, e in r]
                what = "TTFT" if stream else "e2e"
                summary.append(
                    f"{mode}@{concurrency} {what} {pct(routed, 50) - pct(metric, 50):+.1f}"
                )
        print(
            "summary: router adds (p50, ms) "
            + ", ".join(summary)
            + f"; session open {open_s * 1000:.0f} ms once"
        )
        if args.breakdown:
            await breakdown(wb.router, session, direct, args.requests, args.max_tokens)


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(Path(tmp), args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--tps", type=float, default=400.0, help="tokens per second")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--direct-client", choices=["openai", "httpx", "aiohttp"], default="openai")
    parser.add_argument(
        "--breakdown", action="store_true", help="also print where a streamed prompt's time goes"
    )
    main(parser.parse_args())
