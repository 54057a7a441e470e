"""The provider's request handling, sans-IO: one MOR-RPC request in, its signed responses out
through a `send` callback — no socket, so any transport (TCP, or the router's in-memory
`MockTransport` in tests) can carry it.

Stricter than the live provider: a requester's key must belong to the address it claims,
requests must be fresh and unreplayed on our clock, and a prompt must come from the user of an
open, unexpired session on one of our own bids (checked on chain for every prompt; for a
session already read open for its sender the backend request overlaps that read, nothing of
its answer sent before the read passes: `RequestHandler._prompt`). Prompts may arrive
ECIES-encrypted (advertised in the pong's version); answers go out as signed, ECIES-encrypted
chunks, or sealed on the fast channel when the prompt offers it (also advertised in the pong:
`mor_workbench.protocol.fastchannel`). An embeddings request comes as the live wire marks it
(`EMBEDDINGS_PROMPT_TYPE`) and goes to the model's embeddings endpoint, its one answer sent
back as one sealed chunk. What the contract checks against block.timestamp (approval and
receipt timestamps) is stamped on the chain's clock; the MOR-RPC envelopes keep the wall
clock the live protocol's freshness checks expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

from mor_workbench._version import __version__
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ChainError
from mor_workbench.protocol import (
    EMBEDDINGS_PROMPT_TYPE,
    ENCRYPTED_PROMPTS,
    Approval,
    Decoder,
    PingReq,
    PongRes,
    ProtocolError,
    Receipt,
    RemoteProtocolError,
    ReplayGuard,
    Request,
    Response,
    RpcError,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
    address_of,
    ecies_encrypt,
    encode_approval,
    encode_receipt,
    eth_sign,
    public_key_of,
    sign,
    sign_error,
    verify,
)
from mor_workbench.protocol.ecies import BoxOpener
from mor_workbench.protocol.fastchannel import FAST_CHANNEL, KEEP_ALIVE, Frames, accept_offer
from mor_workbench.protocol.live_chunks import ChunkSealer
from mor_workbench.protocol.payload_json import compact
from mor_workbench.protocol.signing import recover_public_key
from mor_workbench.provider.backend import (
    BACKEND_FAILURES,
    BackendError,
    BackendHttp,
    BackendStream,
    OpenAIBackend,
)
from mor_workbench.provider.capacity import Capacity, SessionStats
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.health import HealthProbe

__all__ = ["PROMPT_KEYS_KEPT", "RequestHandler", "Send"]

PROMPT_KEYS_KEPT = 1024
"""Prompt ECIES keys kept, by ephemeral key (about 200 bytes each): enough for a busy
provider's sessions at once; a sender's key beyond them costs one ECDH again."""

Send = Callable[[Response | Frames], Awaitable[None]]
"""Delivers one response (or fast-channel frames) to the requester, as `.encode()` gives its
bytes (raises `ConnectionError` when it is gone)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class BackendAnswer:
    """A backend's answer to one prompt, iterated chunk by chunk: its request goes out on the
    first step, which `start` takes ahead (as a task of its own, the chunk or error it brings
    held for the first `__anext__`); `aclose` stops the answer wherever it is, its HTTP stream
    closed so the backend stops working on it."""

    def __init__(
        self,
        chunks: AsyncGenerator[Any, None],
        *,
        model: ModelConfig,
        streaming: bool,
        stats: BackendStream,
    ) -> None:
        self.model = model
        self.streaming = streaming  # a streamed answer ends with "[DONE]"
        self.stats = stats
        self._chunks = chunks
        self._first: asyncio.Future[Any] | None = None
        self._started = False

    def start(self) -> None:
        """Send the request now, without waiting for its first chunk (once: later calls do
        nothing)."""
        if not self._started:
            self._started = True
            self._first = asyncio.ensure_future(anext(self._chunks))

    async def responded(self) -> bool:
        """Send the request (`start`) and wait until the backend took it (its response status
        a success: `BackendStream.responded`) or the answer's first step ended; False when
        that step failed (the failure is raised by the first `__anext__`). Asked before the
        answer is read."""
        self.start()
        first = self._first
        assert first is not None, "responded() is asked before the answer is read"
        taken = asyncio.ensure_future(self.stats.responded.wait())
        try:
            await asyncio.wait([first, taken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            taken.cancel()
        return not (first.done() and not first.cancelled() and first.exception() is not None)

    def __aiter__(self) -> BackendAnswer:
        return self

    async def __anext__(self) -> Any:
        first = self._first
        if first is None:
            return await anext(self._chunks)
        await asyncio.wait([first])  # not cancelled with us: then `aclose` stops it
        self._first = None
        return first.result()

    async def aclose(self) -> None:
        """Stop the answer (nothing happens to one that ended)."""
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
            await asyncio.wait([first])
            if not first.cancelled():
                first.exception()  # retrieved: nobody is left to want it
        await self._chunks.aclose()


class RequestHandler:
    """Answers MOR-RPC requests for `models` as the provider `signer`, checking sessions on
    `chain` through `capacity`; pongs carry `health`'s report."""

    fast_channel: bool = True
    """Advertise the fast channel in the pong and answer offers on it (a subclass may not)."""

    def __init__(
        self,
        *,
        signer: Signer,
        chain: Chain,
        models: Mapping[bytes, ModelConfig],
        capacity: Capacity,
        health: HealthProbe,
        http: BackendHttp,
        max_message: int,
        freshness_window_ms: int,
    ) -> None:
        """`max_message` (bytes): the largest request taken as bytes; `freshness_window_ms`:
        how old a signed request may be (and how long its signature is remembered against
        replay)."""
        self.signer = signer
        self.chain = chain
        self.models = models
        self.capacity = capacity
        self.health = health
        self.max_message = max_message
        self.version = f"mor-workbench/{__version__} {ENCRYPTED_PROMPTS}"
        if self.fast_channel:
            self.version += f" {FAST_CHANNEL} {KEEP_ALIVE}"
        self._http = http
        self._key = signer.signing_key  # built once: every chunk is signed with it
        # opens encrypted prompts; a consumer that sends a session's prompts under one
        # ephemeral key (ours) costs one ECDH a session, not one a prompt
        self._prompt_boxes = BoxOpener(self._key, keep=PROMPT_KEYS_KEPT)
        self.public_key = public_key_of(self._key.secret)
        self._replay = ReplayGuard(freshness_window_ms)  # bounded by its window and size
        self._last_approval_ms = 0
        self._chain_lead_ms = 0  # the most the chain's clock was seen ahead of ours

    async def handle(self, request: Request | bytes, send: Send) -> None:
        """Answer one request (or the bytes of one, at most `max_message`) through `send`: its
        responses, or one signed error saying what was wrong with it (a malformed, stale,
        replayed or forged request, a closed session, the chain unreachable, …). Raises
        `ConnectionError` when `send` does while answering (the requester is gone)."""
        request_id = request.id if isinstance(request, Request) else ""
        try:
            if not isinstance(request, Request):
                request = self._decode(request)
                request_id = request.id
            await self._dispatch(request, send)
        except ProtocolError as exc:
            await self._send_error(send, request_id, str(exc))
        except ChainError as exc:
            await self._send_error(send, request_id, f"chain unavailable: {exc}")

    def keeps_alive(self, request: Request) -> bool:
        """Whether the connection that carried `request` stays open for the consumer's next
        request once it is answered: after a prompt that offered the fast channel, which this
        handler answers on it (`fastchannel.KEEP_ALIVE`)."""
        params = request.params
        return (
            self.fast_channel and isinstance(params, SessionPromptReq) and bool(params.fast_channel)
        )

    def error(self, request_id: str, message: str) -> Response:
        """A signed error answering `request_id` ("" before a request was read)."""
        return Response(request_id, error=sign_error(RpcError(message, 400, _now_ms()), self._key))

    def _decode(self, data: bytes) -> Request:
        objects = Decoder(self.max_message).feed(data)
        if not objects:
            raise RemoteProtocolError("connection closed before a full request")
        return Request.from_json(objects[0])

    async def _send_error(self, send: Send, request_id: str, message: str) -> None:
        with contextlib.suppress(ConnectionError):
            await send(self.error(request_id, message))

    async def _dispatch(self, request: Request, send: Send) -> None:
        params = request.params
        if isinstance(params, PingReq):
            # the report rides outside the signature (see PongRes), None before the first sweep
            pong = sign(
                PongRes(params.nonce, self.version, models=self.health.published()), self._key
            )
            await send(Response(request.id, result=pong))
        elif isinstance(params, SessionReq):
            await send(Response(request.id, result=await self._approve(params)))
        elif isinstance(params, SessionPromptReq):
            await self._prompt(request.id, params, send)
        elif isinstance(params, SessionReportReq):
            await send(Response(request.id, result=await self._report(params)))

    # ----- session.request -----
    async def _approve(self, req: SessionReq) -> SessionRes:
        verify(req, public_key=req.key)
        if address_of(req.key).lower() != req.user.lower():
            raise RemoteProtocolError("the key in the request does not belong to its user")
        self._replay.check(req.signature, req.timestamp, _now_ms())
        bid = await self.chain.call("getBid", req.bid_id)
        if bid["provider"] != self.signer.address or bid["deletedAt"] or not bid["createdAt"]:
            raise RemoteProtocolError("this bid is not an active bid of this provider")
        self.capacity.remember_bid(req.bid_id, bid["modelId"])
        model = self.models.get(bid["modelId"])
        if model is None:
            raise RemoteProtocolError("this provider does not serve the bid's model")
        await self.capacity.reserve(model, req.user, req.bid_id)
        # Milliseconds, as live providers sign (our contract reads them as such for the TTL),
        # on the chain's clock (the contract checks it against block.timestamp), strictly
        # increasing so two approvals never share bytes (one approval, one session).
        self._last_approval_ms = max(await self._contract_time_ms(), self._last_approval_ms + 1)
        approval = encode_approval(
            Approval(req.bid_id, self.chain.deployment.chain_id, req.user, self._last_approval_ms)
        )
        return sign(
            SessionRes(
                self.public_key, approval, eth_sign(approval, self._key), req.user, _now_ms()
            ),
            self._key,
        )

    async def _contract_time_ms(self) -> int:
        """The time (ms) to sign into what the contract checks: the wall clock moved forward by
        the most the chain's clock was seen ahead of it (the pending block's timestamp, which
        anvil sets to its current time, a warp included; else the latest block's).

        The contract refuses an approval or receipt stamped more than SIGNATURE_TTL before
        block.timestamp (SessionFacet: _checkApproval, closeSession) and never one from later,
        so this is accepted by a chain ahead of the wall clock (anvil after evm_increaseTime)
        and by one whose latest block is old (an idle anvil, a lagging node); and it moves on
        in milliseconds with the wall clock, so approvals made while no block is mined do not
        share a timestamp (which would give two approvals one session id).
        """
        block = await self.chain.rpc.request("eth_getBlockByNumber", ["pending", False])
        chain_s = int(block["timestamp"], 16) if block else await self.chain.block_timestamp()
        now_ms = _now_ms()
        # In whole seconds, as block timestamps (and anvil's warps) are.
        self._chain_lead_ms = max(self._chain_lead_ms, (chain_s - now_ms // 1000) * 1000)
        return now_ms + self._chain_lead_ms

    # ----- session.prompt -----
    async def _prompt(self, request_id: str, req: SessionPromptReq, send: Send) -> None:
        """Answer a prompt, nothing of it sent before this prompt's own read of its session on
        chain says it is open, unexpired, ours and the sender's (`Capacity.session_model`,
        issue 9).

        For a session that a read already found open for this sender (`Capacity.known_model`)
        the backend request goes out at once, concurrently with that read (issue 16 §3: the
        read is off the time to first token); what the backend answers is held, neither sealed
        nor sent, until the read passes, and a refusal cancels the request (its HTTP stream
        closed, so the backend stops) and answers as the read alone would. Any other session
        (a first prompt, a stranger's) is read first: no backend work is done for it before.
        """
        user_key = recover_public_key(req)
        self._replay.check(req.signature, req.timestamp, _now_ms())
        known = self.capacity.known_model(req.session_id, user_key)
        model = None if known is None else self.models.get(known)
        if model is None:
            model = await self._session_model(req.session_id, user_key)
            await self._answer(request_id, req, user_key, send, model, session_read=None)
            return
        # the read's model is this one when it passes: a session's bid, and a bid's model,
        # never change
        session_read = asyncio.ensure_future(self._session_model(req.session_id, user_key))
        try:
            await self._answer(request_id, req, user_key, send, model, session_read)
        finally:
            if not session_read.done():
                session_read.cancel()  # the answer ended (failed) before its read did
            elif not session_read.cancelled():
                session_read.exception()  # retrieved: the answer has already said it

    async def _session_model(self, session_id: bytes, user_key: bytes) -> ModelConfig:
        """The session's model, read on chain (`Capacity.session_model`, whose errors it
        raises); RemoteProtocolError when we no longer serve it."""
        model = self.models.get(await self.capacity.session_model(session_id, user_key))
        if model is None:
            raise RemoteProtocolError("this provider no longer serves the session's model")
        return model

    async def _answer(
        self,
        request_id: str,
        req: SessionPromptReq,
        user_key: bytes,
        send: Send,
        model: ModelConfig,
        session_read: asyncio.Future[ModelConfig] | None,
    ) -> None:
        """Answer a verified prompt of a session on `model` on the live wire or the fast
        channel it offered; with `session_read` (the session's read on chain, under way) the
        backend request starts at once and nothing is sent before that read passes."""
        try:
            body = self._prompt_body(req)
        except ProtocolError:
            if session_read is not None:
                await session_read  # the session's refusal first, as when it is read first
            raise
        if session_read is not None and self.capacity.prompt_slots_taken(model.model_id):
            await session_read  # a refusal must not wait for a slot: read first, as for others
        answer = self._backend_answer(model, body)
        try:
            async with self.capacity.prompt_slot(model.model_id):
                if session_read is not None:
                    answer.start()
                    await session_read
                if req.fast_channel and self.fast_channel:
                    await self._prompt_fast(request_id, req, user_key, answer, send)
                    return
                sealer = ChunkSealer(request_id, self._key, user_key)

                async def send_chunk(payload: Any) -> None:
                    await send(sealer.seal(payload, _now_ms()))

                await self._forward(req.session_id, answer, send_chunk, user_key, request_id, send)
        finally:
            await answer.aclose()

    def _prompt_body(self, req: SessionPromptReq) -> dict[str, Any]:
        """The prompt's JSON object, decrypted when it came ECIES-encrypted to our key;
        RemoteProtocolError when it is not valid."""
        text = req.message
        if text.startswith("0x"):
            try:
                text = self._prompt_boxes.open(bytes.fromhex(text[2:])).decode()
            except (ValueError, UnicodeDecodeError):
                raise RemoteProtocolError("the encrypted prompt is not valid") from None
        try:
            body = json.loads(text)
        except ValueError:
            raise RemoteProtocolError("the prompt is not a JSON object") from None
        if not isinstance(body, dict):
            raise RemoteProtocolError("the prompt is not a JSON object")
        return body

    async def _prompt_fast(
        self,
        request_id: str,
        req: SessionPromptReq,
        user_key: bytes,
        answer: BackendAnswer,
        send: Send,
    ) -> None:
        """Answer a verified prompt on the fast channel it offered: the signed accept, then
        sealed chunks, any failure sealed too (the live wire's signed error response), and
        the signed END (`mor_workbench.protocol.fastchannel`).

        The accept waits for the backend to take the request, so that an accepted prompt is
        one the model is answering: a consumer may tell its own client so (`serve` sends its
        HTTP status then) and a refusal by the backend (a 4xx for the request's parameters)
        still comes before any accept, on the live wire, as any refusal of the prompt does."""
        if not await answer.responded():

            async def never(payload: Any) -> None:
                raise AssertionError("a backend answer that failed has no chunk")

            await self._forward(req.session_id, answer, never, user_key, request_id, send)
            return
        public, sender = accept_offer(
            req.fast_channel,
            identity_key=self._key,
            consumer_key=user_key,
            session_id=req.session_id,
            request_id=request_id,
            prompt_signature=req.signature,
        )
        accept = sign(SessionPromptRes("", _now_ms(), fast_channel=public), self._key)
        await send(Response(request_id, result=accept))

        async def send_chunk(payload: Any) -> None:
            await send(sender.data(compact(payload)))

        async def send_failure(response: Response | Frames) -> None:
            await send(sender.failure(response.encode()))

        try:
            await self._forward(
                req.session_id, answer, send_chunk, user_key, request_id, send_failure
            )
        except ProtocolError as exc:
            await send_failure(self.error(request_id, str(exc)))
        await send(sender.end())

    async def _send_backend_error(
        self, exc: BackendError, user_key: bytes, request_id: str, send: Send
    ) -> None:
        """The backend's error JSON, sealed to the user, as a signed MOR-RPC error."""
        box = ecies_encrypt(user_key, json.dumps(exc.body).encode())
        error = sign_error(RpcError("0x" + box.hex(), exc.status, _now_ms()), self._key)
        await send(Response(request_id, error=error))

    @staticmethod
    def _wrong_kind(model: ModelConfig, embeddings: bool) -> BackendError | None:
        """A 400 for a request of the other kind than `model` serves (chat to an embeddings
        endpoint or the reverse): the request is at fault, and no backend is bothered."""
        if embeddings == model.serves_embeddings:
            return None
        served, other = ("chat", "embeddings") if embeddings else ("embeddings", "chat")
        message = f"model {model.model_name!r} serves {served} here: send it a {served} request"
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": f"{other}_not_supported",
            }
        }
        return BackendError(400, body)

    def _backend_answer(self, model: ModelConfig, body: dict[str, Any]) -> BackendAnswer:
        """`model`'s backend's answer to `body`, not yet asked for; an embeddings request
        (marked as the live wire marks it) goes to the embeddings endpoint, its answer one
        chunk."""
        stats = BackendStream()
        embeddings = body.get("type") == EMBEDDINGS_PROMPT_TYPE
        if embeddings:
            body = {k: v for k, v in body.items() if k != "type"}
        chunks = self._backend_chunks(model, body, embeddings, stats)
        return BackendAnswer(chunks, model=model, streaming=bool(body.get("stream")), stats=stats)

    async def _backend_chunks(
        self, model: ModelConfig, body: dict[str, Any], embeddings: bool, stats: BackendStream
    ) -> AsyncGenerator[Any, None]:
        refused = self._wrong_kind(model, embeddings)
        if refused is not None:
            raise refused
        backend = OpenAIBackend(model, self._http)
        if embeddings:
            yield await backend.embeddings(body, stats)
            return
        # closed with this generator, so closing the answer closes the backend's stream
        async with contextlib.aclosing(backend.complete(body, stats)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _forward(
        self,
        session_id: bytes,
        answer: BackendAnswer,
        send_chunk: Callable[[Any], Awaitable[None]],
        user_key: bytes,
        request_id: str,
        send: Send,
    ) -> None:
        """Send the backend's `answer` as sealed chunks (a streamed one closed by "[DONE]"),
        or its failure, and measure it."""
        model = answer.model
        try:
            async for chunk in answer:
                await send_chunk(chunk)
        except BackendError as exc:
            if exc.status >= 500:  # the backend failed (a 4xx is the request's, 429 throttling)
                self.health.observe(model.model_id, ("bad_response", exc.status))
            await self._send_backend_error(exc, user_key, request_id, send)
            return
        except BACKEND_FAILURES as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            self.health.observe(model.model_id, (kind, 0))
            raise RemoteProtocolError(f"the model backend failed: {type(exc).__name__}") from None
        self.health.observe(model.model_id, None)
        if answer.streaming:
            await send_chunk("[DONE]")
        self.capacity.record(session_id, answer.stats)

    # ----- session.report -----
    async def _report(self, req: SessionReportReq) -> SessionReportRes:
        user_key = recover_public_key(req)
        self._replay.check(req.signature, req.timestamp, _now_ms())
        try:
            session_id = bytes.fromhex(req.message.removeprefix("0x"))
        except ValueError:
            raise RemoteProtocolError(
                "the report request's message must be the session id"
            ) from None
        raw = await self.chain.call("getSession", session_id)
        if address_of(user_key) != raw["user"]:
            raise RemoteProtocolError("the request is not signed by the session's user")
        if await self.capacity.bid_model(raw["bidId"]) is None:
            raise RemoteProtocolError("this session belongs to another provider")
        record = self.capacity.stats.get(session_id, SessionStats())
        receipt = encode_receipt(
            Receipt(
                session_id,
                self.chain.deployment.chain_id,
                await self._contract_time_ms() // 1000,  # closeSession checks it (s)
                record.tps_total // max(record.answers, 1),
                record.ttft_total_ms // max(record.answers, 1),
                record.input_tokens,
                record.output_tokens,
            )
        )
        return sign(SessionReportRes(receipt, eth_sign(receipt, self._key), _now_ms()), self._key)
