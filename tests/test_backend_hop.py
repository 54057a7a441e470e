"""The provider's hop to its backend (aiohttp, `BackendHttp`): SSE lines however the bytes
are cut, CRLF line ends, lines longer than any read buffer; one kept-alive connection for
consecutive answers; an unreachable backend raises one of `BACKEND_FAILURES`. Against a real
HTTP server on a socket."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from mor_workbench.provider.backend import (
    BACKEND_FAILURES,
    BackendHttp,
    BackendStream,
    OpenAIBackend,
)
from mor_workbench.provider.config import ModelConfig

PEERS = web.AppKey("peers", set)
LONG = "x" * 300_000  # longer than aiohttp's line buffer


def chunk(text: str) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "backend-name",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


CHUNKS = [chunk("Hello"), chunk(LONG), chunk(" world")]


async def sse(request: web.Request) -> web.StreamResponse:
    request.app[PEERS].add(request.transport.get_extra_info("peername"))
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in CHUNKS)
    body += b": a comment\r\n\r\ndata: [DONE]\r\n\r\n"
    for start in range(0, len(body), 7_777):  # cut mid-line, mid-CRLF
        await response.write(body[start : start + 7_777])
        await asyncio.sleep(0)
    await response.write_eof()
    return response


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, set]]:
    app = web.Application()
    app[PEERS] = set()
    app.router.add_post("/v1/chat/completions", sse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1/chat/completions", app[PEERS]
    await runner.cleanup()


async def answer(http: BackendHttp, url: str) -> list[dict]:
    model = ModelConfig(b"\0" * 32, "backend-name", url)
    body = {"model": "asked", "messages": [], "stream": True}
    return [c async for c in OpenAIBackend(model, http).complete(body, BackendStream())]


async def test_sse_lines_come_through_whole_however_the_bytes_are_cut(backend) -> None:
    url, _ = backend
    http = BackendHttp()
    try:
        got = await answer(http, url)
    finally:
        await http.aclose()
    assert [c["choices"][0]["delta"]["content"] for c in got] == ["Hello", LONG, " world"]
    assert {c["model"] for c in got} == {"asked"}


async def test_consecutive_answers_reuse_one_connection(backend) -> None:
    url, peers = backend
    http = BackendHttp()
    try:
        for _ in range(5):
            assert len(await answer(http, url)) == 3
    finally:
        await http.aclose()
    assert len(peers) == 1  # one client port: the connection was kept alive


async def test_an_unreachable_backend_raises_a_backend_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens once closed
    http = BackendHttp()
    try:
        with pytest.raises(BACKEND_FAILURES):
            await answer(http, f"http://127.0.0.1:{port}/v1/chat/completions")
    finally:
        await http.aclose()
