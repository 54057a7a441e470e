"""`connect()` and the workbench: one object that reaches the marketplace of one network.

`AsyncWorkbench` holds the implementation; `Workbench` is its synchronous twin, running the
same coroutines on a background loop so it also works inside Jupyter.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import dataclasses
import logging
import os
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from mor_workbench._home import workbench_home
from mor_workbench._portal import portal
from mor_workbench.backends import Backend, GatewayBackend, MarketplaceBackend
from mor_workbench.batch import MapRun
from mor_workbench.budget import Budget, paying, session_closed
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer, load_signer
from mor_workbench.chain.listings import find_model
from mor_workbench.chain.networks import Network, connect_chain, custom_network, get_network
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import ConfigurationError, ProviderError
from mor_workbench.market import tables
from mor_workbench.market.catalog import (
    ACTIVE_MODELS_URL,
    check_chat_model,
    check_embedding_model,
    fetch_catalog,
    join_catalog,
)
from mor_workbench.market.compare import compare as market_compare
from mor_workbench.market.history import history as market_history
from mor_workbench.market.quote import natural_duration
from mor_workbench.market.quote import quote as market_quote
from mor_workbench.readouts import Balance
from mor_workbench.router import health
from mor_workbench.router.attestation import (
    Attestation,
    check_tee_model,
)
from mor_workbench.router.calls import EMBED_BATCH_INPUTS, CallRecord, Lease, embedding_batches
from mor_workbench.router.gateway import API_KEY_ENV, Gateway
from mor_workbench.router.journal import SessionJournal, journal_path
from mor_workbench.router.router import OpenSession, RankedBid, Router, rank_book
from mor_workbench.router.scoring import explain_score
from mor_workbench.router.strategy import Strategy
from mor_workbench.session import (
    AsyncChatStream,
    AsyncSession,
    ChatStream,
    Session,
    chat_body,
    parse_duration,
    stream_body,
    to_completion,
)

__all__ = ["API_KEY_ENV", "AsyncWorkbench", "Workbench", "aconnect", "connect"]

log = logging.getLogger(__name__)

RPC_URL_ENV = "MOR_RPC_URL"
AUTO_SESSION_S = 600  # sessions chat/stream/complete open last 10 minutes (or to midnight)
BIDS_PING_TIMEOUT_S = 2.0  # wb.bids() waits this long for each provider's pong
DEFAULT_ALLOWANCE_MOR = 100.0  # standing ERC-20 allowance for opens (see AsyncWorkbench)

Purpose = Literal["chat", "embeddings"]
"""What a session is opened for: the model must be a chat model, or an embedding model."""


def _vector(embedding: list[float] | str) -> np.ndarray:
    """One embedding as float32: from floats, or from base64 of little-endian float32 (what
    OpenAI sends for encoding_format="base64")."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def _vectors(payload: dict[str, Any], count: int) -> list[np.ndarray]:
    """The `count` embeddings of an embeddings answer, as float32 vectors in input order;
    `ProviderError` when the answer has another number of them, or they are malformed."""
    try:
        data = sorted(payload.get("data") or (), key=lambda item: item["index"])
        vectors = [_vector(item["embedding"]) for item in data]
    except (KeyError, TypeError, ValueError):
        raise ProviderError("the provider's embeddings answer is malformed") from None
    if len(vectors) != count:
        raise ProviderError(f"the provider returned {len(vectors)} embeddings for {count} texts")
    if len({v.shape for v in vectors}) > 1:
        raise ProviderError("the provider returned embeddings of different sizes")
    return vectors


def _budget_guard(bid: RankedBid, amount: int, duration_s: int) -> Any:
    """The router's spend guard: the active `mor.budget` refuses or counts each open."""
    what = f"a {duration_s} s session on {bid.provider[:10]}… (a stake of {amount / 1e18:.6g} MOR)"
    return paying(amount, what)


def _bid_bytes(bid: str | bytes) -> bytes:
    if isinstance(bid, bytes) and len(bid) == 32:
        return bid
    if isinstance(bid, str) and bid.startswith("0x") and len(bid) == 66:
        try:
            return bytes.fromhex(bid[2:])
        except ValueError:
            pass
    raise ConfigurationError(f"bid {bid!r} is not a bid id: pass the 0x… id from wb.bids(model)")


class AsyncWorkbench:
    """The marketplace of one network, seen from one account (or read-only without one).

    Options: `strategy` (provider choice, see `Strategy`; default weighted among the top 3,
    5-minute cooldown after a failure), `require_encrypted_prompts` (refuse providers that
    cannot decrypt prompts), `timeout` (seconds to wait for a provider's first reply and
    between chunks before failing over), `deadline` (seconds a provider may take for one whole
    answer before the call fails over; default 20 x `timeout`), `max_failovers` per call,
    `allowance` (MOR the
    marketplace contract may draw from this account without a fresh ERC-20 approve; topped up
    to this when an open needs more, so most opens are one transaction; default 100 MOR,
    never unlimited).
    """

    def __init__(
        self,
        network: str,
        chain: Chain | None,
        account: Signer | None,
        *,
        backend: Backend | None = None,
        strategy: Strategy | str | dict | None = None,
        require_encrypted_prompts: bool = False,
        timeout: float = 60.0,
        max_failovers: int = 2,
        deadline: float | None = None,
        allowance: float = DEFAULT_ALLOWANCE_MOR,
    ) -> None:
        if not isinstance(allowance, int | float) or isinstance(allowance, bool) or allowance < 0:
            raise ConfigurationError(
                f"allowance={allowance!r} is not an amount of MOR: pass e.g. allowance=100"
            )
        self.network = network
        self.allowance_wei = int(allowance * 10**18)
        self._chain = chain
        self.account = account
        self.strategy = Strategy.of(strategy)
        self.require_encrypted_prompts = require_encrypted_prompts
        self.timeout = timeout
        self.max_failovers = max_failovers
        self.deadline = deadline
        # where calls go: the marketplace through our own sessions unless told otherwise
        # (connect("gateway") passes a GatewayBackend)
        self.backend: Backend = backend or MarketplaceBackend(
            make_router=self._make_router,
            session_for=self._session_for,
            models=self.models,
            describe=self._describe_chain,
        )
        self._sessions: dict[str, AsyncSession] = {}  # sessions chat/stream reuse, by model
        self._opening: dict[str, asyncio.Lock] = {}
        self._session_listeners: list[Callable[[str, str], None]] = []
        self._closed = False

    @property
    def chain(self) -> Chain:
        """The chain this workbench reads (gateway mode has one only with an RPC URL)."""
        if self._chain is None:
            raise ConfigurationError(
                "gateway mode reads market data from Base: connect with rpc_url='https://…' "
                f"or set {RPC_URL_ENV}"
            )
        return self._chain

    @property
    def router(self) -> Router:
        """The router for this account (sessions are journaled per chain, deployment and
        account); `ConfigurationError` in gateway mode or without a key."""
        return self.backend.router

    def _make_router(self) -> Router:
        if self.account is None:
            raise ConfigurationError(
                "a read-only workbench cannot open sessions: connect with key=… or MOR_PRIVATE_KEY"
            )
        deployment = self.chain.deployment
        path = journal_path(
            workbench_home() / "journal",
            deployment.chain_id,
            deployment.diamond,
            self.account.address,
        )
        router = Router(
            self.chain,
            self.account,
            SessionJournal(path),
            strategy=self.strategy,
            require_encrypted_prompts=self.require_encrypted_prompts,
            standing_allowance=self.allowance_wei,
            on_change=self._sessions_changed,
        )
        router.spend_guard = _budget_guard
        return router

    def _describe_chain(self) -> str:
        who = self.account.address if self.account else "read-only"
        return f"{self.network} chain={self.chain.deployment.chain_id} {who}"

    def on_sessions_changed(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """Call `callback(event, session_id)` whenever this workbench opens or closes a session
        (event "opened" or "closed", the id as 0x hex), whichever surface asked: chat, a
        Session, `%%mor`, a widget, failover, renewal or housekeeping. It runs on the
        workbench's event loop, so it must return quickly (schedule work, do not block);
        exceptions are logged. Returns a function that unsubscribes it."""
        self._session_listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._session_listeners.remove(callback)

        return unsubscribe

    def _sessions_changed(self, event: str, session: OpenSession) -> None:
        if event == "closed":
            session_closed(session.session_id)
        session_id = "0x" + session.session_id.hex()
        for listener in list(self._session_listeners):
            try:
                listener(event, session_id)
            except Exception:
                log.exception("on_sessions_changed callback %r failed", listener)

    async def recover(self) -> dict[str, int]:
        """Settle what an earlier process of this account left (run by connect): sessions
        still open are closed and released on-hold stakes withdrawn. Failures only warn."""
        return await self.backend.recover()

    async def open_session(
        self,
        model: str,
        *,
        duration: str | int = "10m",
        bid: str | bytes | None = None,
        direct_payment: bool = False,
    ) -> AsyncSession:
        """Open a session for `model` with the best provider that accepts (or on `bid`)."""
        return await self._open(model, parse_duration(duration), bid, direct_payment, renew=False)

    async def _open(
        self,
        model: str,
        duration_s: int,
        bid: str | bytes | None,
        direct: bool,
        *,
        renew: bool,
        purpose: Purpose = "chat",
    ) -> AsyncSession:
        if self._closed:
            raise ConfigurationError("this workbench is closed: connect again")
        bid_id = _bid_bytes(bid) if bid is not None else None
        router = self.router
        await self._check_model(model, purpose)
        opened = await router.open(model, duration_s, direct_payment=direct, bid=bid_id)
        lease = Lease(model, duration_s, direct, opened, renew, self.max_failovers)
        return AsyncSession(self.router, lease, timeout=self.timeout, deadline=self.deadline)

    async def _check_model(self, model: str, purpose: Purpose) -> None:
        """Refuse, before any transaction, a model that cannot serve `purpose` (for chat an
        embedding, speech-to-text or text-to-speech model: `catalog.check_chat_model`; for
        embeddings any but an embedding model: `catalog.check_embedding_model`) or, under a
        tee-only strategy, a model not tagged `tee`, with a `ConfigurationError`."""
        _, found = await find_model(self.chain, model)
        check = check_embedding_model if purpose == "embeddings" else check_chat_model
        check(found["name"], found["tags"])
        if self.strategy.tee:
            check_tee_model(found["name"], found["tags"])

    def attestation(self, session: AsyncSession | Session | str) -> Attestation:
        """What is known about the TEE status of a session this workbench opened (the session or
        its id): `tee` (its model is tagged tee), `attested` (its provider's TDX quote verified,
        is bound to its attestation endpoint's certificate and its RTMR3 matches a golden value;
        checked at open and before each prompt, see `router.attestation`), `status` (why, in
        one line) and the evidence read. Reported while the session is open (`Router.attestation`):
        raises `ConfigurationError` for a closed session and for one this workbench did not
        open."""
        session_id = session if isinstance(session, str) else session.id
        try:
            found = bytes.fromhex(session_id.removeprefix("0x"))
        except ValueError:
            raise ConfigurationError(
                f"session {session_id} was not opened by this workbench: "
                "pass a session from open_session() or wb.sessions()"
            ) from None
        return self.router.attestation(found)

    async def _session_for(self, model: str, purpose: Purpose = "chat") -> AsyncSession:
        """This workbench's session for `model`, opened on first use (once, however many
        calls arrive together) and renewed when it ends; the model must serve `purpose` (a
        model serves one, so one session per model serves every call)."""
        async with self._opening.setdefault(model, asyncio.Lock()):
            session = self._sessions.get(model)
            if session is None or session.closed:
                session = await self._open(
                    model, await self._auto_duration(), None, False, renew=True, purpose=purpose
                )
                self._sessions[model] = session
            return session

    async def _auto_duration(self) -> int:
        """The length (s) of a session opened without a user duration: AUTO_SESSION_S, or up
        to the next UTC midnight when that comes first (`market.quote.natural_duration`)."""
        now = await self.chain.block_timestamp()
        shortest = await self.chain.call("MIN_SESSION_DURATION")
        return natural_duration(now, AUTO_SESSION_S, shortest)

    async def quote(
        self,
        model: str,
        *,
        duration: str | int | None = None,
        tokens: int | None = None,
        direct_payment: bool = False,
    ) -> pd.DataFrame:
        """What a session for `model` would cost on each of its bids, before any money moves:
        a DataFrame, one row per bid, eligible bids first. `duration` ("10m", seconds) or
        `tokens` (completion tokens, sized at each provider's measured speed); with neither,
        the length chat/stream/complete would open. Columns (MOR, exact wei beside): `stake`
        (what an open moves from the wallet, to the wei), `returned_at_close`,
        `held_at_close` and `held_until` (a natural close, under the contract's day-lock),
        `session_cost`, `mor_per_1k_tokens` at the measured `tps`, `health`, and `excluded`
        with `why` (price cap, deny or allow list, unhealthy, not a chat model, not tee under
        require_tee). See `market.quote.quote`; `ConfigurationError` for a duration outside
        the contract's limits."""
        duration_s = None if duration is None else parse_duration(duration)
        bids, stats = await asyncio.gather(self.bids(model), self.stats())
        return await market_quote(
            self.chain,
            bids,
            stats,
            self.strategy,
            duration_s=duration_s,
            tokens=tokens,
            default_duration_s=AUTO_SESSION_S,
            direct_payment=direct_payment,
        )

    async def payloads(
        self, body: dict[str, Any], record: CallRecord | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The raw OpenAI chunks (when body["stream"]) or the completion for an OpenAI request
        body; body["model"] picks the model, sessions are automatic."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError("the request body needs a model, e.g. model='llama-3.3-70b'")
        async for payload in self.backend.payloads(body, record or CallRecord(model)):
            yield payload

    async def model_cards(self) -> list[dict[str, Any]]:
        """The models this workbench serves, as OpenAI model objects (`/v1/models`): the
        marketplace's active models by name, or the gateway's own list."""
        return await self.backend.model_cards()

    def stream(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        model: str,
        system: str | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """Text deltas as they arrive; opens (or reuses) this workbench's session for `model`.
        The stream's `usage` and `info` say what the call cost once it is done."""
        body = stream_body(model, prompt, system, params)
        record = CallRecord(model)
        return AsyncChatStream(self.payloads(body, record), record)

    async def chat(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        model: str,
        system: str | None = None,
        **params: Any,
    ) -> str:
        """The answer as a string; opens (or reuses) this workbench's session for `model`."""
        return "".join([d async for d in self.stream(prompt, model=model, system=system, **params)])

    async def complete(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> ChatCompletion:
        """An OpenAI `ChatCompletion` (parameters such as tools, response_format, seed, stop,
        max_tokens pass through untouched); how the call went is under `.morpheus`."""
        if params.get("stream"):
            raise ConfigurationError("complete() returns one completion: use stream() to stream")
        record = CallRecord(model)
        payloads = [
            p async for p in self.payloads(chat_body(model, messages, None, params), record)
        ]
        return to_completion(payloads[-1], record)

    async def embedding_payload(
        self, body: dict[str, Any], record: CallRecord | None = None
    ) -> dict[str, Any]:
        """The raw OpenAI `CreateEmbeddingResponse` JSON for an embeddings request body (as
        the caller wrote it: `input`, `encoding_format`, `dimensions` pass through);
        body["model"] picks the model, sessions are automatic. One request: see `embed` for
        many texts. Raises `ConfigurationError` (before any transaction) for a model that
        does not embed, `RequestTooLarge` for a body over a provider's message limit."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(
                "the request body needs a model, e.g. model='text-embedding-bge-m3'"
            )
        return await self.backend.embeddings(body, record or CallRecord(model))

    async def embeddings(
        self, *, input: str | list[str], model: str, **params: Any
    ) -> CreateEmbeddingResponse:
        """An OpenAI `CreateEmbeddingResponse` for `input` (one request, as the openai client's
        `embeddings.create`; parameters such as `dimensions` pass through), its vectors as
        floats even when `encoding_format="base64"` carried them; how the call went is under
        `.morpheus`. Errors as `embedding_payload`."""
        record = CallRecord(model)
        payload = await self.embedding_payload({"model": model, "input": input, **params}, record)
        vectors = _vectors(payload, 1 if isinstance(input, str) else len(input))
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        return CreateEmbeddingResponse.model_validate(
            {**payload, "data": data, "morpheus": record.to_dict()}
        )

    async def embed(
        self,
        texts: str | list[str],
        *,
        model: str,
        batch_size: int = EMBED_BATCH_INPUTS,
        **params: Any,
    ) -> np.ndarray:
        """The embeddings of `texts` (one string or a list), a float32 array of shape
        (len(texts), dim) (one row per text, in order; (0, 0) for no texts, with no session
        opened). Texts are sent in requests of at most `batch_size` texts, each under a
        provider's message limit (`PEER_REQUEST_LIMIT`, 1 MiB as sent encrypted), one after
        another through this workbench's session for `model` (failing over as chat does);
        vectors travel as base64. `params` (e.g. `dimensions`) pass through.

        Raises, before any transaction: `ConfigurationError` for a model that does not embed
        (type EMBEDDING in `wb.models()`), an empty text (OpenAI-compatible servers refuse
        them), a bad `batch_size`, or `model`/`input`/`encoding_format` among `params`;
        `RequestTooLarge` for one text too long for any request."""
        items = [texts] if isinstance(texts, str) else texts
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise ConfigurationError("texts must be a string or a list of strings")
        for i, text in enumerate(items):
            if not text:
                raise ConfigurationError(
                    f"texts[{i}] is empty: embedding servers refuse empty inputs; drop it"
                )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size!r} must be a whole number >= 1")
        for reserved in ("model", "input", "encoding_format"):
            if reserved in params:
                raise ConfigurationError(
                    f"embed() sets {reserved!r} itself: pass texts and model as arguments"
                )
        if not items:
            return np.empty((0, 0), dtype=np.float32)
        body = {"model": model, **params, "encoding_format": "base64"}
        rows: list[np.ndarray] = []
        for batch in embedding_batches(items, body, max_inputs=batch_size):
            payload = await self.embedding_payload({**body, "input": batch})
            rows.extend(_vectors(payload, len(batch)))
        if len({row.shape for row in rows}) > 1:
            raise ProviderError("the providers returned embeddings of different sizes")
        return np.vstack(rows)

    async def map(
        self,
        prompts: Sequence[str] | pd.Series | pd.DataFrame,
        *,
        model: str,
        template: str | None = None,
        concurrency: int = 8,
        checkpoint: str | os.PathLike[str] | None = None,
        progress: bool = True,
        system: str | None = None,
        budget: Budget | None = None,
        **params: Any,
    ) -> pd.DataFrame:
        """Answer one prompt per row, `concurrency` sessions in parallel; see `batch.MapRun`.

        `prompts`: a list or a pandas Series of strings, or a DataFrame with `template`
        ("Summarise {text} for {audience}", fields naming columns). OpenAI `params`
        (max_tokens, temperature, …) and `system` apply to every row. The first sessions go to
        different providers; a provider that fails a row is failed over, and every session is
        closed when the run ends, fails or is cancelled (Ctrl-C). A progress bar (tqdm; a
        widget in notebooks) shows the MOR spent so far; `progress=False` hides it.
        `checkpoint="file.jsonl"` appends each answered row (fsync'd) and, on a later run,
        skips the rows already there (same index label and prompt): they are not paid twice.

        Returns a DataFrame with the input's index: `answer`, `provider`, `tokens` (completion
        tokens), `cost_mor` (the session time the row used at the bid's price, in MOR),
        `failovers` and `error` (None when answered; a failed row is not checkpointed, so a
        resumed run asks it again). Sessions last the expected run time (`batch.session_duration`:
        from the providers' speed on chain, within the contract's minimum and maximum) and
        renew if it runs over. Raises, before any money moves, `ConfigurationError` for bad
        input, `NoProviderAvailable` when no bid passes the strategy and `InsufficientFunds`
        when the account cannot stake `concurrency` sessions. With `budget` (a `mor.budget(...)`)
        the run counts in it as if made inside `with budget:`: an open that would cross its
        caps raises `BudgetExceeded` before paying, and rows past a cap are not asked."""
        if self._closed:
            raise ConfigurationError("this workbench is closed: connect again")
        run = MapRun(
            self.router,
            model,
            prompts,
            template=template,
            concurrency=concurrency,
            checkpoint=checkpoint,
            progress=progress,
            system=system,
            timeout=self.timeout,
            deadline=self.deadline,
            max_failovers=self.max_failovers,
            params=params,
        )
        await self._check_model(model, "chat")
        if budget is None:
            return await run.run()
        async with budget:  # every open and row of the run counts in it
            return await run.run()

    async def balance(self, user: str | None = None) -> Balance:
        """ETH, MOR, MOR staked in open sessions, MOR on hold (available now / later) and the
        MOR the marketplace contract may still draw without an approve (`mor_allowance`): a
        dict of exact floats (ETH and MOR, not wei) that displays rounded with units."""
        who = user or self.address
        if who is None:
            raise ConfigurationError("a read-only workbench has no account: pass user='0x…'")
        token, diamond = self.chain.deployment.token, self.chain.deployment.diamond
        eth, mor, (available, hold), allowance, sessions = await asyncio.gather(
            self.chain.eth_balance(who),
            self.chain.call("balanceOf", who, to=token),
            self.chain.call("getUserStakesOnHold", who, 255),
            self.chain.call("allowance", who, diamond, to=token),
            tables.sessions(self.chain, who),
        )
        staked = int(sum(sessions.loc[sessions["is_active"], "stake_wei"])) if len(sessions) else 0
        return Balance(
            {
                "eth": eth / 1e18,
                "mor": mor / 1e18,
                "mor_staked": staked / 1e18,
                "mor_on_hold_available": available / 1e18,
                "mor_on_hold": hold / 1e18,
                "mor_allowance": allowance / 1e18,
            }
        )

    async def close_all(self) -> int:
        """Close every open session this account's journal holds (from any process)."""
        self._sessions.clear()
        return await self.router.close_all()

    async def closable(self) -> list[str]:
        """Ids (0x hex) of the sessions this account can close from here: those this workbench
        opened and those its journal holds open (an earlier or another process's); [] for a
        read-only or gateway workbench."""
        return self.backend.closable()

    async def close_session(self, session_id: str) -> bool:
        """Close one session by its id (0x hex) with the provider's receipt; True when the
        provider signed it, False when it had to be a dispute. `ConfigurationError` when this
        account's workbench here cannot close it (not opened or journaled by it)."""
        found = self.router.closable().get(bytes.fromhex(session_id.removeprefix("0x")))
        if found is None:
            raise ConfigurationError(
                f"session {session_id[:10]}… was not opened by this account's workbench here, "
                "so its provider's receipt cannot be asked for"
            )
        return await self.router.close(found)

    async def withdraw(self) -> float:
        """Withdraw the on-hold stakes whose timelock has passed; how much, in MOR."""
        return await self.router.withdraw_released() / 1e18

    async def chain_time(self) -> int:
        """The chain's clock: the latest block's timestamp (Unix seconds). Session ends and
        on-hold releases follow it, not the wall clock (a node may lag, anvil may warp)."""
        return await self.chain.block_timestamp()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend.describe()}>"

    @property
    def address(self) -> str | None:
        return self.account.address if self.account else None

    async def models(self, *, catalog: bool | str = False) -> pd.DataFrame:
        """Active models on chain, with their `type` (LLM, EMBEDDING, STT, TTS, UNKNOWN).

        `catalog=True` keeps only the models of the curated live feed (models with a bid and
        a healthy provider, as hosted clients list them; `catalog.ACTIVE_MODELS_URL`) and adds
        its `catalog_type` and `catalog_updated_at`; `catalog="https://…"` reads another feed
        of the same shape. When the feed cannot be read (5 s timeout) a warning says so and
        every chain model is shown, as the live SDK falls back to the chain."""
        frame = await tables.models(self.chain)
        if catalog is False:
            return frame
        url = ACTIVE_MODELS_URL if catalog is True else catalog
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"catalog={catalog!r} is neither True nor a feed URL: pass catalog=True or "
                "catalog='https://…/active_models.json'"
            )
        return join_catalog(frame, await fetch_catalog(url))

    async def bids(self, model: str | None = None) -> pd.DataFrame:
        """Active bids of `model` (name or id), or of every model, cheapest first, with each
        bid's score (the reference scorer), its parts (`score_tps`, … each in [0, 1]), `why`:
        the parts that stand out and the price, in words (`explain_score`), and `health`: what
        the provider reports about the bid's model in its pong (one ping per provider,
        concurrently, at most BIDS_PING_TIMEOUT_S s each): "healthy", "degraded
        (rate_limited, HTTP 429)", "unhealthy (…)", "no_model_configured"…, "not reported" (a
        provider before proxy-router v7.4), or "unknown" when it does not answer."""
        book = await tables.bid_book(self.chain, model)  # every bid read once
        frame = tables.bids_frame(book)
        if frame.empty:
            return frame
        by_id = {"0x" + b.bid_id.hex(): b for b in rank_book(book)}
        for part in ("score", "raw", "tps", "ttft", "duration", "success", "stake"):
            column = "score" if part == "score" else f"score_{part}"
            frame[column] = [getattr(by_id[i].score, part) for i in frame["id"]]
        pinger = self.account or Signer(os.urandom(32))  # a ping's key needs no funds
        reports = await health.check_all(list(by_id.values()), pinger, BIDS_PING_TIMEOUT_S)
        frame["health"] = [
            reports[by_id[i].provider.lower()].describe(by_id[i].model_id) for i in frame["id"]
        ]
        prices = frame.groupby("model_id")["price_per_second_wei"]
        cheapest, dearest = prices.transform("min"), prices.transform("max")
        frame["why"] = [
            explain_score(
                by_id[bid].score,
                "cheapest"
                if low != high and price == low
                else "dearest"
                if low != high and price == high
                else None,
            )
            for bid, price, low, high in zip(
                frame["id"], frame["price_per_second_wei"], cheapest, dearest, strict=True
            )
        ]
        # what a person reads first: which bid, its price, its score and why
        first = ["model", "provider_short", "id_short", "price_per_second", "score", "why"]
        return frame[first + [c for c in frame.columns if c not in first]]

    async def providers(self) -> pd.DataFrame:
        """Active providers."""
        return await tables.providers(self.chain)

    async def sessions(self, user: str | None = None) -> pd.DataFrame:
        """Sessions of `user` (default: this workbench's account)."""
        who = user or self.address
        if who is None:
            raise ConfigurationError("a read-only workbench has no account: pass user='0x…'")
        return await tables.sessions(self.chain, who)

    async def stats(self) -> pd.DataFrame:
        """Provider-model rating stats kept on chain."""
        return await tables.stats(self.chain)

    async def history(self, days: float = 7.0, *, progress: bool = True) -> pd.DataFrame:
        """Sessions opened on the market in the last `days` days, from chain events (with
        provider, model, price, booked and used seconds); a progress bar for long scans."""
        return await market_history(self.chain, days, progress=progress)

    async def compare(
        self,
        prompt: str | list[dict[str, Any]],
        model: str,
        *,
        providers: list[str] | None = None,
        runs: int = 3,
        **params: Any,
    ) -> pd.DataFrame:
        """Run `prompt` `runs` times on each provider of `model` (a session each, side by
        side): TTFT, inter-token and end-to-end latency percentiles, tokens/s, cost per 1K
        tokens and the answer, one row per provider, fastest first. An embedding model is
        measured on embeddings of `prompt` (a text or a list of texts): end-to-end latency,
        input tokens/s and cost per 1M tokens (`market.compare`)."""
        return await market_compare(
            self.router, prompt, model, providers=providers, runs=runs, **params
        )

    async def close(self) -> None:
        """Close the sessions this workbench opened, then detach (a sandbox keeps running)."""
        if self._closed:
            return
        self._closed = True
        self._sessions.clear()
        await self.backend.aclose()
        if self._chain is not None:
            await self._chain.rpc.aclose()

    async def __aenter__(self) -> AsyncWorkbench:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Workbench:
    """Synchronous twin of `AsyncWorkbench`: same methods, called without `await`."""

    def __init__(self, inner: AsyncWorkbench) -> None:
        self._inner = inner
        self._portal = portal()

    def __repr__(self) -> str:
        return repr(self._inner).replace("AsyncWorkbench", "Workbench")

    @property
    def network(self) -> str:
        return self._inner.network

    @property
    def address(self) -> str | None:
        return self._inner.address

    @property
    def aio(self) -> AsyncWorkbench:
        """The async workbench underneath (use it from the portal loop only)."""
        return self._inner

    def models(self, *, catalog: bool | str = False) -> pd.DataFrame:
        return self._portal.run(self._inner.models(catalog=catalog))

    def bids(self, model: str | None = None) -> pd.DataFrame:
        return self._portal.run(self._inner.bids(model))

    def providers(self) -> pd.DataFrame:
        return self._portal.run(self._inner.providers())

    def quote(self, model: str, **options: Any) -> pd.DataFrame:
        return self._portal.run(self._inner.quote(model, **options))

    def sessions(self, user: str | None = None) -> pd.DataFrame:
        return self._portal.run(self._inner.sessions(user))

    def stats(self) -> pd.DataFrame:
        return self._portal.run(self._inner.stats())

    def history(self, days: float = 7.0, *, progress: bool = True) -> pd.DataFrame:
        return self._portal.run(self._inner.history(days, progress=progress))

    def compare(
        self, prompt: str | list[dict[str, Any]], model: str, **options: Any
    ) -> pd.DataFrame:
        return self._portal.run(self._inner.compare(prompt, model, **options))

    def open_session(self, model: str, **options: Any) -> Session:
        return Session(self._portal.run(self._inner.open_session(model, **options)), self._portal)

    def chat(self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any) -> str:
        return self._portal.run(self._inner.chat(prompt, model=model, **params))

    def stream(
        self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any
    ) -> ChatStream:
        return ChatStream(self._inner.stream(prompt, model=model, **params), self._portal)

    def complete(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> ChatCompletion:
        return self._portal.run(self._inner.complete(messages, model=model, **params))

    def embed(self, texts: str | list[str], *, model: str, **options: Any) -> np.ndarray:
        """See `AsyncWorkbench.embed`: a float32 array, one row per text."""
        return self._portal.run(self._inner.embed(texts, model=model, **options))

    def embeddings(
        self, *, input: str | list[str], model: str, **params: Any
    ) -> CreateEmbeddingResponse:
        """See `AsyncWorkbench.embeddings`: OpenAI's `CreateEmbeddingResponse`."""
        return self._portal.run(self._inner.embeddings(input=input, model=model, **params))

    def map(
        self,
        prompts: Sequence[str] | pd.Series | pd.DataFrame,
        *,
        model: str,
        **options: Any,
    ) -> pd.DataFrame:
        """See `AsyncWorkbench.map`; Ctrl-C stops the run after closing its sessions (rows
        answered so far are in the checkpoint, when one is given)."""
        return self._portal.run_interruptible(self._inner.map(prompts, model=model, **options))

    def close_all(self) -> int:
        return self._portal.run(self._inner.close_all())

    def closable(self) -> list[str]:
        return self._portal.run(self._inner.closable())

    def close_session(self, session_id: str) -> bool:
        return self._portal.run(self._inner.close_session(session_id))

    def withdraw(self) -> float:
        return self._portal.run(self._inner.withdraw())

    def attestation(self, session: Session | str) -> Attestation:
        return self._inner.attestation(session)

    def chain_time(self) -> int:
        return self._portal.run(self._inner.chain_time())

    def on_sessions_changed(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """See `AsyncWorkbench.on_sessions_changed`; `callback` runs on the workbench's
        background loop thread, not the caller's."""
        return self._inner.on_sessions_changed(callback)

    def balance(self, user: str | None = None) -> Balance:
        return self._portal.run(self._inner.balance(user))

    def close(self) -> None:
        self._portal.run(self._inner.close())

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def aconnect(
    network: str | Network = "sandbox",
    *,
    rpc_url: str | list[str] | None = None,
    key: str | None = None,
    keystore: str | os.PathLike[str] | None = None,
    password: str | None = None,
    sandbox_dir: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    diamond: str | None = None,
    token: str | None = None,
    multicall: str | None = None,
    require_tee: bool = False,
    **options: Any,
) -> AsyncWorkbench:
    """An `AsyncWorkbench` on `network`: "sandbox" (local, started if needed), "base" or
    "base-sepolia" (needs `rpc_url` — one URL or several for failover — or $MOR_RPC_URL; a key
    is optional for read-only use), or "gateway" (the hosted API: `api_key` or $MOR_API_KEY,
    market data from Base when an RPC URL is given).

    Any other deployment: pass its addresses, `diamond='0x…', token='0x…'` (and `multicall`,
    default the canonical Multicall3 0xcA11…CA11), with `rpc_url`, or a `Network(...)` as
    `network`; its chain id is read from the node. Before anything else is read, its Diamond,
    token and Multicall3 are checked to hold contract code (`ConfigurationError` naming the
    first that does not); a preset's chain id is checked against the node's instead.

    `require_tee=True` is `strategy={"tee": True}`: sessions open only on models tagged `tee`
    (see `Strategy.tee` for what that does and does not guarantee). Other `options` are
    AsyncWorkbench's."""
    if not isinstance(network, str | Network):
        raise ConfigurationError(
            "network must be a name such as 'sandbox' or 'base', or a mor.Network(...)"
        )
    unknown = set(options) - _WORKBENCH_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown option {sorted(unknown)[0]!r}: use one of "
            f"{', '.join(sorted(_WORKBENCH_OPTIONS | _CONNECT_OPTIONS))}"
        )
    if require_tee:
        options["strategy"] = _with_tee(options.get("strategy"))
    addresses = {"diamond": diamond, "token": token, "multicall": multicall}
    given = {k: v for k, v in addresses.items() if v is not None}
    if given and isinstance(network, Network):
        raise ConfigurationError(
            f"pass the addresses in the Network or as {', '.join(given)}=…, not both"
        )
    if given:
        network = custom_network(network, diamond, token, multicall)
    if network == "gateway":
        gateway = Gateway(api_key, base_url=base_url)
        urls = rpc_url or os.environ.get(RPC_URL_ENV)
        chain = await connect_chain(get_network("base"), urls) if urls else None
        return AsyncWorkbench("gateway", chain, None, backend=GatewayBackend(gateway), **options)
    if network == "sandbox":
        from mor_workbench import sandbox  # the dev sandbox (POSIX only) loads when asked for

        info = await asyncio.to_thread(sandbox.start, sandbox_dir)
        account = load_signer(key) if key else info.signer("consumer")

        async def reattach() -> list[str]:  # the sandbox restarted, or is down: say how to start
            return await asyncio.to_thread(sandbox.reattach, info.directory, info.deployment)

        rpc = RpcClient(info.rpc_url, refresh_urls=reattach)
        workbench = AsyncWorkbench("sandbox", Chain(rpc, info.deployment), account, **options)
        await workbench.recover()
        return workbench
    preset = network if isinstance(network, Network) else get_network(network)
    urls = rpc_url or os.environ.get(RPC_URL_ENV)
    if not urls:
        raise ConfigurationError(
            f"connecting to {preset.name} needs an RPC URL: "
            f"pass rpc_url='https://…' or set {RPC_URL_ENV}"
        )
    chain = await connect_chain(preset, urls)
    has_key = key or keystore or os.environ.get("MOR_PRIVATE_KEY")
    account = load_signer(key, keystore=keystore, password=password) if has_key else None
    workbench = AsyncWorkbench(preset.name, chain, account, **options)
    await workbench.recover()
    return workbench


_WORKBENCH_OPTIONS = {
    "strategy",
    "require_encrypted_prompts",
    "timeout",
    "max_failovers",
    "deadline",
    "allowance",
}
_CONNECT_OPTIONS = {
    "rpc_url",
    "key",
    "keystore",
    "password",
    "sandbox_dir",
    "api_key",
    "base_url",
    "diamond",
    "token",
    "multicall",
    "require_tee",
}


def _with_tee(strategy: Strategy | str | dict | None) -> Strategy:
    """`strategy` with its `tee` option on (`require_tee=True`)."""
    return dataclasses.replace(Strategy.of(strategy), tee=True)


def connect(network: str | Network = "sandbox", **options: Any) -> Workbench:
    """A `Workbench` on `network`; see `aconnect` for the options. Sessions it opens are
    closed by `close()`, by `with`, or at interpreter exit at the latest."""
    workbench = Workbench(portal().run(aconnect(network, **options)))
    atexit.register(_close_at_exit, weakref.ref(workbench))
    return workbench


def _close_at_exit(ref: weakref.ref[Workbench]) -> None:
    workbench = ref()
    if workbench is not None and not workbench.aio._closed:
        try:
            workbench.close()
        except Exception as exc:  # at exit nothing may raise; the journal closes it next start
            warnings.warn(f"could not close sessions at exit: {exc}", stacklevel=1)
