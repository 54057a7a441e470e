"""The transport seam sorts a provider's failures as TCP does, whatever carries the bytes:
nobody at the endpoint, a broken connection, a stall, an oversized message."""

from __future__ import annotations

import asyncio

import pytest

from mor_workbench.errors import ProviderError, ProviderStalled
from mor_workbench.protocol import PingReq, PongRes, RemoteProtocolError, Request
from mor_workbench.router.transport import MockTransport, call_once

PING = Request("1", PingReq(b"\0" * 8))


async def test_an_endpoint_nobody_serves_refuses_the_connection() -> None:
    with pytest.raises(ProviderError, match="could not connect: Connection refused"):
        await call_once("gone:1", PING, PongRes, transport=MockTransport({}))


async def test_a_connection_broken_mid_reply_is_the_providers_fault() -> None:
    async def breaks(request: bytes):
        yield b'{"id":"1",'
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ProviderError, match="connection broke: Connection reset by peer"):
        await call_once("p:1", PING, PongRes, transport=MockTransport({"p:1": breaks}))


async def test_a_silent_provider_stalls_the_call_after_its_timeout() -> None:
    heard: list[bytes] = []

    async def silent(request: bytes):
        heard.append(request)
        await asyncio.Event().wait()
        yield b""  # never reached: a generator that never yields

    transport = MockTransport({"p:1": silent})
    with pytest.raises(ProviderStalled, match=r"no reply within 0\.05 s"):
        await call_once("p:1", PING, PongRes, transport=transport, first_reply_timeout=0.05)
    assert heard == [PING.encode()]  # the request's exact bytes reached the provider


async def test_a_message_over_the_consumers_limit_is_refused() -> None:
    async def huge(request: bytes):
        yield b'{"id":"1","result":"' + b"x" * 2048 + b'"}'

    with pytest.raises(RemoteProtocolError, match="message longer than 1024 bytes"):
        await call_once(
            "p:1", PING, PongRes, transport=MockTransport({"p:1": huge}), max_message=1024
        )
