"""Issue 16 §3, provider side: the per-prompt chain read is off the time to first token.

Every prompt is answered only once its own read of the session on chain says the session is
open, unexpired, ours and the sender's (issue 9). For a session a read already found open for
its sender, the provider sends the backend request at once, concurrently with that read, and
holds what the backend answers until the read passes; a refusal cancels the backend request.
A session not seen so (a first prompt, an unknown id, another user's) is read first and costs
no backend work.

A real provider router on a socket, in front of the simulated model server, against the real
contracts of the sandbox chain. Two of the provider's parts are watched, not replaced: its
chain client records when each getSession read returns (and can hold the read until the model
server has the backend request, so the order of the two is decided, not raced), and its model
server records each chat request as it arrives and how each streamed answer ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp import web
from eth_account import Account
from test_provider_sessions import close, open_session

from mor_workbench.chain import listings
from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import ProviderError, SessionExpired
from mor_workbench.market import tables
from mor_workbench.protocol import EMBEDDINGS_PROMPT_TYPE
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.health import MAX_CONSECUTIVE_ERRORS
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.sandbox.model_server import LatencyProfile, ModelServer

MODEL = "llama-3.3-70b"
EMBEDDING = "text-embedding-bge-m3"
SHORT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
LONG = {"model": MODEL, "messages": [{"role": "user", "content": "tell me"}], "stream": True}
EMBED = {"model": EMBEDDING, "input": ["a text to embed"], "type": EMBEDDINGS_PROMPT_TYPE}
# The first token at once, then one every 2 s: a whole answer (a paragraph or more) takes
# minutes, so a streamed answer that ends within the test was cut off by its client.
SLOW = LatencyProfile(ttft_s=0.0, tokens_per_second=0.5, jitter=0.0)
HOLD_S = 5.0  # the longest a held read waits for the backend request (it never comes unchanged)
ENDED_S = 60.0  # the longest to wait for a cut-off stream to end (a whole one takes minutes)
SLOT_WAIT_S = 30.0  # the longest to wait for a refusal (a slot taken frees after minutes)

BACKEND_REQUEST = "backend request"
SESSION_READ = "session read"
FIRST_CHUNK = "first chunk to the consumer"


class WatchedModelServer(ModelServer):
    """The simulated model server, recording each chat and embeddings request in `events` as
    it arrives (and setting `requested`), and how each streamed answer ended in
    `stream_endings` (True: its client closed the connection before it was whole)."""

    def __init__(self, *args: Any, events: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events
        self.requested = asyncio.Event()
        self.stream_endings: asyncio.Queue[bool] = asyncio.Queue()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.events.append(BACKEND_REQUEST)
        self.requested.set()
        return await super()._chat(request)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        self.events.append(BACKEND_REQUEST)
        self.requested.set()
        return await super()._embeddings(request)

    async def _stream(self, request: web.Request, *args: Any) -> web.StreamResponse:
        try:
            return await super()._stream(request, *args)
        finally:
            transport = request.transport
            self.stream_endings.put_nowait(transport is None or transport.is_closing())


class WatchedChain(Chain):
    """The provider's chain client, recording in `events` each read of one session (a
    prompt's: getSession with the chain's time) as it returns; with `hold_until` set, such a
    read first waits (at most HOLD_S) for that event."""

    def __init__(self, rpc: RpcClient, deployment: Any, events: list[str]) -> None:
        super().__init__(rpc, deployment)
        self.events = events
        self.hold_until: asyncio.Event | None = None

    async def read_with_time(self, calls: Sequence[Call]) -> tuple[list[Any], int]:
        one_session = [c.fn for c in calls] == ["getSession"]
        if one_session and self.hold_until is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hold_until.wait(), HOLD_S)
        result = await super().read_with_time(calls)
        if one_session:
            self.events.append(SESSION_READ)
        return result


@contextlib.asynccontextmanager
async def watched_market(
    info: Any, profile: LatencyProfile | str, model: str = MODEL
) -> AsyncIterator[dict]:
    """A provider of the sandbox's serving `model` on a socket of its own, its chain client and
    model server watched; the dict `test_provider_sessions`' helpers take, plus "backend",
    "events" and "provider_chain"."""
    events: list[str] = []
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    provider_chain = WatchedChain(RpcClient(info.rpc_url), info.deployment, events)
    provider = info.signer("provider:balanced")
    model_id, _ = await listings.resolve_model(chain, model)
    endpoint = "/embeddings" if model == EMBEDDING else "/chat/completions"
    try:
        async with WatchedModelServer([model], profile=profile, events=events) as backend:
            config = ModelConfig(model_id, model, backend.base_url + endpoint)
            async with ProviderServer(
                signer=provider, chain=provider_chain, models=[config], claim_interval=None
            ) as server:
                bids = await tables.bids(chain, model)
                yield {
                    "chain": chain,
                    "provider_chain": provider_chain,
                    "server": server,
                    "backend": backend,
                    "events": events,
                    "provider": provider,
                    "consumer": info.signer("consumer"),
                    "bid": bids[bids["provider"] == provider.address].iloc[0],
                }
    finally:
        await chain.rpc.aclose()
        await provider_chain.rpc.aclose()


async def ask(
    m: dict,
    session_id: bytes,
    provider_key: bytes,
    body: dict,
    received: list,
    *,
    signer: Signer | None = None,
    fast_channel: bool = False,
) -> None:
    """Prompt the provider, each chunk that reaches the consumer put in `received` (the first
    one also noted in the events)."""
    async for chunk in peer.prompt(
        m["server"].endpoint,
        signer or m["consumer"],
        session_id,
        provider_key,
        body,
        encrypt=True,
        fast_channel=fast_channel,
    ):
        if not received:
            m["events"].append(FIRST_CHUNK)
        received.append(chunk)


def hold_reads_for_the_backend(m: dict) -> None:
    """From now on the provider's getSession reads wait for the backend request (at most
    HOLD_S): with the overlap it is already on its way, without it the read goes first."""
    m["backend"].requested.clear()
    m["provider_chain"].hold_until = m["backend"].requested
    m["events"].clear()


@pytest.mark.parametrize("fast_channel", [False, True], ids=["live wire", "fast channel"])
async def test_a_session_closed_between_two_prompts_is_refused_and_its_backend_request_cut(
    sandbox_info, fast_channel: bool
) -> None:
    """The second prompt of a session closed on chain after the first is answered "Session is
    closed" with no chunk (on the fast channel: not even its accept), although the provider
    knew the session open and sent the backend request before the read said otherwise; that
    request's stream is cut, not left to run to its end."""
    async with watched_market(sandbox_info, SLOW) as m:
        session_id, provider_key = await open_session(m)
        first: list = []
        await ask(m, session_id, provider_key, SHORT, first, fast_channel=fast_channel)
        assert first  # the session is now known open to the provider
        await close(m, session_id)
        hold_reads_for_the_backend(m)

        received: list = []
        with pytest.raises(SessionExpired, match="Session is closed"):
            await ask(m, session_id, provider_key, LONG, received, fast_channel=fast_channel)

        assert received == []
        assert m["events"] == [BACKEND_REQUEST, SESSION_READ]  # the overlap was taken
        # the only streamed answer (the first prompt's was not streamed) ends, cut off
        assert await asyncio.wait_for(m["backend"].stream_endings.get(), ENDED_S) is True


@pytest.mark.parametrize("fast_channel", [False, True], ids=["live wire", "fast channel"])
async def test_a_known_sessions_backend_request_goes_out_before_its_read_returns(
    sandbox_info, fast_channel: bool
) -> None:
    """The overlap: the provider's read of a session it knows open is held until the model
    server has the prompt's backend request; that request comes (unchanged, the read went
    first and the request after it), and the consumer's first chunk comes only after the
    read, the answer whole."""
    async with watched_market(sandbox_info, "fast") as m:
        session_id, provider_key = await open_session(m)
        try:
            await ask(m, session_id, provider_key, SHORT, [], fast_channel=fast_channel)
            hold_reads_for_the_backend(m)
            received: list = []
            await ask(m, session_id, provider_key, LONG, received, fast_channel=fast_channel)
            assert m["events"] == [BACKEND_REQUEST, SESSION_READ, FIRST_CHUNK]
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
        finally:
            await close(m, session_id)


async def test_a_first_prompt_is_read_on_chain_before_any_backend_request(sandbox_info) -> None:
    """A session's first prompt to this provider (opened after the provider started, so never
    read by it) keeps the serial order: the read, then the backend request."""
    async with watched_market(sandbox_info, "fast") as m:
        session_id, provider_key = await open_session(m)
        m["events"].clear()
        try:
            await ask(m, session_id, provider_key, SHORT, [])
            assert m["events"] == [SESSION_READ, BACKEND_REQUEST, FIRST_CHUNK]
        finally:
            await close(m, session_id)


async def test_a_prompt_for_an_unknown_session_makes_no_backend_request(sandbox_info) -> None:
    async with watched_market(sandbox_info, "fast") as m:
        with pytest.raises(ProviderError, match="unknown session"):
            await ask(m, b"\x5a" * 32, m["server"].public_key, SHORT, [])
        assert m["backend"].request_count == 0


async def test_another_users_prompt_on_a_known_session_makes_no_backend_request(
    sandbox_info,
) -> None:
    """The overlap is for the session's own user only: a stranger's signed prompt on a session
    the provider knows open is refused after the read, without a backend request."""
    async with watched_market(sandbox_info, "fast") as m:
        session_id, provider_key = await open_session(m)
        try:
            await ask(m, session_id, provider_key, SHORT, [])
            stranger = Signer(Account.create().key)
            received: list = []
            with pytest.raises(ProviderError, match="not signed by the session's user"):
                await ask(m, session_id, provider_key, SHORT, received, signer=stranger)
            assert received == []
            assert m["backend"].request_count == 1  # the user's own prompt only
        finally:
            await close(m, session_id)


async def test_a_known_sessions_embeddings_request_goes_out_before_its_read_returns(
    sandbox_info,
) -> None:
    """Embeddings take the same path: the second request of a known session reaches the model
    server before the provider's read of the session returns, its answer after."""
    async with watched_market(sandbox_info, "fast", EMBEDDING) as m:
        session_id, provider_key = await open_session(m)
        try:
            await ask(m, session_id, provider_key, EMBED, [])
            hold_reads_for_the_backend(m)
            received: list = []
            await ask(m, session_id, provider_key, EMBED, received)
            assert m["events"] == [BACKEND_REQUEST, SESSION_READ, FIRST_CHUNK]
            assert [len(row["embedding"]) > 0 for row in received[0]["data"]] == [True]
        finally:
            await close(m, session_id)


async def test_a_closed_sessions_prompt_is_refused_while_every_prompt_slot_is_taken(
    sandbox_info,
) -> None:
    """A prompt of a session closed on chain is refused at once, not after the prompt slot it
    would have used frees up: here the model's only slot is taken by the session's own
    earlier answer, streaming for minutes (the session is approved on a provider without
    slots; a second one with the same key and one slot a model answers its prompts)."""
    async with watched_market(sandbox_info, SLOW) as m:
        session_id, provider_key = await open_session(m)
        model_id, _ = await listings.resolve_model(m["chain"], MODEL)
        config = ModelConfig(
            model_id, MODEL, m["backend"].base_url + "/chat/completions", concurrent_slots=1
        )
        async with ProviderServer(
            signer=m["provider"], chain=m["provider_chain"], models=[config], claim_interval=None
        ) as one_slot:
            served = {**m, "server": one_slot}
            await ask(served, session_id, provider_key, SHORT, [])
            streaming: list = []
            long_answer = asyncio.create_task(
                ask(served, session_id, provider_key, LONG, streaming)
            )
            try:
                while not streaming:  # the answer has begun: it holds the slot
                    await asyncio.sleep(0.05)
                await close(m, session_id)
                received: list = []
                with pytest.raises(SessionExpired, match="Session is closed"):
                    await asyncio.wait_for(
                        ask(served, session_id, provider_key, SHORT, received), SLOT_WAIT_S
                    )
                assert received == []
            finally:
                long_answer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ProviderError):
                    await long_answer


async def test_backend_requests_cut_by_refusals_do_not_mark_the_model_unhealthy(
    sandbox_info,
) -> None:
    """A backend request cancelled because its session was refused is no backend failure:
    after as many of them in a row as flip a model to unhealthy (`MAX_CONSECUTIVE_ERRORS`),
    the provider's health report still marks nothing unhealthy."""
    async with watched_market(sandbox_info, SLOW) as m:
        sessions = [await open_session(m) for _ in range(MAX_CONSECUTIVE_ERRORS)]
        for session_id, provider_key in sessions:
            await ask(m, session_id, provider_key, SHORT, [])
            await close(m, session_id)
        requests = m["backend"].request_count
        for session_id, provider_key in sessions:  # no answer in between
            with pytest.raises(SessionExpired, match="Session is closed"):
                await ask(m, session_id, provider_key, LONG, [])
            assert await asyncio.wait_for(m["backend"].stream_endings.get(), ENDED_S) is True
        assert m["backend"].request_count == requests + len(sessions)  # the overlap was taken
        report = m["server"].health.published() or ()
        assert [e for e in report if e.status == "unhealthy"] == []
