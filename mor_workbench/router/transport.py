"""The consumer's MOR-RPC transport: one request per TCP connection, as the live network does,
with a connect timeout, a deadline for the first reply and a size limit on every message.

Failures are sorted here, where the bytes arrive: a provider that cannot be reached or drops
the connection raises `ProviderError`, one that is silent too long `ProviderStalled`, and a
malformed or oversized message `RemoteProtocolError` — all the provider's fault.

Where the bytes go is a seam (as httpx's `transport=`): `call` takes a `PeerTransport`, by
default `TCP`; `MockTransport` hands each request to an in-memory handler instead, so tests of
failover, recovery and session state run the real router and protocol code in milliseconds.
Timeouts, framing, size limits and the sorting of failures stay here, whichever transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any, Protocol

from mor_workbench.errors import ProviderError, ProviderStalled
from mor_workbench.protocol import Decoder, Message, RemoteProtocolError, Request, Response

__all__ = [
    "CONSUMER_MESSAGE_LIMIT",
    "TCP",
    "MockTransport",
    "PeerConnection",
    "PeerHandler",
    "PeerTransport",
    "Replies",
    "TcpTransport",
    "call",
    "call_once",
]

CONSUMER_MESSAGE_LIMIT = 4 * 1024 * 1024
"""Bytes: the largest single MOR-RPC message a consumer reads from a provider."""
READ_SIZE = 65536
"""Bytes: the most one `PeerConnection.receive()` returns."""


class PeerConnection(Protocol):
    """One connection to a provider, carrying one request and its replies."""

    async def send(self, data: bytes) -> None:
        """Write `data` to the provider; `OSError` when the connection broke."""
        ...

    async def receive(self) -> bytes:
        """The next bytes from the provider (at most `READ_SIZE`); b"" once it closed the
        connection; `OSError` when the connection broke. May wait forever (a stall):
        `call` bounds each wait with its timeouts."""
        ...

    def close(self) -> None:
        """Let go of the connection (never raises)."""
        ...


class Replies(Protocol):
    """Turns the bytes of a provider's replies into what `call` yields (by default, the
    JSON `Response`s of the live wire; the fast channel's reader reads its frames too)."""

    def feed(self, data: bytes) -> list[Any]:
        """What `data`, the next bytes received, completes; raises `RemoteProtocolError`."""
        ...


class PeerTransport(Protocol):
    """How a consumer reaches a provider's endpoint (host:port, as registered on chain)."""

    async def connect(self, endpoint: str) -> PeerConnection:
        """A connection to `endpoint`; `OSError` when nobody answers there,
        `RemoteProtocolError` when `endpoint` is not host:port."""
        ...


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise RemoteProtocolError(f"provider endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


class _TcpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> bytes:
        return await self._reader.read(READ_SIZE)

    def close(self) -> None:
        self._writer.close()


class TcpTransport:
    """The live network's transport: a TCP connection to host:port per request."""

    async def connect(self, endpoint: str) -> PeerConnection:
        host, port = _split(endpoint)
        reader, writer = await asyncio.open_connection(host, port)
        return _TcpConnection(reader, writer)


TCP = TcpTransport()
"""The default transport of every consumer call."""

PeerHandler = Callable[[bytes], AsyncIterator[bytes]]
"""An in-memory provider: given one request's bytes, yields the bytes of its replies and
returns to close the connection. Raising `OSError` (e.g. `ConnectionResetError`) breaks the
connection; waiting without yielding is a stall."""


_closing: set[asyncio.Task[None]] = set()  # handlers being told the consumer hung up


class _MemoryConnection:
    def __init__(self, handler: PeerHandler) -> None:
        self._handler = handler
        self._replies: AsyncIterator[bytes] | None = None
        self._request = bytearray()

    async def send(self, data: bytes) -> None:
        if self._replies is not None:
            raise ConnectionResetError("one request per connection")
        self._request += data

    async def receive(self) -> bytes:
        if self._replies is None:
            self._replies = self._handler(bytes(self._request))
        try:
            return await anext(self._replies)
        except StopAsyncIteration:
            return b""

    def close(self) -> None:
        if self._replies is not None:
            task = asyncio.ensure_future(self._replies.aclose())  # type: ignore[attr-defined]
            _closing.add(task)
            task.add_done_callback(_closing.discard)


class MockTransport:
    """Providers in memory, by endpoint (like httpx's `MockTransport`), for tests only.

    `routes` maps an endpoint to its `PeerHandler`; it stays the caller's, so a test can take
    a provider down (`del routes[endpoint]`: its connections are refused, as a dead process's
    port) or bring one up while the router runs. The bytes cross exactly as over TCP: the
    consumer's framing, size limits, timeouts and error sorting all apply."""

    def __init__(self, routes: MutableMapping[str, PeerHandler]) -> None:
        self.routes = routes

    async def connect(self, endpoint: str) -> PeerConnection:
        handler = self.routes.get(endpoint)
        if handler is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return _MemoryConnection(handler)


async def call(
    endpoint: str,
    request: Request | bytes,
    expect: type[Message],
    *,
    transport: PeerTransport = TCP,
    connect_timeout: float = 5.0,
    first_reply_timeout: float = 90.0,
    idle_timeout: float = 60.0,
    max_message: int = CONSUMER_MESSAGE_LIMIT,
    replies: Replies | None = None,
) -> AsyncIterator[Response]:
    """Send one request over `transport` (TCP unless a test passes another) and yield each
    response until the provider closes the connection (or, given `replies`, what it reads).

    Timeouts are in seconds, `max_message` in bytes. Raises `ProviderStalled` when the
    connection, the first reply or the next one takes longer than its timeout,
    `ProviderError` when the provider cannot be reached or breaks the connection, and
    `RemoteProtocolError` for a malformed or oversized message."""
    try:
        async with asyncio.timeout(connect_timeout):
            connection = await transport.connect(endpoint)
    except TimeoutError:
        raise ProviderStalled(f"could not connect within {connect_timeout:g} s") from None
    except OSError as exc:
        raise ProviderError(f"could not connect: {exc.strerror or type(exc).__name__}") from None
    try:
        await connection.send(request if isinstance(request, bytes) else request.encode())
        decoder = Decoder(max_message)
        timeout = first_reply_timeout
        while True:
            try:
                # a timeout scope, not wait_for: no task per read (issue 16 §3)
                async with asyncio.timeout(timeout):
                    data = await connection.receive()
            except TimeoutError:
                raise ProviderStalled(f"no reply within {timeout:g} s") from None
            if not data:
                return
            if replies is not None:
                for reply in replies.feed(data):
                    timeout = idle_timeout
                    yield reply
                continue
            for obj in decoder.feed(data):
                timeout = idle_timeout
                yield Response.from_json(obj, expect)
    except ProviderStalled:  # a TimeoutError, hence an OSError: not a broken connection
        raise
    except OSError as exc:  # ConnectionResetError, BrokenPipeError, …
        raise ProviderError(f"the connection broke: {exc.strerror or type(exc).__name__}") from None
    finally:
        connection.close()


async def call_once(
    endpoint: str,
    request: Request | bytes,
    expect: type[Message],
    *,
    transport: PeerTransport = TCP,
    **options: float,
) -> list[Response]:
    """All responses to one request, as a list (see `call`)."""
    return [r async for r in call(endpoint, request, expect, transport=transport, **options)]
