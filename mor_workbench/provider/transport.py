"""The provider's TCP transport: one MOR-RPC request per connection, as the live network does,
handed to a `RequestHandler`; what it answers is written back, then the connection is closed.
After a prompt answered on the fast channel the connection stays open for the consumer's next
request, up to `KEEP_ALIVE_IDLE_S` (`fastchannel.KEEP_ALIVE`); an idle connection is closed
without a word, and is the first to go when every slot is taken.

Defences against abusive peers live here: a cap on connections held at once and per peer
address, a deadline for the whole first request (so trickled bytes cannot hold a slot), the
eviction of the oldest incomplete connection when every slot is taken, and a half-close that
lets the peer read our answer before the connection goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from mor_workbench.errors import ConfigurationError
from mor_workbench.protocol import Decoder, ProtocolError, RemoteProtocolError, Request, Response
from mor_workbench.protocol.fastchannel import KEEP_ALIVE_IDLE_S
from mor_workbench.provider.handler import RequestHandler

__all__ = [
    "FIRST_MESSAGE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_PEER",
    "ConnectionLimits",
    "TcpTransport",
]

log = logging.getLogger("mor_workbench.provider")
MAX_CONNECTIONS = 256  # connections handled at once (each holds a socket and a task)
FIRST_MESSAGE_TIMEOUT_S = 10.0  # from connect to a complete request: a 1 MiB prompt at ~1 Mbit/s
MAX_CONNECTIONS_PER_PEER = 32  # one address's share of MAX_CONNECTIONS
_READ_SIZE = 65536


@dataclass(frozen=True)
class ConnectionLimits:
    """How much the transport takes: at most `max_concurrent` connections at once and
    `max_per_peer` from one IP address, each request complete within `first_message_timeout`
    s of connecting and at most `max_message` bytes (see `ProviderServer` for the defaults'
    reasons). Raises `ConfigurationError` for a limit below 1 or a timeout of 0 s or less."""

    max_concurrent: int = MAX_CONNECTIONS
    first_message_timeout: float = FIRST_MESSAGE_TIMEOUT_S
    max_per_peer: int = MAX_CONNECTIONS_PER_PEER
    max_message: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.max_per_peer < 1 or self.first_message_timeout <= 0:
            raise ConfigurationError(
                "max_concurrent and max_per_peer must be at least 1 and first_message_timeout "
                f"above 0 s (got {self.max_concurrent}, {self.max_per_peer}, "
                f"{self.first_message_timeout})"
            )


@dataclass
class _Connection:
    """One accepted connection, from its peer's address, while it holds a slot."""

    peer: str
    requested: bool = False  # its request has arrived complete: it is being answered
    idle: bool = False  # kept alive after an answer, waiting for the next request
    evicted: bool = False  # dropped, still incomplete, to make room for a new connection


class TcpTransport:
    """Listens on `host`:`port` (0: any free port) and hands each request to `handler`."""

    def __init__(
        self, handler: RequestHandler, *, host: str, port: int, limits: ConnectionLimits
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.limits = limits
        self._server: asyncio.base_events.Server | None = None
        # The connections holding a slot, oldest first (a dict keeps insertion order).
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._closing: set[asyncio.Task[Any]] = set()  # refused or evicted, being closed

    @property
    def connections(self) -> int:
        """Connections held now, each in one of the `limits.max_concurrent` slots."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen; `port` is then the port bound."""
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=self.limits.max_message
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, let running answers finish briefly (5 s), then close everything."""
        if self._server is not None:
            self._server.close()
        tasks = [*self._connections, *self._closing]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
        if self._server is not None:
            # Last: from Python 3.12 this waits for every connection to be closed.
            await self._server.wait_closed()
            self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        connection = _Connection(str(peername[0]) if peername else "unknown")
        refusal = self._admit(connection.peer)
        if refusal is not None:
            self._closing.add(task)
            try:
                await self._refuse(writer, refusal)
            finally:
                self._closing.discard(task)
                await self._finish(reader, writer)
            return
        self._connections[task] = connection
        try:
            await self._serve_one(reader, writer, connection)
        except asyncio.CancelledError:
            if connection.evicted:  # not a shutdown: tell the peer why before closing
                task.uncancel()
                if not connection.idle:  # an idle one has no request waiting: a word would
                    await self._refuse(  # read as the answer to its next request
                        writer,
                        "connection dropped: the provider is full and this request was still "
                        "incomplete; send the whole request at once",
                    )
        except ConnectionError:
            pass
        except Exception:  # a bug must not take the server down; the peer just loses this call
            log.exception("provider connection failed")
        finally:
            self._connections.pop(task, None)
            self._closing.discard(task)
            await self._finish(reader, writer)

    def _admit(self, peer: str) -> str | None:
        """Take a slot for a new connection from `peer`; why not, when it is refused.

        Over `max_per_peer` from one address: refused. All `max_concurrent` slots taken: the
        oldest connection still waiting for its complete request is evicted to make room (so
        slow senders cannot hold every slot for the length of their deadline); when all are
        being answered, refused as busy.
        """
        limits = self.limits
        if sum(1 for c in self._connections.values() if c.peer == peer) >= limits.max_per_peer:
            return (
                f"too many connections from {peer}: at most {limits.max_per_peer} at a time; "
                "wait for an answer before opening more"
            )
        if len(self._connections) >= limits.max_concurrent:
            oldest = next((t for t, c in self._connections.items() if not c.requested), None)
            if oldest is None:
                return (
                    f"provider busy: all {limits.max_concurrent} connections are being answered; "
                    "try again shortly"
                )
            self._connections.pop(oldest).evicted = True
            self._closing.add(oldest)
            oldest.cancel()
        return None

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then discard what the peer still sends (briefly, boundedly) so closing
        does not reset the connection before the peer reads our answer."""
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            deadline = time.monotonic() + 1.0
            discarded = 0
            while discarded < 8 * self.limits.max_message and time.monotonic() < deadline:
                data = await asyncio.wait_for(reader.read(_READ_SIZE), deadline - time.monotonic())
                if not data:
                    break
                discarded += len(data)
        writer.close()

    async def _serve_one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
    ) -> None:
        async def send(response: Response) -> None:
            writer.write(response.encode())
            await writer.drain()

        deadline_s = self.limits.first_message_timeout
        try:
            request = await asyncio.wait_for(
                self._read_request(reader, Decoder(self.limits.max_message)), deadline_s
            )
        except TimeoutError:
            await self._refuse(
                writer,
                f"the request did not arrive complete within {deadline_s:g} s"
                " of connecting; send the whole request at once",
            )
            return
        except ProtocolError as exc:
            await self._refuse(writer, str(exc))
            return
        connection.requested = True
        await self.handler.handle(request, send)
        while self.handler.keeps_alive(request):
            connection.requested, connection.idle = False, True  # evicted first when full
            try:
                request = await asyncio.wait_for(
                    self._read_request(reader, Decoder(self.limits.max_message)),
                    KEEP_ALIVE_IDLE_S,
                )
            except TimeoutError:
                return  # idle too long: closed without a word
            except ProtocolError as exc:
                if not reader.at_eof():  # a malformed request, not the consumer leaving
                    await self._refuse(writer, str(exc))
                return
            connection.requested, connection.idle = True, False
            await self.handler.handle(request, send)

    async def _read_request(self, reader: asyncio.StreamReader, decoder: Decoder) -> Request:
        """The first complete message on the connection, as a request."""
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise RemoteProtocolError("connection closed before a full request")
            objects = decoder.feed(data)
            if objects:
                return Request.from_json(objects[0])

    async def _refuse(self, writer: asyncio.StreamWriter, message: str) -> None:
        """Tell the peer, in a signed error, why its connection is not answered."""
        with contextlib.suppress(ConnectionError):
            writer.write(self.handler.error("", message).encode())
            await writer.drain()
