"""The provider: a MOR-RPC server on TCP that approves sessions and serves prompts from backends.

Wire-compatible with live consumers (one request per connection, answers streamed as signed,
ECIES-encrypted chunks), and stricter than the live provider: a requester's key must belong to
the address it claims, requests must be fresh and unreplayed on our clock, and a prompt must
come from the user of an open, unexpired session on one of our own bids (checked on chain).
Prompts may arrive ECIES-encrypted (advertised in the pong's version).

The chain is the source of truth for sessions: each prompt re-reads its session, capacity counts
the sessions open on chain (plus approvals not yet used), and what the provider remembers per
session is released once the session is closed and paid, so a provider running for days keeps
bounded memory. What the contract checks against block.timestamp (approval and receipt
timestamps) is stamped on the chain's clock; the MOR-RPC envelopes keep the wall clock the live
protocol's freshness checks expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mor_workbench._version import __version__
from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ChainError, ConfigurationError, MorError
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
from mor_workbench.protocol.messages import ModelHealth
from mor_workbench.protocol.signing import recover_public_key
from mor_workbench.provider.backend import BackendError, BackendStream, OpenAIBackend
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.health import HealthProbe

__all__ = ["ProviderServer"]

log = logging.getLogger("mor_workbench.provider")
APPROVAL_TTL_S = 600  # the contract's SIGNATURE_TTL (LibMarket): an approval's and a receipt's life
MAX_CONNECTIONS = 256  # connections handled at once (each holds a socket and a task)
FIRST_MESSAGE_TIMEOUT_S = 10.0  # from connect to a complete request: a 1 MiB prompt at ~1 Mbit/s
MAX_CONNECTIONS_PER_PEER = 32  # one address's share of MAX_CONNECTIONS
STATS_KEPT_AFTER_END_S = 86_400  # how long an ended, unclosed session's measurements are kept
CLAIM_BACKOFF_MAX_S = 600.0
_SESSIONS_PAGE = 100
_NO_USER = "0x" + "0" * 40


def _now_ms() -> int:
    return int(time.time() * 1000)


def _line(exc: BaseException) -> str:
    """An error as one log line: its message on one line, or its type."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass
class _SessionStats:
    """What the provider measured for one session, signed into its close receipt."""

    answers: int = 0
    tps_total: int = 0  # output tokens per second x 1000, summed over answers
    ttft_total_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class _Connection:
    """One accepted connection, from its peer's address, while it holds a slot."""

    peer: str
    requested: bool = False  # its request has arrived complete: it is being answered
    evicted: bool = False  # dropped, still incomplete, to make room for a new connection


@dataclass(frozen=True)
class _Reservation:
    """A slot held for an approval until its session opens or the approval expires."""

    user: str
    bid_id: bytes
    at: float  # time.monotonic() of the approval


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
        max_concurrent: int = MAX_CONNECTIONS,
        first_message_timeout: float = FIRST_MESSAGE_TIMEOUT_S,
        max_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        max_message: int = 1024 * 1024,
        freshness_window_ms: int = 120_000,
        claim_interval: float | None = 30.0,
        claim_backoff_max: float = CLAIM_BACKOFF_MAX_S,
        health_interval: float | None = None,
        health_probe_delay: float = 2.0,
    ) -> None:
        """Connections: at most `max_concurrent` are handled at once (default 256) and at most
        `max_per_peer` from one IP address (default 32; the next is refused with a signed error
        naming the limit); a request must arrive complete within `first_message_timeout` s of
        connecting (default 10 s: the whole request, however slowly its bytes trickle in), and
        is at most `max_message` bytes. When every slot is taken, a new connection takes the
        slot of the oldest one whose request is still incomplete (that one is told why and
        closed), so connections that trickle bytes (slowloris) cannot lock out real consumers;
        when every slot is answering a request, the new connection is refused as busy.

        `claim_interval` (s) is the pause between claim rounds (None: no claimer; then call
        `claim_owed()`, which also releases what is kept about settled sessions); after a failed
        round the pause doubles, up to `claim_backoff_max` (s). `health_interval` (s) is the
        pause between health sweeps of the backends (the first at start), published in the
        pong (None, the default: no sweeps but those `refresh_health()` asks for, and no
        report before the first); `health_probe_delay` (s) spaces the probes of one sweep (see
        `mor_workbench.provider.health`)."""
        if max_concurrent < 1 or max_per_peer < 1 or first_message_timeout <= 0:
            raise ConfigurationError(
                "max_concurrent and max_per_peer must be at least 1 and first_message_timeout "
                f"above 0 s (got {max_concurrent}, {max_per_peer}, {first_message_timeout})"
            )
        self.signer = signer
        self.chain = chain
        self.models = {m.model_id: m for m in models}
        self.host, self.port = host, port
        self.max_concurrent = max_concurrent
        self.first_message_timeout = first_message_timeout
        self.max_per_peer = max_per_peer
        self.max_message = max_message
        self.version = f"mor-workbench/{__version__} {ENCRYPTED_PROMPTS}"
        self._key = signer.private_key_bytes()
        self._pubkey = public_key_of(self._key)
        self._model_slots = {
            m.model_id: asyncio.Semaphore(m.concurrent_slots) for m in models if m.concurrent_slots
        }
        # Per model id: approvals whose session has not been seen on chain yet.
        self._reservations: dict[bytes, list[_Reservation]] = {}
        self._capacity_lock = asyncio.Lock()
        self._last_approval_ms = 0
        self._chain_lead_ms = 0  # the most the chain's clock was seen ahead of ours
        self._replay = ReplayGuard(freshness_window_ms)  # bounded by its window and size
        self._stats: dict[bytes, _SessionStats] = {}  # until the session is closed (or long over)
        self._open: dict[bytes, bytes] = {}  # our sessions open when last read -> model id
        self._bid_models: dict[bytes, bytes] = {}  # our bids' models (a bid never changes them)
        self._sessions_read = 0  # how many of our sessions (getProviderSessions) were read
        self._sync_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(240.0, connect=5.0))
        self._server: asyncio.base_events.Server | None = None
        # The connections holding a slot, oldest first (a dict keeps insertion order).
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._closing: set[asyncio.Task[Any]] = set()  # refused or evicted, being closed
        self.claim_interval = claim_interval
        self.claim_backoff_max = claim_backoff_max
        self._claimer: asyncio.Task[None] | None = None
        # Our sessions not yet paid and settled -> chain time (s) from which to look again.
        self._owed: dict[bytes, int] = {}
        self.health_interval = health_interval
        self.health = HealthProbe(
            chain=chain,
            address=signer.address,
            models=self.models,
            http=self._http,
            interval_s=health_interval or 60.0,
            probe_delay_s=health_probe_delay,
        )

    @property
    def endpoint(self) -> str:
        """host:port as registered on chain."""
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections held now, each in one of the `max_concurrent` slots."""
        return len(self._connections)

    async def start(self) -> ProviderServer:
        """Read our sessions from the chain, then listen (and claim, with a claim interval).

        The read comes first so that no approval waits for a long history (a provider key
        with thousands of sessions); if the chain cannot be read, one line says why and the
        first approval or claim round reads it instead.
        """
        try:
            await self._sync_sessions()
        except MorError as exc:
            log.warning("reading this provider's sessions from the chain failed (%s)", _line(exc))
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=self.max_message
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.claim_interval:
            self._claimer = asyncio.create_task(self._claim_forever(self.claim_interval))
        if self.health_interval:
            self.health.start()
        return self

    async def refresh_health(self) -> tuple[ModelHealth, ...]:
        """Probe every model's backend now; the new report (also in every pong from now).
        Raises `MorError` when the chain cannot be read (the last report stays)."""
        return await self.health.refresh()

    async def stop(self) -> None:
        """Stop accepting, let running answers finish briefly, then close everything."""
        await self.health.stop()
        if self._claimer is not None:
            self._claimer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._claimer
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
        peername = writer.get_extra_info("peername")
        connection = _Connection(str(peername[0]) if peername else "unknown")
        refusal = self._admit(connection.peer)
        if refusal is not None:
            self._closing.add(task)
            try:
                await self._send_error(writer, "", refusal)
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
                await self._send_error(
                    writer,
                    "",
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
        if sum(1 for c in self._connections.values() if c.peer == peer) >= self.max_per_peer:
            return (
                f"too many connections from {peer}: at most {self.max_per_peer} at a time; "
                "wait for an answer before opening more"
            )
        if len(self._connections) >= self.max_concurrent:
            oldest = next((t for t, c in self._connections.items() if not c.requested), None)
            if oldest is None:
                return (
                    f"provider busy: all {self.max_concurrent} connections are being answered; "
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
            while discarded < 8 * self.max_message and time.monotonic() < deadline:
                data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
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
        decoder = Decoder(self.max_message)
        request_id = ""
        try:
            try:
                request = await asyncio.wait_for(
                    self._read_request(reader, decoder), self.first_message_timeout
                )
            except TimeoutError:
                raise RemoteProtocolError(
                    f"the request did not arrive complete within {self.first_message_timeout:g} s"
                    " of connecting; send the whole request at once"
                ) from None
            connection.requested = True
            request_id = request.id
            await self._dispatch(request, writer)
        except ProtocolError as exc:
            await self._send_error(writer, request_id, str(exc))
        except ChainError as exc:
            await self._send_error(writer, request_id, f"chain unavailable: {exc}")

    async def _read_request(self, reader: asyncio.StreamReader, decoder: Decoder) -> Request:
        """The first complete message on the connection, as a request."""
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
            # the report rides outside the signature (see PongRes), None before the first sweep
            pong = sign(PongRes(params.nonce, self.version, models=self.health.report), self._key)
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
        self._bid_models[req.bid_id] = bid["modelId"]
        model = self.models.get(bid["modelId"])
        if model is None:
            raise RemoteProtocolError("this provider does not serve the bid's model")
        await self._reserve(model, req.user, req.bid_id)
        # Milliseconds, as live providers sign (our contract reads them as such for the TTL),
        # on the chain's clock (the contract checks it against block.timestamp), strictly
        # increasing so two approvals never share bytes (one approval, one session).
        self._last_approval_ms = max(await self._contract_time_ms(), self._last_approval_ms + 1)
        approval = encode_approval(
            Approval(req.bid_id, self.chain.deployment.chain_id, req.user, self._last_approval_ms)
        )
        return sign(
            SessionRes(self._pubkey, approval, eth_sign(approval, self._key), req.user, _now_ms()),
            self._key,
        )

    async def _reserve(self, model: ModelConfig, user: str, bid_id: bytes) -> None:
        """Hold a slot for an approved session until it opens or its approval expires.

        Capacity counts the model's sessions open on chain plus approvals not yet used: new
        sessions of ours are read from the chain first, and when that count is full the open
        ones are re-read, so a session closed early frees its slot at once.
        Raises RemoteProtocolError "Provider at capacity" when every slot is taken.
        """
        if not model.concurrent_slots:
            return
        async with self._capacity_lock:
            await self._sync_sessions()
            if self._slots_taken(model.model_id) >= model.concurrent_slots:
                await self._reread_open_sessions(model.model_id)
                if self._slots_taken(model.model_id) >= model.concurrent_slots:
                    raise RemoteProtocolError("Provider at capacity")
            self._reservations.setdefault(model.model_id, []).append(
                _Reservation(user, bid_id, time.monotonic())
            )

    def _slots_taken(self, model_id: bytes) -> int:
        now = time.monotonic()
        live = [r for r in self._reservations.get(model_id, []) if now - r.at < APPROVAL_TTL_S]
        self._reservations[model_id] = live
        return len(live) + sum(1 for m in self._open.values() if m == model_id)

    # ----- sessions on chain -----
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

    async def _bid_model(self, bid_id: bytes) -> bytes | None:
        """The model of `bid_id` if the bid is ours, else None (our bids are cached)."""
        if bid_id not in self._bid_models:
            bid = await self.chain.call("getBid", bid_id)
            if bid["provider"] != self.signer.address:
                return None
            self._bid_models[bid_id] = bid["modelId"]
        return self._bid_models[bid_id]

    def _note(self, session_id: bytes, raw: dict[str, Any], model_id: bytes, now: int) -> None:
        """Keep what getSession said about one of our sessions: an open one takes a slot; a
        closed one is forgotten; an ended one frees its slot but keeps its measurements for
        a late close."""
        if raw["closedAt"] or not raw["isActive"]:
            self._forget(session_id)
        elif raw["endsAt"] <= now:
            self._open.pop(session_id, None)
        else:
            self._open[session_id] = model_id

    def _forget(self, session_id: bytes) -> None:
        self._open.pop(session_id, None)
        self._stats.pop(session_id, None)

    async def _sync_sessions(self) -> None:
        """Read the sessions opened on our bids since the last read (the provider's session
        list on chain, oldest first): each is followed until paid, an open one takes its
        model's slot, and each frees the reservation its approval held."""
        async with self._sync_lock:
            while True:
                ids, total = await self.chain.call(
                    "getProviderSessions", self.signer.address, self._sessions_read, _SESSIONS_PAGE
                )
                if not ids:
                    return
                raws, now = await asyncio.gather(
                    self.chain.read_many([Call("getSession", (i,)) for i in ids]),
                    self.chain.block_timestamp(),
                )
                for session_id, raw in zip(ids, raws, strict=True):
                    if isinstance(raw, Exception):
                        raise raw
                    model_id = await self._bid_model(raw["bidId"])
                    if model_id is None:  # not ours after all (cannot happen on our contracts)
                        continue
                    self._owed.setdefault(session_id, 0)
                    self._note(session_id, raw, model_id, now)
                    self._release_reservation(model_id, raw["user"], raw["bidId"])
                self._sessions_read += len(ids)
                if self._sessions_read >= total:
                    return

    def _release_reservation(self, model_id: bytes, user: str, bid_id: bytes) -> None:
        held = self._reservations.get(model_id, [])
        for index, reservation in enumerate(held):
            if (reservation.user.lower(), reservation.bid_id) == (user.lower(), bid_id):
                del held[index]
                return

    async def _reread_open_sessions(self, model_id: bytes | None = None) -> None:
        """Re-read the sessions we hold open, of one model or all (Multicall3: one round
        trip), so those closed or ended since let go of their slot (and, closed, of their
        measurements)."""
        held = {i: m for i, m in self._open.items() if model_id in (None, m)}
        if not held:
            return
        raws, now = await asyncio.gather(
            self.chain.read_many([Call("getSession", (i,)) for i in held]),
            self.chain.block_timestamp(),
        )
        for (session_id, session_model), raw in zip(held.items(), raws, strict=True):
            if isinstance(raw, Exception):
                raise raw
            self._note(session_id, raw, session_model, now)

    async def _session_model(self, session_id: bytes, sender_pubkey: bytes) -> bytes:
        """The session's model id, if it is open, unexpired, ours, and `sender_pubkey` is its
        user's; else RemoteProtocolError ("unknown session", "Session is closed", ...).

        Read on chain for every prompt (getSession and the latest block: one eth_call and one
        block read, small beside an inference): a session the user closed is refused at once
        ("Session is closed"), where a cache would serve it free until its booked end, and
        expiry is judged on the chain's clock, as the contract judges it.
        """
        raw, now = await asyncio.gather(
            self.chain.call("getSession", session_id), self.chain.block_timestamp()
        )
        if raw["user"] == _NO_USER:
            raise RemoteProtocolError("unknown session")
        model_id = await self._bid_model(raw["bidId"])
        if model_id is None:
            raise RemoteProtocolError("this session belongs to another provider")
        self._note(session_id, raw, model_id, now)
        if raw["closedAt"] or not raw["isActive"]:
            raise RemoteProtocolError("Session is closed")
        if raw["endsAt"] <= now:
            raise RemoteProtocolError("session expired")
        if address_of(sender_pubkey) != raw["user"]:
            raise RemoteProtocolError("the request is not signed by the session's user")
        return model_id

    # ----- session.prompt -----
    async def _prompt(
        self, request_id: str, req: SessionPromptReq, writer: asyncio.StreamWriter
    ) -> None:
        user_key = recover_public_key(req)
        self._replay.check(req.signature, req.timestamp, _now_ms())
        model = self.models.get(await self._session_model(req.session_id, user_key))
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
        if session_id not in self._open and session_id not in self._owed:
            return  # settled while this answer ran: nothing left to sign for it
        record = self._stats.setdefault(session_id, _SessionStats())
        record.answers += 1
        record.tps_total += stats.tps_scaled1000
        record.ttft_total_ms += stats.ttft_ms
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
        if await self._bid_model(raw["bidId"]) is None:
            raise RemoteProtocolError("this session belongs to another provider")
        record = self._stats.get(session_id, _SessionStats())
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

    # ----- payments -----
    async def _claim_forever(self, interval: float) -> None:
        """Claim rounds every `interval` s; after a failed round, one log line with the reason
        and a pause that doubles per failure, up to `claim_backoff_max` s."""
        failures = 0
        while True:
            try:
                await self.claim_owed()
                failures = 0
            except asyncio.CancelledError:
                raise
            except MorError as exc:  # the chain unreachable or refusing: a reason, no traceback
                failures += 1
                log.warning(
                    "claiming provider payments failed (%s); retrying in %g s",
                    _line(exc),
                    self._claim_pause(interval, failures),
                )
            except Exception:  # a bug: keep the traceback, but back off all the same
                failures += 1
                log.exception(
                    "claiming provider payments failed; retrying in %g s",
                    self._claim_pause(interval, failures),
                )
            await asyncio.sleep(self._claim_pause(interval, failures))

    def _claim_pause(self, interval: float, failures: int) -> float:
        if not failures:
            return interval
        return min(interval * 2**failures, max(interval, self.claim_backoff_max))

    async def claim_owed(self) -> int:
        """Find our sessions on chain and claim what has become payable; how many claims paid.

        Payment normally arrives in the user's closeSession; a claim collects sessions the user
        never closed (after their end), the day's part held back by a disputed close (the next
        day), and what the payout cap left unpaid (when the cap's period resets). A session
        paid in full is let go, with what was kept about it, once it is closed (or a day after
        its end, as a user may still close an ended session with a receipt); the sessions
        held open are re-read each round, so one closed early is let go within a round.
        """
        await self._sync_sessions()
        await self._reread_open_sessions()
        now = await self.chain.block_timestamp()
        paid = 0
        for session_id, not_before in list(self._owed.items()):
            if now < not_before:
                continue
            session = await self.chain.call("getSession", session_id)
            bid = await self.chain.call("getBid", session["bidId"])
            self._note(session_id, session, bid["modelId"], now)
            closed, ends = session["closedAt"], session["endsAt"]
            end = closed if closed and closed < ends else ends
            earned = (end - session["openedAt"]) * bid["pricePerSecond"]
            if session["providerWithdrawnAmount"] >= earned:  # fully paid
                if closed or now >= end + STATS_KEPT_AFTER_END_S:
                    del self._owed[session_id]
                    self._forget(session_id)
                else:
                    self._owed[session_id] = end + STATS_KEPT_AFTER_END_S
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
