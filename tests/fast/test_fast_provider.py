"""The real provider without a socket: a `ProviderServer`'s request handler (its real checks on
chain, signatures, ECIES, capacity and measurements, forwarding to a real model backend) put
behind the router's in-memory `MockTransport`, serving the real `Router` a ping, a session, a
streamed prompt and the close receipt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai

from mor_workbench.chain import listings
from mor_workbench.protocol import Response
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.handler import RequestHandler
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.router.transport import MockTransport, PeerHandler
from mor_workbench.sandbox.model_server import ModelServer

MODEL = "llama-3.3-70b"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "seed": 3}
COOPERATIVE = 0  # closeoutType: closed with the provider's receipt


def in_memory(handler: RequestHandler) -> PeerHandler:
    """`handler` as an in-memory peer: each response it sends is yielded as its bytes."""

    async def replies(request: bytes) -> AsyncIterator[bytes]:
        sent: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def send(response: Response) -> None:
            await sent.put(response.encode())

        async def answer() -> None:
            try:
                await handler.handle(request, send)
            finally:
                sent.put_nowait(None)

        answering = asyncio.create_task(answer())
        try:
            while (data := await sent.get()) is not None:
                yield data
            await answering  # a bug in the handler fails the test
        finally:
            answering.cancel()

    return replies


async def test_the_real_provider_serves_the_router_without_a_socket(
    market, chain, routes, make_router
) -> None:
    signer, endpoint = market.providers["first"]  # ranked first: the router opens there
    model_id, _ = await listings.resolve_model(chain, MODEL)
    async with ModelServer([MODEL], profile="instant") as backend:
        config = ModelConfig(model_id, MODEL, backend.base_url + "/chat/completions")
        server = ProviderServer(signer=signer, chain=chain, models=[config], claim_interval=None)
        try:
            routes[endpoint] = in_memory(server.handler)
            transport = MockTransport(routes)

            pong = await peer.ping(endpoint, market.consumer, signer.address, transport=transport)
            assert pong.version == server.version  # signed by the provider (ping verifies it)

            router = make_router()
            session = await router.open(MODEL, 600)
            assert (session.provider, session.endpoint) == (signer.address, endpoint)
            streamed = [
                chunk["choices"][0]["delta"].get("content") or ""
                async for chunk in router.stream(session, {**BODY, "stream": True})
                if chunk != "[DONE]" and chunk["choices"]
            ]
            client = openai.AsyncOpenAI(base_url=backend.base_url, api_key="x")
            direct = await client.chat.completions.create(**BODY)
            assert len(streamed) > 1  # chunk by chunk, as the backend streamed it
            assert "".join(streamed) == direct.choices[0].message.content

            measured = server.capacity.stats[session.session_id]
            assert measured.answers == 1 and measured.output_tokens > 0
            assert await router.close(session)  # with the provider's signed receipt
            closed = await chain.call("getSession", session.session_id)
            assert closed["closedAt"] and closed["closeoutType"] == COOPERATIVE
        finally:
            await server.stop()


async def test_a_burst_of_prompts_on_one_session_reads_it_on_chain_once(
    market, chain, routes, make_router
) -> None:
    """Each prompt is checked against the chain (a closed session is refused at once), but 20
    prompts arriving together share one getSession read instead of 20: the reads of 50
    concurrent streams queued at the chain node and added hundreds of ms to their TTFT."""
    signer, endpoint = market.providers["first"]
    model_id, _ = await listings.resolve_model(chain, MODEL)
    async with ModelServer([MODEL], profile="instant") as backend:
        config = ModelConfig(model_id, MODEL, backend.base_url + "/chat/completions")
        server = ProviderServer(signer=signer, chain=chain, models=[config], claim_interval=None)
        try:
            routes[endpoint] = in_memory(server.handler)
            router = make_router()
            session = await router.open(MODEL, 600)
            reads: list[str] = []
            read_with_time = chain.read_with_time

            async def counted(calls):  # a prompt's read: getSession with the chain's time
                reads.extend(c.fn for c in calls)
                return await read_with_time(calls)

            chain.read_with_time = counted

            async def answer() -> str:
                chunks = [c async for c in router.stream(session, BODY)]
                return chunks[-1]["choices"][0]["message"]["content"]

            answers = await asyncio.gather(*(answer() for _ in range(20)))
            assert len(set(answers)) == 1 and answers[0]  # seed 3: one answer, twenty times
            assert 1 <= reads.count("getSession") < 20
            await router.close(session)
            reads.clear()
            (refused,) = [c async for c in _refusals(router, session)]
            assert "Session is closed" in refused and reads.count("getSession") == 1
        finally:
            chain.read_with_time = read_with_time
            await server.stop()


async def _refusals(router, session) -> AsyncIterator[str]:
    """The provider's refusal of a prompt on `session`, as the consumer reads it."""
    try:
        async for _ in router.stream(session, BODY):
            pass
    except Exception as exc:  # the typed error of the consumer's side
        yield str(exc)
