"""The consumer's MOR-RPC transport: one request per TCP connection, as the live network does,
with a connect timeout, a deadline for the first reply and a size limit on every message.

Failures are sorted here, where the bytes arrive: a provider that cannot be reached or drops
the connection raises `ProviderError`, one that is silent too long `ProviderStalled`, and a
malformed or oversized message `RemoteProtocolError` — all the provider's fault.

Where the bytes go is a seam (as httpx's `transport=`): `call` takes a `PeerTransport`, by
default `TCP`; `MockTransport` hands each request to an in-memory handler instead, so tests of
failover, recovery and session state run the real router and protocol code in milliseconds.
Timeouts, framing, size limits and the sorting of failures stay here, whichever transport.

A provider that keeps connections alive after a fast-channel answer (`fastchannel.KEEP_ALIVE`,
our own) gets its next request on the same TCP connection: `call` takes it from a router's
`ConnectionPool` and puts it back once the answer reached its END cleanly, saving the connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any, Protocol, runtime_checkable

from mor_workbench.errors import ProviderError, ProviderStalled
from mor_workbench.protocol import Decoder, Message, RemoteProtocolError, Request, Response
from mor_workbench.protocol.fastchannel import KEEP_ALIVE_REUSE_S

__all__ = [
    "CONSUMER_MESSAGE_LIMIT",
    "TCP",
    "ConnectionPool",
    "KeepableConnection",
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


@runtime_checkable
class KeepableConnection(PeerConnection, Protocol):
    """A connection that can say whether it is still open: what a `ConnectionPool` keeps."""

    @property
    def open(self) -> bool:
        """Neither side has closed it (as far as this event loop has seen)."""
        ...


class Replies(Protocol):
    """Turns the bytes of a provider's replies into what `call` yields (by default, the
    JSON `Response`s of the live wire; the fast channel's reader reads its frames too)."""

    def feed(self, data: bytes) -> list[Any]:
        """What `data`, the next bytes received, completes; raises `RemoteProtocolError`."""
        ...

    @property
    def reusable(self) -> bool:
        """Whether the replies ended where the connection may carry another request (the
        fast channel's END with nothing after it; never on the live wire)."""
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

    @property
    def open(self) -> bool:
        """Neither side has closed it (as far as this event loop has seen)."""
        return not self._writer.is_closing() and not self._reader.at_eof()

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


class ConnectionPool:
    """A router's idle TCP connections to providers that keep them alive (`fastchannel.
    KEEP_ALIVE`): `call` puts one back after an answer that ended cleanly and takes it for the
    next request to that endpoint within `KEEP_ALIVE_REUSE_S` (s); at most `per_endpoint` idle
    ones an endpoint (the provider counts them against its per-address limit). Connections
    that cannot say whether they are open (`KeepableConnection`: TCP's can) are closed, not
    kept. Used in one event loop; `close()` lets go of all."""

    def __init__(self, per_endpoint: int = 4) -> None:
        self.per_endpoint = per_endpoint
        self._idle: dict[str, list[tuple[float, KeepableConnection]]] = {}

    def take(self, endpoint: str) -> PeerConnection | None:
        """The most recently released connection to `endpoint` still open, else None."""
        self._sweep()  # what is left is open and fresh
        idle = self._idle.get(endpoint)
        return idle.pop()[1] if idle else None

    def release(self, endpoint: str, connection: PeerConnection) -> None:
        """Keep `connection` (its request fully answered) for the next request to `endpoint`."""
        self._sweep()
        idle = self._idle.get(endpoint, [])
        kept = isinstance(connection, KeepableConnection) and connection.open
        if kept and len(idle) < self.per_endpoint:
            self._idle[endpoint] = [*idle, (time.monotonic(), connection)]
        else:
            connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for _, connection in idle:
                connection.close()
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def _sweep(self) -> None:
        """Close the connections idle too long (the provider may close them at any time after)
        or closed by the provider."""
        oldest = time.monotonic() - KEEP_ALIVE_REUSE_S
        for endpoint, idle in list(self._idle.items()):
            kept = [(since, c) for since, c in idle if since > oldest and c.open]
            for since, connection in idle:
                if since <= oldest or not connection.open:
                    connection.close()
            if kept:
                self._idle[endpoint] = kept
            else:
                del self._idle[endpoint]


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
    pool: ConnectionPool | None = None,
) -> AsyncIterator[Response]:
    """Send one request over `transport` (TCP unless a test passes another) and yield each
    response until the provider closes the connection (or, given `replies`, what it reads).
    With `pool` (a provider that keeps connections alive) the request goes on an idle
    connection to `endpoint` when there is one, and the connection goes back to the pool
    when `replies` ended reusable; a reused connection that closes before any reply is
    replaced by a new one, and the request sent again (the provider answered nothing).

    Timeouts are in seconds, `max_message` in bytes. Raises `ProviderStalled` when the
    connection, the first reply or the next one takes longer than its timeout,
    `ProviderError` when the provider cannot be reached or breaks the connection, and
    `RemoteProtocolError` for a malformed or oversized message."""
    data = request if isinstance(request, bytes) else request.encode()
    connection = pool.take(endpoint) if pool is not None else None
    if connection is not None:
        first = await _first_bytes(connection, data, first_reply_timeout)
        if not first:  # the provider closed it, idle, as the request went: no answer came
            connection.close()
            connection = None
    if connection is None:
        connection = await _connect(endpoint, transport, connect_timeout)
        first = None
    try:
        if first is None:
            await connection.send(data)
        decoder = Decoder(max_message)
        timeout = first_reply_timeout
        while True:
            if first:
                data, first = first, None
            else:
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
        if pool is not None and replies is not None and replies.reusable:
            pool.release(endpoint, connection)
        else:
            connection.close()


async def _connect(endpoint: str, transport: PeerTransport, timeout: float) -> PeerConnection:
    try:
        async with asyncio.timeout(timeout):
            return await transport.connect(endpoint)
    except TimeoutError:
        raise ProviderStalled(f"could not connect within {timeout:g} s") from None
    except OSError as exc:
        raise ProviderError(f"could not connect: {exc.strerror or type(exc).__name__}") from None


async def _first_bytes(connection: PeerConnection, data: bytes, timeout: float) -> bytes | None:
    """Send `data` on a reused connection and read the first reply bytes: b"" when the
    connection turns out closed before any reply (send or read broken, or end of stream).
    Raises `ProviderStalled` when nothing comes within `timeout` s."""
    try:
        await connection.send(data)
        async with asyncio.timeout(timeout):
            return await connection.receive()
    except TimeoutError:
        connection.close()
        raise ProviderStalled(f"no reply within {timeout:g} s") from None
    except OSError:
        return b""


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
