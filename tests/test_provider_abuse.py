"""A provider stays available under abuse: a real ProviderServer on a socket, attacked with real
raw sockets from several loopback addresses (127.0.0.2, 127.0.0.3, … are all loopback on
Linux) that each trickle a byte every few seconds and never finish a request (slowloris),
while a real consumer pings it and chats through the real router with its normal timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time

import pytest

from mor_workbench.errors import ConfigurationError
from mor_workbench.market import tables
from mor_workbench.protocol import Decoder, PingReq, PongRes, Request, Response, sign
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import OpenSession, Router

MODEL = "llama-3.3-70b"
TRICKLE_S = 2.0  # the attackers' pause between bytes


@pytest.fixture
async def market(provider_servers, sandbox_info, tmp_path):
    """Provider servers on demand (with `settings`) and what a consumer needs to reach them."""
    chain, provider = provider_servers.chain, provider_servers.provider
    bids = await tables.bids(chain, MODEL)
    return {
        "server": provider_servers.make,
        "chain": chain,
        "provider": provider,
        "consumer": sandbox_info.signer("consumer"),
        "bid": bids[bids["provider"] == provider.address].iloc[0],
        "model_id": provider_servers.model_id,
        "journal": tmp_path / "journal.sqlite3",
    }


async def slow_connection(
    endpoint: str, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from `source` that has sent the start of a request and nothing more."""
    host, port = endpoint.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    writer.write(b'{"id":"')
    await writer.drain()
    return reader, writer


async def error_of(reader: asyncio.StreamReader) -> str:
    """The error message of the provider's reply on this connection (read until it closes)."""
    data = await asyncio.wait_for(reader.read(), 30)
    (reply,) = [Response.from_json(obj, PongRes) for obj in Decoder(1 << 20).feed(data)]
    assert reply.error is not None, reply
    return reply.error.message


def ping_request(market) -> bytes:
    key = market["consumer"].private_key_bytes()
    return Request("1", sign(PingReq(os.urandom(8)), key)).encode()


class Slowloris:
    """`count` raw connections spread over `sources`, each sending one byte every TRICKLE_S
    and never completing its request; one the provider closes is opened again at once."""

    def __init__(self, endpoint: str, sources: list[str], count: int) -> None:
        self.endpoint = endpoint
        self.sources = [sources[i % len(sources)] for i in range(count)]
        self.opened = 0  # connections ever opened
        self.dropped = 0  # connections the provider closed
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    async def __aenter__(self) -> Slowloris:
        self.tasks = [asyncio.create_task(self._attack(source)) for source in self.sources]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping = True  # a cancel that races a read's end can be lost (wait_for, 3.11)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _attack(self, source: str) -> None:
        while not self.stopping:
            try:
                reader, writer = await slow_connection(self.endpoint, source)
            except OSError:
                await asyncio.sleep(TRICKLE_S)
                continue
            self.opened += 1
            try:
                while True:
                    try:  # the pause between bytes, watching for the provider closing on us
                        await asyncio.wait_for(reader.read(65536), TRICKLE_S)
                        break  # an error reply or the close: the provider dropped us
                    except TimeoutError:
                        writer.write(b"a")
                        await writer.drain()
            except OSError:
                pass
            finally:
                self.dropped += 1
                writer.close()


async def test_a_provider_serves_a_ping_and_a_chat_through_a_300_connection_slowloris(
    market,
) -> None:
    server = await market["server"]()  # the default settings
    sources = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 addresses, 30 connections each
    async with Slowloris(server.endpoint, sources, 300) as attack:
        while attack.opened < 300 or server.connections < server.max_concurrent:
            await asyncio.sleep(0.1)  # until every slot is held by the attack

        started = time.monotonic()
        await peer.ping(server.endpoint, market["consumer"], market["provider"].address)
        ping_s = time.monotonic() - started

        started = time.monotonic()
        router = Router(market["chain"], market["consumer"], SessionJournal(market["journal"]))
        session = await _open_session(router, market, server)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        chunks = [c async for c in router.stream(session, body)]
        chat_s = time.monotonic() - started
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text
        assert not any(task.done() for task in attack.tasks)  # the attack went on throughout
        closed = await router.close(session)
        print(
            f"\nduring a 300-connection slowloris: ping {ping_s:.3f} s, approval + open on "
            f"chain + streamed chat {chat_s:.3f} s; attackers dropped {attack.dropped}, "
            f"holding {server.connections} of {server.max_concurrent} slots"
        )
    assert closed  # the provider signed the close receipt too


async def _open_session(router: Router, market, server: ProviderServer) -> OpenSession:
    """The router's own opening (ping, approval, journal, openSession) on provider:balanced's
    bid, at `server`'s endpoint instead of the one the sandbox registered on chain."""
    (bid,) = [b for b in await router.rank(MODEL) if b.provider == market["provider"].address]
    return await router.open_on(dataclasses.replace(bid, endpoint=server.endpoint), 600)


async def test_the_connection_over_the_per_address_cap_is_refused(market) -> None:
    server = await market["server"](max_per_peer=4)
    held = [await slow_connection(server.endpoint, "127.0.0.7") for _ in range(4)]
    reader, writer = await slow_connection(server.endpoint, "127.0.0.7")
    assert "too many connections from 127.0.0.7" in await error_of(reader)
    writer.close()
    # another address is not affected
    await peer.ping(server.endpoint, market["consumer"], market["provider"].address)
    # and a slot given back by the capped address can be used again
    held.pop()[1].close()
    for _ in range(50):
        reader, writer = await slow_connection(server.endpoint, "127.0.0.7")
        writer.write(ping_request(market)[len(b'{"id":"') :])
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        reply = Response.from_json(Decoder(1 << 20).feed(data)[0], PongRes)
        if reply.result is not None:
            break
        await asyncio.sleep(0.1)  # the provider has not seen the close yet
    assert reply.result is not None, reply.error
    for _, held_writer in held:
        held_writer.close()


async def test_a_request_trickled_past_the_first_message_deadline_is_refused(market) -> None:
    """The deadline is for the whole first message, not for each read."""
    server = await market["server"](first_message_timeout=1.0)
    reader, writer = await slow_connection(server.endpoint, "127.0.0.1")

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            while True:
                await asyncio.sleep(0.2)
                writer.write(b"a")
                await writer.drain()

    trickling = asyncio.create_task(trickle())
    try:
        assert "did not arrive complete within 1 s" in await error_of(reader)
    finally:
        trickling.cancel()
        writer.close()


async def test_a_full_provider_drops_its_oldest_incomplete_connection_for_a_new_one(
    market,
) -> None:
    server = await market["server"](max_concurrent=4)
    held = [await slow_connection(server.endpoint, f"127.0.0.{i}") for i in range(2, 7)]
    assert "the provider is full" in await error_of(held[0][0])  # the fifth took its slot
    await peer.ping(server.endpoint, market["consumer"], market["provider"].address)
    assert "the provider is full" in await error_of(held[1][0])  # the ping took the next
    for _, writer in held:
        writer.close()


@pytest.mark.parametrize(
    "limit", [{"max_concurrent": 0}, {"max_per_peer": 0}, {"first_message_timeout": 0.0}]
)
async def test_a_limit_that_would_refuse_everyone_is_refused_at_construction(market, limit) -> None:
    with pytest.raises(ConfigurationError, match="must be at least 1 and first_message_timeout"):
        await market["server"](**limit)
