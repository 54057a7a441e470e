"""One call through a session, with failover: when the provider refuses, stalls or dies, the
router closes that session, opens one with the next provider and carries on — for a stream
that already produced text, by sending that text back as the start of the assistant's answer
so the new provider continues it and the user sees one coherent answer.

An embeddings request takes the same path, marked as the live wire marks it
(`embeddings_request`), and many texts are cut into requests that each fit a provider's
message limit (`embedding_batches`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mor_workbench.errors import (
    NoProviderAvailable,
    ProtocolError,
    ProviderError,
    ProviderStalled,
    RequestError,
    RequestTooLarge,
    SessionExpired,
)
from mor_workbench.protocol import EMBEDDINGS_PROMPT_TYPE, PEER_REQUEST_LIMIT
from mor_workbench.router.peer import check_prompt_fits, prompt_size
from mor_workbench.router.router import OpenSession, Router

__all__ = [
    "EMBED_BATCH_INPUTS",
    "CallRecord",
    "Lease",
    "TokensPerSecondBasis",
    "embedding_batches",
    "embeddings_request",
    "resume_body",
    "run_call",
]


TokensPerSecondBasis = Literal["generation", "end_to_end"]


@dataclass
class CallRecord:
    """How one call went and what it cost: for answer footers, comparisons and metadata.

    Only what was measured is reported. A streamed answer has a time to first token and a
    generation speed (tokens over the time from the first token to the last); a non-streamed
    answer arrives all at once, so it has no TTFT (None) and its tokens/s is over the whole
    call (`tokens_per_s_basis` "end_to_end", as it is for a stream of a single chunk, whose
    generation time cannot be measured). Times are in seconds, costs in MOR.
    """

    model: str
    provider: str = ""
    session_id: str = ""
    bid_id: str = ""
    price_per_second: int = 0
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    finished: float | None = None
    deltas: int = 0
    usage: dict[str, int] | None = None
    failovers: list[tuple[str, str]] = field(default_factory=list)
    resumed: bool = False
    surface: str = "workbench"
    """Which surface made the call ("langchain", "serve", "%%mor", …), for budget reports."""
    streamed: bool | None = None
    """True once a streamed chunk arrived, False for a whole completion, None before either."""
    on_accept: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Called as a provider accepts the request on the fast channel, its model having taken
    the prompt (`serve` sends its HTTP status then); the live wire has no such moment."""

    def accept(self) -> None:
        """A provider accepted the request: tell `on_accept`, set when the call was already
        under way."""
        if self.on_accept is not None:
            self.on_accept()

    def bind(self, session: OpenSession) -> None:
        self.provider = session.provider
        self.session_id = "0x" + session.session_id.hex()
        self.bid_id = "0x" + session.bid_id.hex()
        self.price_per_second = session.price_per_second

    def observe(self, payload: dict[str, Any]) -> str:
        """Note one chunk (or a whole completion); the answer text it adds.

        A reasoning model's thinking (`reasoning_content`) counts as output like the answer:
        its first token is the first token (TTFT measures how soon the model responds, and
        the provider's receipt counts it the same way), and each of its deltas is a token,
        as the provider's `completion_tokens` include reasoning tokens. It is not part of the
        returned text, which is what a failover resumes from."""
        if isinstance(payload.get("usage"), dict):
            self.usage = {k: int(v) for k, v in payload["usage"].items() if isinstance(v, int)}
        text = ""
        for choice in payload.get("choices") or ():
            if "delta" in choice or "message" in choice:
                self.streamed = "delta" in choice
            part = choice.get("delta") or choice.get("message") or {}
            if part.get("content") or part.get("tool_calls") or part.get("reasoning_content"):
                if self.first_token is None:
                    self.first_token = time.monotonic()
                self.deltas += 1
                text += part.get("content") or ""
        return text

    @property
    def ttft_s(self) -> float | None:
        """Seconds to the first streamed token (including opening a session when one was
        opened); None for a non-streamed call, whose first token comes with the last."""
        if not self.streamed or self.first_token is None:
            return None
        return self.first_token - self.started

    @property
    def e2e_s(self) -> float:
        """Seconds from the call's start to its end (to now while it runs)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def completion_tokens(self) -> int:
        """From the provider's usage, else one per streamed delta (about one token each)."""
        if self.usage and "completion_tokens" in self.usage:
            return self.usage["completion_tokens"]
        return self.deltas

    @property
    def tokens_per_s_basis(self) -> TokensPerSecondBasis:
        """What `tokens_per_s` is measured over: "generation" (first token to last, for a
        stream of several chunks) or "end_to_end" (the whole call)."""
        return "generation" if self.streamed and self.deltas > 1 else "end_to_end"

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second over `tokens_per_s_basis`; None until the call ends
        with an answer."""
        if self.first_token is None or self.finished is None:
            return None
        since = self.first_token if self.tokens_per_s_basis == "generation" else self.started
        return self.completion_tokens / max(self.finished - since, 1e-6)

    @property
    def cost_mor(self) -> float:
        """The session time this call used at the bid's per-second price, in MOR."""
        return self.price_per_second * self.e2e_s / 1e18

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "session_id": self.session_id,
            "bid_id": self.bid_id,
            "streamed": self.streamed,
            "ttft_s": self.ttft_s,
            "e2e_s": self.e2e_s,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_basis": self.tokens_per_s_basis,
            "cost_mor": self.cost_mor,
            "failovers": [{"provider": p, "reason": r} for p, r in self.failovers],
            "resumed": self.resumed,
        }


@dataclass
class Lease:
    """A session slot the router may move: to another provider on failure, or (when `renew`)
    to a fresh session when this one has ended. One move at a time (`moving`): calls running
    together on the lease that fail or find it ended together share the one new session."""

    model: str
    duration_s: int
    direct_payment: bool
    opened: OpenSession
    renew: bool = False
    max_failovers: int = 2
    moving: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)


def resume_body(body: dict[str, Any], partial: str) -> dict[str, Any]:
    """`body` asking the model to continue `partial`: the text is sent as the start of the
    assistant's answer (a trailing assistant message, flagged `prefix` as Mistral and
    DeepSeek spell it; llama.cpp and Ollama continue a trailing assistant message as is)."""
    messages = [*body["messages"], {"role": "assistant", "content": partial, "prefix": True}]
    return {**body, "messages": messages}


EMBED_BATCH_INPUTS = 64
"""Most texts sent in one embeddings request. The answer comes back as one MOR-RPC message,
which a consumer reads up to `transport.CONSUMER_MESSAGE_LIMIT` (4 MiB, hex of the encrypted
JSON): 64 vectors of 1024 floats are about 1.3 MB as JSON floats (a backend that ignores
`encoding_format="base64"`), 2.6 MB once hex; and a failed request costs little to send again."""


def embeddings_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI embeddings request as the session.prompt body the live wire sends for it (the
    proxy-router's `SendEmbeddings`): the request plus `"type": "embeddings"`, which the
    provider takes out before posting the rest to the model's embeddings endpoint."""
    return {**body, "type": EMBEDDINGS_PROMPT_TYPE}


def embedding_batches(
    texts: Sequence[str],
    body: dict[str, Any],
    *,
    max_inputs: int = EMBED_BATCH_INPUTS,
    limit: int = PEER_REQUEST_LIMIT,
) -> list[list[str]]:
    """`texts` cut, in order, into the fewest runs of consecutive texts such that each run, as
    the `input` of the embeddings request `body` (see `embeddings_request`), holds at most
    `max_inputs` texts and fits a provider's `limit` (bytes, as sent encrypted: `prompt_size`).
    Raises `RequestTooLarge` (before any session is opened) for a text that fits no request
    alone."""
    base = prompt_size(embeddings_request({**body, "input": []}))
    batches: list[list[str]] = []
    batch: list[str] = []
    size = base
    for text in texts:
        # as JSON in the list: the text and a comma, each byte two hex digits once encrypted
        added = 2 * (len(json.dumps(text).encode()) + 1)
        if base + added > limit:
            raise RequestTooLarge(base + added, limit)
        if batch and (len(batch) >= max_inputs or size + added > limit):
            batches.append(batch)
            batch, size = [], base
        batch.append(text)
        size += added
    if batch:
        batches.append(batch)
    return batches


CALL_DEADLINE_PER_TIMEOUT = 20
"""A provider's whole answer must end within this many `timeout`s (20 min at the default 60 s
timeout): a stream of valid chunks that never ends is a provider fault like a stall."""


async def _until(deadline: float, payloads: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`payloads` until the monotonic `deadline` (the event loop's clock); `ProviderStalled`
    when it passes first: the wait for a chunk under way is cancelled then, and none is
    awaited after it.

    One timer for the whole answer, not a timeout scope per chunk (that scheduled and
    cancelled a timer for every chunk: about 5 µs of a chunk's budget, issue 16 §3). Each wait
    is cancelled as `asyncio.timeout` cancels one: in the task awaiting it (the caller may
    change tasks between chunks), and a cancellation from elsewhere passes through."""
    loop = asyncio.get_running_loop()
    waiting: asyncio.Task[Any] | None = None  # the task awaiting a chunk now, if any
    expired = False  # the timer cancelled that wait

    def expire() -> None:
        nonlocal expired
        if waiting is not None:
            expired = True
            waiting.cancel()

    timer = loop.call_at(deadline, expire)
    try:
        while True:
            if loop.time() >= deadline:
                raise ProviderStalled("the answer did not end within the call's deadline")
            waiting = asyncio.current_task()
            assert waiting is not None
            cancelling = waiting.cancelling()
            try:
                payload = await anext(payloads)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if expired and waiting.uncancel() <= cancelling:
                    raise ProviderStalled(
                        "the answer did not end within the call's deadline"
                    ) from None
                raise
            finally:
                waiting = None
            yield payload
    finally:
        timer.cancel()
        await payloads.aclose()  # type: ignore[attr-defined]


async def run_call(
    router: Router,
    lease: Lease,
    body: dict[str, Any],
    record: CallRecord,
    *,
    timeout: float = 60.0,
    deadline_s: float | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The verified, decrypted chunks (or the completion) of `body`, failing over as needed.

    `timeout` (s) bounds the wait for the first reply and between chunks; `deadline_s` (s,
    default `CALL_DEADLINE_PER_TIMEOUT` times `timeout`) bounds each provider's whole answer. The
    provider's faults (`ProviderError`, `RemoteProtocolError`: refused, stalled, broke the
    protocol, overran its deadline or the request's output cap) fail over to the next
    provider, and the failed session is closed (in the background) whether or not another
    provider takes over, so it is never reused nor left holding stake. Raises: a
    `RequestError` at once (never failed over), `RequestTooLarge` before anything is sent;
    `ProviderError` once `lease.max_failovers` are spent; `NoProviderAvailable` when no other
    provider accepts; `SessionExpired` when the session ended and the lease may not renew."""
    check_prompt_fits(body)
    deadline_s = CALL_DEADLINE_PER_TIMEOUT * timeout if deadline_s is None else deadline_s
    produced = ""
    while True:
        if lease.opened.ends_at <= time.time() + 5:
            await _renew(router, lease, "the session has ended", lease.opened)
        session = lease.opened
        record.bind(session)
        request = resume_body(body, produced) if produced else body
        answer = router.stream(session, request, timeout=timeout, on_accept=record.accept)
        try:
            async for payload in _until(time.monotonic() + deadline_s, answer):
                produced += record.observe(payload)
                yield payload
            record.finished = time.monotonic()
            return
        except SessionExpired as exc:
            await _renew(router, lease, str(exc), session)
            continue
        except RequestError:
            raise
        except (ProviderError, ProtocolError) as exc:
            reason = str(exc) or type(exc).__name__
        record.failovers.append((session.provider, reason))
        router.failed(session.provider)
        router.close_soon(session)
        if len(record.failovers) > lease.max_failovers:
            raise ProviderError(
                f"{len(record.failovers)} providers failed this call; the last: {reason}"
            )
        async with lease.moving:
            failed = {p for p, _ in record.failovers}
            if lease.opened is session or lease.opened.provider in failed:
                try:
                    lease.opened = await router.open(
                        lease.model,
                        lease.duration_s,
                        direct_payment=lease.direct_payment,
                        exclude=sorted(failed),
                    )
                except NoProviderAvailable as exc:
                    raise NoProviderAvailable(
                        lease.model, [*record.failovers, *exc.tried]
                    ) from None
            # else another call failing with this one has moved the lease: share its session
        record.resumed = record.resumed or bool(produced)


async def _renew(router: Router, lease: Lease, why: str, ended: OpenSession) -> None:
    """Move the lease from `ended` (the session the caller found ended) to a fresh session,
    when the lease may renew; a lease another call has already moved is left as it is."""
    if not lease.renew:
        raise SessionExpired(f"{why}: open a new session")
    async with lease.moving:
        if lease.opened is not ended:
            return  # another call on the lease has just renewed it: share that session
        lease.opened = await router.open(
            lease.model, lease.duration_s, direct_payment=lease.direct_payment
        )
    if ended.session_id in router.opened:
        router.close_soon(ended)
