"""Connection reuse between our own peers (`fastchannel.KEEP_ALIVE`), on the sandbox: our
router and a real ProviderServer on a socket. A fast-channel answer's connection carries the
next prompt; a connection the provider lets go while idle (its wait over, its slot taken, or
closed just as a request goes) is replaced without the caller seeing it; the live wire keeps
one request per connection."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mor_workbench.provider import transport as provider_transport
from mor_workbench.provider.handler import RequestHandler
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.router.router import OpenSession
from mor_workbench.router.transport import TCP, PeerConnection

MODEL = "llama-3.3-70b"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "tell me about rivers"}],
    "seed": 7,
    "stream": True,
}


class CountingTcp:
    """TCP as the router uses it, counting the connections made."""

    def __init__(self) -> None:
        self.connects = 0

    async def connect(self, endpoint: str) -> PeerConnection:
        self.connects += 1
        return await TCP.connect(endpoint)


class LiveWireHandler(RequestHandler):
    fast_channel = False


class LiveWireProvider(ProviderServer):
    handler_class = LiveWireHandler


class DropsSecondRequest:
    """A TCP hop in front of a provider that forwards a connection's first request and its
    answers, then closes the connection when a second request comes on it, unforwarded: a
    provider that let an idle connection go just as the consumer's next request went."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dropped = 0
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aenter__(self) -> DropsSecondRequest:
        self._server = await asyncio.start_server(self._hop, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _hop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def answers() -> None:  # until the provider closes (the live wire's end)
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        async def requests() -> None:
            up_writer.write(await reader.readline())  # the first request, one line
            await up_writer.drain()
            if await reader.readline():  # the next request: not forwarded
                self.dropped += 1

        tasks = [asyncio.create_task(answers()), asyncio.create_task(requests())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()
            writer.close()


@pytest.fixture
def wire() -> CountingTcp:
    """The router's transport (see conftest's `market`): connections counted."""
    return CountingTcp()


async def _open(market, endpoint: str) -> OpenSession:
    router = market["router"]
    (bid,) = [b for b in await router.rank(MODEL) if b.provider == market["provider"].address]
    return await router.open_on(dataclasses.replace(bid, endpoint=endpoint), 600)


async def _text(market, session: OpenSession) -> str:
    payloads = [p async for p in market["router"].stream(session, BODY)]
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in payloads if c.get("choices")
    )


async def _settle() -> None:
    """Let the event loop take in what the sockets received (a peer's close)."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_prompts_to_our_provider_share_one_connection(market) -> None:
    server = await market["server"]()
    assert "keep-alive/1" in server.version.split()
    session = await _open(market, server.endpoint)
    assert session.keep_alive
    wire, router = market["wire"], market["router"]
    before = wire.connects
    texts = [await _text(market, session) for _ in range(3)]
    assert len(set(texts)) == 1 and texts[0]  # the same answer each time
    assert wire.connects - before == 1  # one connection carried the three prompts
    assert len(router.connections) == 1 and server.connections == 1  # idle, kept on both sides
    await router.drain()  # the router lets its idle connections go
    await _settle()
    assert len(router.connections) == 0 and server.connections == 0
    assert await router.close(session)


async def test_an_idle_connection_the_provider_closed_is_replaced(market, monkeypatch) -> None:
    monkeypatch.setattr(provider_transport, "KEEP_ALIVE_IDLE_S", 0.05)
    server = await market["server"]()
    session = await _open(market, server.endpoint)
    wire = market["wire"]
    before = wire.connects
    first = await _text(market, session)
    await _settle()  # the provider's wait is over: it closed the connection, without a word
    assert server.connections == 0
    assert await _text(market, session) == first
    assert wire.connects - before == 2
    assert await market["router"].close(session)


async def test_a_connection_closed_as_the_request_went_is_replaced(market) -> None:
    server = await market["server"]()
    async with DropsSecondRequest(server.endpoint) as hop:
        session = await _open(market, hop.endpoint)
        wire = market["wire"]
        before = wire.connects
        first = await _text(market, session)
        # the kept connection looks open; the hop closes it when the next request comes
        assert await _text(market, session) == first
        assert hop.dropped == 1
        assert wire.connects - before == 2  # the request went again, on a new connection
        assert await market["router"].close(session)


async def test_an_idle_connection_gives_its_slot_to_a_new_one(market) -> None:
    server = await market["server"](max_concurrent=1)
    session = await _open(market, server.endpoint)
    first = await _text(market, session)
    assert server.connections == 1  # kept, idle, in the only slot
    # another request takes the slot: the idle connection is dropped silently
    pong = await peer.ping(server.endpoint, market["router"].signer, market["provider"].address)
    assert pong.version == server.version
    await _settle()
    # our next prompt finds the connection gone and makes a new one: no stray error read
    assert await _text(market, session) == first
    assert await market["router"].close(session)


async def test_the_live_wire_takes_one_connection_per_prompt(market) -> None:
    server = await market["server"](LiveWireProvider)
    assert "keep-alive" not in server.version
    session = await _open(market, server.endpoint)
    assert not session.keep_alive
    wire = market["wire"]
    before = wire.connects
    for _ in range(2):
        assert await _text(market, session)
    assert wire.connects - before == 2
    assert len(market["router"].connections) == 0
    assert await market["router"].close(session)
