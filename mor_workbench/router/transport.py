"""The consumer's MOR-RPC transport: one request per TCP connection, as the live network does,
with a connect timeout, a deadline for the first reply and a size limit on every message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mor_workbench.protocol import Decoder, Message, RemoteProtocolError, Request, Response

__all__ = ["call", "call_once"]


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise RemoteProtocolError(f"provider endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


async def call(
    endpoint: str,
    request: Request | bytes,
    expect: type[Message],
    *,
    connect_timeout: float = 5.0,
    first_reply_timeout: float = 90.0,
    idle_timeout: float = 60.0,
    max_message: int = 4 * 1024 * 1024,
) -> AsyncIterator[Response]:
    """Send one request and yield each response until the provider closes the connection."""
    host, port = _split(endpoint)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
    try:
        writer.write(request if isinstance(request, bytes) else request.encode())
        await writer.drain()
        decoder = Decoder(max_message)
        timeout = first_reply_timeout
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                return
            for obj in decoder.feed(data):
                timeout = idle_timeout
                yield Response.from_json(obj, expect)
    finally:
        writer.close()


async def call_once(
    endpoint: str, request: Request | bytes, expect: type[Message], **options: float
) -> list[Response]:
    """All responses to one request, as a list."""
    return [r async for r in call(endpoint, request, expect, **options)]
