"""The consumer's MOR-RPC transport: one request per TCP connection, as the live network does,
with a connect timeout, a deadline for the first reply and a size limit on every message.

Failures are sorted here, where the bytes arrive: a provider that cannot be reached or drops
the connection raises `ProviderError`, one that is silent too long `ProviderStalled`, and a
malformed or oversized message `RemoteProtocolError` — all the provider's fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mor_workbench.errors import ProviderError, ProviderStalled
from mor_workbench.protocol import Decoder, Message, RemoteProtocolError, Request, Response

__all__ = ["CONSUMER_MESSAGE_LIMIT", "call", "call_once"]

CONSUMER_MESSAGE_LIMIT = 4 * 1024 * 1024
"""Bytes: the largest single MOR-RPC message a consumer reads from a provider."""


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
    max_message: int = CONSUMER_MESSAGE_LIMIT,
) -> AsyncIterator[Response]:
    """Send one request and yield each response until the provider closes the connection.

    Timeouts are in seconds, `max_message` in bytes. Raises `ProviderStalled` when the
    connection, the first reply or the next one takes longer than its timeout,
    `ProviderError` when the provider cannot be reached or breaks the connection, and
    `RemoteProtocolError` for a malformed or oversized message."""
    host, port = _split(endpoint)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout
        )
    except TimeoutError:
        raise ProviderStalled(f"could not connect within {connect_timeout:g} s") from None
    except OSError as exc:
        raise ProviderError(f"could not connect: {exc.strerror or type(exc).__name__}") from None
    try:
        writer.write(request if isinstance(request, bytes) else request.encode())
        await writer.drain()
        decoder = Decoder(max_message)
        timeout = first_reply_timeout
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                raise ProviderStalled(f"no reply within {timeout:g} s") from None
            if not data:
                return
            for obj in decoder.feed(data):
                timeout = idle_timeout
                yield Response.from_json(obj, expect)
    except ProviderStalled:  # a TimeoutError, hence an OSError: not a broken connection
        raise
    except OSError as exc:  # ConnectionResetError, BrokenPipeError, …
        raise ProviderError(f"the connection broke: {exc.strerror or type(exc).__name__}") from None
    finally:
        writer.close()


async def call_once(
    endpoint: str, request: Request | bytes, expect: type[Message], **options: float
) -> list[Response]:
    """All responses to one request, as a list."""
    return [r async for r in call(endpoint, request, expect, **options)]
