"""The provider: a MOR-RPC server on TCP that approves sessions and serves prompts from backends.

Wire-compatible with live consumers (one request per connection, answers streamed as signed,
ECIES-encrypted chunks), and stricter than the live provider: a requester's key must belong to
the address it claims, requests must be fresh and unreplayed on our clock, and a prompt must
come from the user of an open, unexpired session on one of our own bids (checked on chain).
Prompts may arrive ECIES-encrypted (advertised in the pong's version).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mor_workbench import __version__
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ChainError
from mor_workbench.protocol import (
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
    ecies_decrypt,
    ecies_encrypt,
    encode_approval,
    encode_receipt,
    eth_sign,
    public_key_of,
    sign,
    sign_error,
    verify,
)
from mor_workbench.protocol.signing import recover_public_key
from mor_workbench.provider.backend import BackendError, BackendStream, OpenAIBackend
from mor_workbench.provider.config import ModelConfig

__all__ = ["ProviderServer"]

log = logging.getLogger("mor_workbench.provider")
APPROVAL_TTL_S = 600


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _SessionStats:
    """What the provider measured for one session, signed into its close receipt."""

    tps: list[int] = field(default_factory=list)
    ttft: list[int] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class _OpenSession:
    user: str
    model_id: bytes
    ends_at: int


class ProviderServer:
    """Serve MOR-RPC for `models` as the provider `signer`, checking sessions on `chain`."""

    def __init__(
        self,
        *,
        signer: Signer,
        chain: Chain,
        models: list[ModelConfig],
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent: int = 256,
        read_timeout: float = 30.0,
        max_message: int = 1024 * 1024,
        freshness_window_ms: int = 120_000,
        claim_interval: float | None = 30.0,
    ) -> None:
        self.signer = signer
        self.chain = chain
        self.models = {m.model_id: m for m in models}
        self.host, self.port = host, port
        self.read_timeout = read_timeout
        self.max_message = max_message
        self.version = f"mor-workbench/{__version__} {ENCRYPTED_PROMPTS}"
        self._key = signer.private_key_bytes()
        self._pubkey = public_key_of(self._key)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._model_slots = {
            m.model_id: asyncio.Semaphore(m.concurrent_slots) for m in models if m.concurrent_slots
        }
        self._reservations: dict[bytes, list[float]] = {}
        self._last_approval_ms = 0
        self._replay = ReplayGuard(freshness_window_ms)
        self._stats: dict[bytes, _SessionStats] = {}
        self._sessions: dict[bytes, _OpenSession] = {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(240.0, connect=5.0))
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.claim_interval = claim_interval
        self._claimer: asyncio.Task[None] | None = None
        self._owed: dict[bytes, int] = {}  # session id -> chain time from which to try a claim
        self._next_block = 0

    @property
    def endpoint(self) -> str:
        """host:port as registered on chain."""
        return f"{self.host}:{self.port}"

    async def start(self) -> ProviderServer:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=self.max_message
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.claim_interval:
            self._claimer = asyncio.create_task(self._claim_forever(self.claim_interval))
        return self

    async def stop(self) -> None:
        """Stop accepting, let running answers finish briefly, then close everything."""
        if self._claimer is not None:
            self._claimer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._claimer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)
            for task in self._connections:
                task.cancel()
        await self._http.aclose()

    async def __aenter__(self) -> ProviderServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- connection handling -----
    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with self._slots:
                await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug must not take the server down; the peer just loses this call
            log.exception("provider connection failed")
        finally:
            self._connections.discard(task)
            await self._finish(reader, writer)

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then discard what the peer still sends (briefly, boundedly) so closing
        does not reset the connection before the peer reads our answer."""
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
            deadline = time.monotonic() + 1.0
            discarded = 0
            while discarded < 8 * self.max_message and time.monotonic() < deadline:
                data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
                if not data:
                    break
                discarded += len(data)
        writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder(self.max_message)
        request_id = ""
        try:
            request = await asyncio.wait_for(self._read_request(reader, decoder), self.read_timeout)
            request_id = request.id
            await self._dispatch(request, writer)
        except TimeoutError:
            await self._send_error(writer, request_id, "request not received in time")
        except ProtocolError as exc:
            await self._send_error(writer, request_id, str(exc))
        except ChainError as exc:
            await self._send_error(writer, request_id, f"chain unavailable: {exc}")

    async def _read_request(self, reader: asyncio.StreamReader, decoder: Decoder) -> Request:
        while True:
            data = await reader.read(65536)
            if not data:
                raise RemoteProtocolError("connection closed before a full request")
            objects = decoder.feed(data)
            if objects:
                return Request.from_json(objects[0])

    async def _send(self, writer: asyncio.StreamWriter, response: Response) -> None:
        writer.write(response.encode())
        await writer.drain()

    async def _send_error(
        self, writer: asyncio.StreamWriter, request_id: str, message: str
    ) -> None:
        error = sign_error(RpcError(message, 400, _now_ms()), self._key)
        with contextlib.suppress(ConnectionError):
            await self._send(writer, Response(request_id, error=error))

    async def _dispatch(self, request: Request, writer: asyncio.StreamWriter) -> None:
        params = request.params
        if isinstance(params, PingReq):
            pong = sign(PongRes(params.nonce, self.version), self._key)
            await self._send(writer, Response(request.id, result=pong))
        elif isinstance(params, SessionReq):
            await self._send(writer, Response(request.id, result=await self._approve(params)))
        elif isinstance(params, SessionPromptReq):
            await self._prompt(request.id, params, writer)
        elif isinstance(params, SessionReportReq):
            await self._send(writer, Response(request.id, result=await self._report(params)))

    # ----- session.request -----
    async def _approve(self, req: SessionReq) -> SessionRes:
        verify(req, public_key=req.key)
        if address_of(req.key).lower() != req.user.lower():
            raise RemoteProtocolError("the key in the request does not belong to its user")
        self._replay.check(req.signature, req.timestamp, _now_ms())
        bid = await self.chain.call("getBid", req.bid_id)
        if bid["provider"] != self.signer.address or bid["deletedAt"] or not bid["createdAt"]:
            raise RemoteProtocolError("this bid is not an active bid of this provider")
        model = self.models.get(bid["modelId"])
        if model is None:
            raise RemoteProtocolError("this provider does not serve the bid's model")
        self._reserve(model)
        # Milliseconds, as live providers sign (our contract reads them as such for the TTL),
        # strictly increasing so two approvals never share bytes (one approval, one session).
        self._last_approval_ms = max(_now_ms(), self._last_approval_ms + 1)
        approval = encode_approval(
            Approval(req.bid_id, self.chain.deployment.chain_id, req.user, self._last_approval_ms)
        )
        return sign(
            SessionRes(self._pubkey, approval, eth_sign(approval, self._key), req.user, _now_ms()),
            self._key,
        )

    def _reserve(self, model: ModelConfig) -> None:
        """Hold a slot for an approved session until it opens or its approval expires."""
        if not model.concurrent_slots:
            return
        now = time.monotonic()
        held = [t for t in self._reservations.get(model.model_id, []) if now - t < APPROVAL_TTL_S]
        open_now = sum(
            1
            for s in self._sessions.values()
            if s.model_id == model.model_id and s.ends_at > time.time()
        )
        if len(held) + open_now >= model.concurrent_slots:
            raise RemoteProtocolError("Provider at capacity")
        self._reservations[model.model_id] = [*held, now]

    # ----- sessions on chain -----
    async def _session(self, session_id: bytes, sender_pubkey: bytes) -> _OpenSession:
        """The session, if it is open, unexpired, ours, and `sender_pubkey` is its user's."""
        cached = self._sessions.get(session_id)
        if cached is None or cached.ends_at <= time.time():
            raw = await self.chain.call("getSession", session_id)
            if raw["user"] == "0x" + "0" * 40:
                raise RemoteProtocolError("unknown session")
            bid = await self.chain.call("getBid", raw["bidId"])
            if bid["provider"] != self.signer.address:
                raise RemoteProtocolError("this session belongs to another provider")
            if not raw["isActive"] or raw["closedAt"]:
                raise RemoteProtocolError("Session is closed")
            cached = _OpenSession(raw["user"], bid["modelId"], raw["endsAt"])
            self._sessions[session_id] = cached
            held = self._reservations.get(bid["modelId"])
            if held:
                held.pop(0)
        if cached.ends_at <= time.time():
            raise RemoteProtocolError("session expired")
        if address_of(sender_pubkey) != cached.user:
            raise RemoteProtocolError("the request is not signed by the session's user")
        return cached

    # ----- session.prompt -----
    async def _prompt(
        self, request_id: str, req: SessionPromptReq, writer: asyncio.StreamWriter
    ) -> None:
        user_key = recover_public_key(req)
        self._replay.check(req.signature, req.timestamp, _now_ms())
        session = await self._session(req.session_id, user_key)
        model = self.models.get(session.model_id)
        if model is None:
            raise RemoteProtocolError("this provider no longer serves the session's model")
        text = req.message
        if text.startswith("0x"):
            try:
                text = ecies_decrypt(self._key, bytes.fromhex(text[2:])).decode()
            except (ValueError, UnicodeDecodeError):
                raise RemoteProtocolError("the encrypted prompt is not valid") from None
        try:
            body = json.loads(text)
        except ValueError:
            raise RemoteProtocolError("the prompt is not a JSON object") from None
        if not isinstance(body, dict):
            raise RemoteProtocolError("the prompt is not a JSON object")
        body["model"] = model.model_name

        async def send_chunk(payload: Any) -> None:
            box = ecies_encrypt(user_key, json.dumps(payload, separators=(",", ":")).encode())
            chunk = sign(SessionPromptRes("0x" + box.hex(), _now_ms()), self._key)
            await self._send(writer, Response(request_id, result=chunk))

        semaphore = self._model_slots.get(model.model_id)
        async with semaphore if semaphore is not None else contextlib.nullcontext():
            await self._forward(
                req.session_id, model, body, send_chunk, user_key, request_id, writer
            )

    async def _forward(
        self,
        session_id: bytes,
        model: ModelConfig,
        body: dict[str, Any],
        send_chunk: Callable[[Any], Awaitable[None]],
        user_key: bytes,
        request_id: str,
        writer: asyncio.StreamWriter,
    ) -> None:
        stats = BackendStream()
        try:
            async for chunk in OpenAIBackend(model, self._http).complete(body, stats):
                await send_chunk(chunk)
        except BackendError as exc:
            box = ecies_encrypt(user_key, json.dumps(exc.body).encode())
            error = sign_error(RpcError("0x" + box.hex(), exc.status, _now_ms()), self._key)
            await self._send(writer, Response(request_id, error=error))
            return
        except httpx.HTTPError as exc:
            raise RemoteProtocolError(f"the model backend failed: {type(exc).__name__}") from None
        if body.get("stream"):
            await send_chunk("[DONE]")
        record = self._stats.setdefault(session_id, _SessionStats())
        record.tps.append(stats.tps_scaled1000)
        record.ttft.append(stats.ttft_ms)
        record.input_tokens += stats.prompt_tokens
        record.output_tokens += stats.completion_tokens

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
        bid = await self.chain.call("getBid", raw["bidId"])
        if bid["provider"] != self.signer.address:
            raise RemoteProtocolError("this session belongs to another provider")
        record = self._stats.get(session_id, _SessionStats())
        receipt = encode_receipt(
            Receipt(
                session_id,
                self.chain.deployment.chain_id,
                int(time.time()),
                sum(record.tps) // len(record.tps) if record.tps else 0,
                sum(record.ttft) // len(record.ttft) if record.ttft else 0,
                record.input_tokens,
                record.output_tokens,
            )
        )
        return sign(SessionReportRes(receipt, eth_sign(receipt, self._key), _now_ms()), self._key)

    # ----- payments -----
    async def _claim_forever(self, interval: float) -> None:
        while True:
            try:
                await self.claim_owed()
            except asyncio.CancelledError:
                raise
            except Exception:  # the chain may be briefly unreachable; try again next round
                log.warning("claiming provider payments failed; will retry", exc_info=True)
            await asyncio.sleep(interval)

    async def claim_owed(self) -> int:
        """Find our sessions on chain and claim what has become payable; how many claims paid.

        Payment normally arrives in the user's closeSession; a claim collects sessions the user
        never closed (after their end), the day's part held back by a disputed close (the next
        day), and what the payout cap left unpaid (when the cap's period resets).
        """
        me = "0x" + "00" * 12 + self.signer.address[2:].lower()
        latest = int(await self.chain.rpc.request("eth_blockNumber"), 16)
        for event in ("SessionOpened", "SessionClosed"):
            topic = "0x" + self.chain.diamond_abi.event_topic(event).hex()
            logs = await self.chain.rpc.request(
                "eth_getLogs",
                [
                    {
                        "address": self.chain.deployment.diamond,
                        "fromBlock": hex(self._next_block),
                        "toBlock": hex(latest),
                        "topics": [topic, None, None, me],
                    }
                ],
            )
            for entry in logs:
                self._owed.setdefault(bytes.fromhex(entry["topics"][2][2:]), 0)
        self._next_block = latest + 1
        now = await self.chain.block_timestamp()
        paid = 0
        for session_id, not_before in list(self._owed.items()):
            if now < not_before:
                continue
            session = await self.chain.call("getSession", session_id)
            bid = await self.chain.call("getBid", session["bidId"])
            closed, ends = session["closedAt"], session["endsAt"]
            end = closed if closed and closed < ends else ends
            earned = (end - session["openedAt"]) * bid["pricePerSecond"]
            if session["providerWithdrawnAmount"] >= earned:
                del self._owed[session_id]  # fully paid
                continue
            if now < end:
                self._owed[session_id] = end
                continue
            before = session["providerWithdrawnAmount"]
            await self.chain.transact(self.signer, "claimForProvider", session_id)
            after = (await self.chain.call("getSession", session_id))["providerWithdrawnAmount"]
            if after > before:
                paid += 1
            if after < earned:  # held for the day or capped: look again tomorrow
                self._owed[session_id] = now - now % 86400 + 86400
        return paid
