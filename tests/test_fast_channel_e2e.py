"""The fast channel on the sandbox: our router and our provider (a real ProviderServer on a
socket, the real contracts, a simulated model server) negotiate it and stream the same answer
the live wire gives; a provider with it turned off keeps the live wire, even when offered."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mor_workbench.errors import RequestRejected
from mor_workbench.provider.handler import RequestHandler
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.router import OpenSession
from mor_workbench.router.transport import TCP, PeerConnection

MODEL = "llama-3.3-70b"
MESSAGES = [{"role": "user", "content": "tell me about the fast channel"}]


class LiveWireHandler(RequestHandler):
    """Our provider with the fast channel turned off."""

    fast_channel = False


class LiveWireProvider(ProviderServer):
    handler_class = LiveWireHandler


class _Recorded:
    def __init__(self, connection: PeerConnection, record: bytearray) -> None:
        self._connection, self._record = connection, record

    async def send(self, data: bytes) -> None:
        await self._connection.send(data)

    async def receive(self) -> bytes:
        data = await self._connection.receive()
        self._record += data
        return data

    def close(self) -> None:
        self._connection.close()


class RecordingTcp:
    """TCP, keeping the bytes each connection received (to see which wire an answer took)."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []

    async def connect(self, endpoint: str) -> PeerConnection:
        record = bytearray()
        self.received.append(record)
        return _Recorded(await TCP.connect(endpoint), record)


@pytest.fixture
def wire() -> RecordingTcp:
    """The router's transport (see conftest's `market`): every connection's bytes kept."""
    return RecordingTcp()


async def _open(market, server: ProviderServer) -> OpenSession:
    """The router's own opening (ping, approval, openSession) on provider:balanced's bid, at
    `server`'s endpoint."""
    router = market["router"]
    (bid,) = [b for b in await router.rank(MODEL) if b.provider == market["provider"].address]
    return await router.open_on(dataclasses.replace(bid, endpoint=server.endpoint), 600)


async def _answer(market, session: OpenSession, **body) -> tuple[list, bytes]:
    """The router's payloads for one request, and the bytes its connection received."""
    request = {"model": MODEL, "messages": MESSAGES, "seed": 7, **body}
    payloads = [p async for p in market["router"].stream(session, request)]
    return payloads, bytes(market["wire"].received[-1])


def _text(payloads: list) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in payloads if c.get("choices")
    )


def _json_lines(wire: bytes) -> int:
    """How many MOR-RPC responses (JSON lines) the bytes hold."""
    return wire.count(b'{"id":')


async def test_our_peers_negotiate_the_fast_channel_and_stream_the_live_wires_answer(
    market,
) -> None:
    server = await market["server"]()
    assert "fast-channel/1" in server.version
    session = await _open(market, server)
    assert session.fast_channel  # the pong advertised it

    fast, fast_wire = await _answer(market, session, stream=True)
    # one JSON line (the signed accept), then sealed frames: no chunk on the live wire
    assert _json_lines(fast_wire) == 1 and b'"fastChannel":"0x' in fast_wire
    assert len(fast) > 3 and _text(fast)

    live, live_wire = await _answer(
        market, dataclasses.replace(session, fast_channel=False), stream=True
    )
    assert b"fastChannel" not in live_wire and _json_lines(live_wire) == len(live) + 1
    assert _text(fast) == _text(live)  # the same answer, [DONE] included on both

    (whole,), whole_wire = await _answer(market, session, stream=False)
    assert _json_lines(whole_wire) == 1
    assert whole["choices"][0]["message"]["content"] == _text(fast)
    assert await market["router"].close(session)  # the provider signs the receipt as ever


async def test_concurrent_prompts_on_one_session_each_get_a_channel_of_their_own(market) -> None:
    server = await market["server"]()
    session = await _open(market, server)
    answers = await asyncio.gather(*(_answer(market, session, stream=True) for _ in range(12)))
    texts = {_text(payloads) for payloads, _ in answers}
    assert len(texts) == 1 and texts != {""}  # the same body and seed: the same answer
    wires = market["wire"].received[-12:]
    assert all(_json_lines(bytes(w)) == 1 for w in wires)  # each on the channel
    accepts = {bytes(w).split(b'"fastChannel":"', 1)[1][:66] for w in wires}
    assert len(accepts) == 12  # a fresh provider key for every answer
    await market["router"].close(session)


async def test_a_backend_refusal_comes_before_any_accept_typed(market) -> None:
    server = await market["server"]()
    session = await _open(market, server)
    accepted: list[bool] = []
    request = {"model": MODEL, "messages": MESSAGES, "stream": True, "temperature": 3}
    with pytest.raises(RequestRejected) as refused:
        async for _ in market["router"].stream(
            session, request, on_accept=lambda: accepted.append(True)
        ):
            pass
    assert refused.value.param == "temperature"
    wire = bytes(market["wire"].received[-1])
    # the provider accepts a prompt once its model took it: a refusal by the model comes
    # first, as the live wire's signed error (one JSON line), and nobody was told "accepted"
    assert _json_lines(wire) == 1 and b"fastChannel" not in wire and b'"error"' in wire
    assert not accepted
    payloads, _ = await _answer(market, session, stream=True)
    assert _text(payloads)
    await market["router"].close(session)


async def test_the_accept_comes_before_the_first_chunk(market) -> None:
    server = await market["server"]()
    session = await _open(market, server)
    events: list[str] = []
    request = {"model": MODEL, "messages": MESSAGES, "stream": True}
    async for _ in market["router"].stream(
        session, request, on_accept=lambda: events.append("accepted")
    ):
        events.append("chunk")
    assert events[0] == "accepted" and events.count("accepted") == 1 and len(events) > 2
    await market["router"].close(session)


async def test_a_provider_with_the_channel_off_keeps_the_live_wire(market) -> None:
    server = await market["server"](LiveWireProvider)
    assert "fast-channel" not in server.version
    session = await _open(market, server)
    assert not session.fast_channel  # not advertised: not offered

    payloads, wire = await _answer(market, session, stream=True)
    assert b"fastChannel" not in wire and _json_lines(wire) == len(payloads) + 1
    assert _text(payloads)

    # offered anyway (a consumer that did not ask the pong): answered, and read, on the live wire
    offered, offered_wire = await _answer(
        market, dataclasses.replace(session, fast_channel=True), stream=True
    )
    assert b"fastChannel" not in offered_wire and _text(offered) == _text(payloads)
    await market["router"].close(session)


async def test_our_router_with_the_channel_off_does_not_offer_it(market) -> None:
    server = await market["server"]()
    market["router"].fast_channel = False
    session = await _open(market, server)
    assert not session.fast_channel
    payloads, wire = await _answer(market, session, stream=True)
    assert b"fastChannel" not in wire and _text(payloads)
    await market["router"].close(session)
