"""A marketplace session as the user sees it: chat and stream through one provider, then close.

`AsyncSession` holds the logic; `Session` is its synchronous twin on the workbench's loop.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from openai.types.chat import ChatCompletion

from mor_workbench._portal import Portal
from mor_workbench.budget import Budget, call_row, call_wei
from mor_workbench.budget import active as active_budget
from mor_workbench.errors import BudgetExceeded, ConfigurationError, MorError, SessionExpired
from mor_workbench.readouts import CallInfo, SessionInfo
from mor_workbench.router.calls import CallRecord, Lease, run_call
from mor_workbench.router.router import OpenSession, Router

__all__ = [
    "AsyncChatStream",
    "AsyncSession",
    "CallRecord",
    "ChatStream",
    "Session",
    "StreamPart",
    "chat_body",
    "parse_duration",
    "stream_body",
    "to_completion",
]

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> int:
    """Seconds from 600, "90s", "10m", "2h" or "1d"; a clear error otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match:
            return int(float(match[1]) * _UNITS[match[2] or "s"])
    raise ConfigurationError(f"duration {value!r} is not understood: use e.g. 600, '10m' or '2h'")


def chat_body(
    model: str, prompt: str | list[dict[str, Any]], system: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAI request body for a prompt (a string or messages): parameters pass through
    untouched, nothing is added but the model and messages."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        messages = list(prompt)
    else:
        raise ConfigurationError(
            "the prompt must be a string or a list of messages like {'role': 'user', ...}"
        )
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    for reserved in ("model", "messages"):
        if reserved in params:
            raise ConfigurationError(f"pass {reserved!r} as its own argument, not in the params")
    return {"model": model, "messages": messages, **params}


def stream_body(
    model: str, prompt: str | list[dict[str, Any]], system: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    """The request body of a text stream (`stream()`, `chat()`): `chat_body`, streamed, and
    asking for usage (`stream_options.include_usage`, unless the params set it) so the stream's
    `usage` and the answer footers have the provider's token counts. A text stream hands out
    text only, so the usage chunk never reaches the caller; the raw `payloads()` and `serve`
    send the body as the caller wrote it, and get usage only when it asks."""
    body = {**chat_body(model, prompt, system, params), "stream": True}
    options = params.get("stream_options")
    if options is None or isinstance(options, dict):  # malformed: left for the provider to refuse
        body["stream_options"] = {"include_usage": True, **(options or {})}
    return body


def to_completion(payload: dict[str, Any], record: CallRecord) -> ChatCompletion:
    """An OpenAI `ChatCompletion`, with how the call went under `.morpheus`. Fields the
    provider added are kept: a reasoning model's thinking is in
    `.choices[0].message.reasoning_content` (as DeepSeek and vLLM send it)."""
    return ChatCompletion.model_validate({**payload, "morpheus": record.to_dict()})


async def metered(
    payloads: AsyncIterator[dict[str, Any]],
    record: CallRecord,
    close: Callable[[], Awaitable[None]],
    current: Budget,
) -> AsyncIterator[dict[str, Any]]:
    """`payloads` counted in the budget `current`: refused at once when the budget is already
    spent, each streamed chunk checked against `per_call` and `max_mor` (the call's spend so
    far: its session seconds at the bid's price), and on crossing the stream is stopped, its
    session closed on chain (`close`) and `BudgetExceeded` raised. The call is added to the
    budget's ledger however it ends."""
    what = f"a call to {record.model}"
    current.check(0, what)
    outcome = "ok"
    try:
        stopped: BudgetExceeded | None = None
        async with contextlib.aclosing(payloads) as stream:  # type: ignore[type-var]
            async for payload in stream:
                if record.streamed:  # a whole completion is paid once it is here
                    try:
                        current.check(call_wei(record), what)
                    except BudgetExceeded as exc:
                        stopped = exc
                        break
                yield payload
        if stopped is not None:  # the provider's stream is closed: now its session
            outcome = "stopped by the budget"
            try:
                await close()
            except MorError as exc:  # journaled: housekeeping or the next connect closes it
                log.warning("could not close the session a budget stopped yet: %s", exc)
            raise stopped
    except BaseException as exc:
        if outcome == "ok":
            outcome = "abandoned" if isinstance(exc, GeneratorExit) else type(exc).__name__
        raise
    finally:
        current.charge(*call_row(record, outcome))


@dataclass(frozen=True)
class StreamPart:
    """One piece of a streamed answer, from `stream.events()`: `kind` "reasoning" for a
    reasoning model's thinking (which comes first), "text" for the answer itself."""

    kind: Literal["reasoning", "text"]
    text: str


class AsyncChatStream:
    """The text deltas of one answer as they arrive; once done, `text`, `reasoning`, `usage`
    (OpenAI shape) and `info` (provider, session, TTFT, tokens/s, cost, failovers).

    Iterating yields the answer's text only. A reasoning model's thinking (the provider's
    `reasoning_content`) is gathered in `reasoning`; `events()` iterates both instead, as
    `StreamPart`s. A stream is iterated once, one way or the other."""

    def __init__(self, payloads: AsyncIterator[dict[str, Any]], record: CallRecord) -> None:
        self._payloads = payloads
        self.record = record
        self.text = ""
        self.reasoning = ""
        """The thinking of the answer given ("" from a model that does not reason). When a
        provider fails before its answer began, the next one thinks afresh: this holds only
        the latest thinking (`events()` has yielded every part as it came)."""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        async with contextlib.aclosing(self.events()) as parts:  # closed when we are
            async for part in parts:
                if part.kind == "text":
                    yield part.text

    async def events(self) -> AsyncIterator[StreamPart]:
        """The thinking and the answer as they arrive, as `StreamPart`s in order."""
        failovers = len(self.record.failovers)
        try:
            async for payload in self._payloads:
                if len(self.record.failovers) > failovers and not self.text:
                    self.reasoning = ""  # another provider starts the answer over
                failovers = len(self.record.failovers)
                for choice in payload.get("choices") or ():
                    delta = choice.get("delta") or {}
                    thought = delta.get("reasoning_content")
                    if thought:
                        self.reasoning += thought
                        yield StreamPart("reasoning", thought)
                    text = delta.get("content")
                    if text:
                        self.text += text
                        yield StreamPart("text", text)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        closer = getattr(self._payloads, "aclose", None)
        if closer is not None:
            await closer()

    @property
    def usage(self) -> dict[str, int]:
        """Token counts in OpenAI's shape (the provider's own counts when it sent them)."""
        usage = dict(self.record.usage or {})
        usage["completion_tokens"] = self.record.completion_tokens
        usage.setdefault("prompt_tokens", 0)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return usage

    @property
    def info(self) -> CallInfo:
        """How the call went: provider, session, TTFT and e2e (s), tokens/s, cost (MOR), …; a
        dict of exact values that displays rounded with units."""
        return CallInfo(self.record.to_dict())


class ChatStream:
    """Synchronous twin of `AsyncChatStream`."""

    def __init__(self, inner: AsyncChatStream, portal: Portal) -> None:
        self._inner = inner
        self._portal = portal

    def __iter__(self) -> Iterator[str]:
        return self._portal.iterate(aiter(self._inner))

    def events(self) -> Iterator[StreamPart]:
        """The thinking and the answer as they arrive, as `StreamPart`s in order."""
        return self._portal.iterate(self._inner.events())

    @property
    def text(self) -> str:
        return self._inner.text

    @property
    def reasoning(self) -> str:
        """A reasoning model's thinking ("" from a model that does not reason)."""
        return self._inner.reasoning

    @property
    def usage(self) -> dict[str, int]:
        return self._inner.usage

    @property
    def info(self) -> CallInfo:
        return self._inner.info

    @property
    def record(self) -> CallRecord:
        return self._inner.record


class AsyncSession:
    """An open session with one provider, for one model. On a provider failure the session
    moves to another provider (see `info()["provider"]`)."""

    def __init__(
        self,
        router: Router,
        lease: Lease,
        *,
        timeout: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        self._router = router
        self.lease = lease
        self.timeout = timeout
        self.deadline = deadline  # s for one provider's whole answer; None: run_call's default

    @property
    def model(self) -> str:
        return self.lease.model

    @property
    def opened(self) -> OpenSession:
        return self.lease.opened

    @property
    def id(self) -> str:
        return "0x" + self.opened.session_id.hex()

    @property
    def provider(self) -> str:
        return self.opened.provider

    @property
    def closed(self) -> bool:
        """True once closed by us (or by housekeeping when its time was up)."""
        return self._router.is_closed(self.opened)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"ends {self.ends_at:%H:%M:%S} UTC"
        return f"<Session {self.id[:10]}… {self.model} via {self.provider[:10]}… {state}>"

    @property
    def ends_at(self) -> datetime:
        return datetime.fromtimestamp(self.opened.ends_at, UTC)

    def info(self) -> SessionInfo:
        """What this session is: id, model, provider, bid, price (MOR/s), endpoint, end time
        (UTC), state, and what its provider attested (a tee model's; see
        `router.attestation`), reported while the session is open; a dict of exact values
        that displays rounded with units."""
        attested = self._router.attestations.get(self.opened.session_id)
        closed = self.closed
        return SessionInfo(
            {
                "id": self.id,
                "model": self.model,
                "provider": self.provider,
                "bid_id": "0x" + self.opened.bid_id.hex(),
                "price_per_second": self.opened.price_per_second / 1e18,
                "endpoint": self.opened.endpoint,
                "ends_at": self.ends_at,
                "encrypted_prompts": self.opened.encrypt,
                "closed": closed,
                "attestation": attested.status
                if attested
                else ("session closed: reported while it is open" if closed else "not checked"),
            }
        )

    def payloads(self, body: dict[str, Any], record: CallRecord) -> AsyncIterator[dict[str, Any]]:
        """The raw OpenAI chunks (or completion) for a request body, failing over as needed."""
        # a renewing lease (the workbench's own sessions) is checked by its owner, which
        # reopens it: no second journal read on the prompt's critical path
        if not self.lease.renew and self.closed:
            if self.opened.session_id in self._router.expired:
                raise SessionExpired(
                    f"session {self.id[:10]}… ended at {self.ends_at:%H:%M:%S} UTC and was "
                    "closed: open a new one"
                )
            raise ConfigurationError("this session is closed: open a new one")
        call = run_call(
            self._router,
            self.lease,
            body,
            record,
            timeout=self.timeout,
            deadline_s=self.deadline,
        )
        current = active_budget()  # the caller's: see mor_workbench.budget
        return call if current is None else metered(call, record, self.close, current)

    def stream(
        self, prompt: str | list[dict[str, Any]], *, system: str | None = None, **params: Any
    ) -> AsyncChatStream:
        """Text deltas of the answer as they arrive (OpenAI parameters pass through); a
        reasoning model's thinking is in the stream's `reasoning` and `events()`."""
        body = stream_body(self.model, prompt, system, params)
        record = CallRecord(self.model)
        return AsyncChatStream(self.payloads(body, record), record)

    async def chat(
        self, prompt: str | list[dict[str, Any]], *, system: str | None = None, **params: Any
    ) -> str:
        """The whole answer as one string."""
        stream = self.stream(prompt, system=system, **params)
        return "".join([d async for d in stream])

    async def complete(self, messages: list[dict[str, Any]], **params: Any) -> ChatCompletion:
        """An OpenAI `ChatCompletion` for `messages` (parameters pass through untouched)."""
        if params.get("stream"):
            raise ConfigurationError("complete() returns one completion: use stream() to stream")
        record = CallRecord(self.model)
        body = chat_body(self.model, messages, None, params)
        payloads = [p async for p in self.payloads(body, record)]
        return to_completion(payloads[-1], record)

    async def close(self) -> None:
        """Close on chain with the provider's receipt: the unused stake comes back now, the part
        used today is held until the next UTC midnight (the contract's day-lock)."""
        if not self.closed:
            await self._router.close(self.opened)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Session:
    """Synchronous twin of `AsyncSession`."""

    def __init__(self, inner: AsyncSession, portal: Portal) -> None:
        self._inner = inner
        self._portal = portal

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def closed(self) -> bool:
        return self._inner.closed

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    @property
    def ends_at(self) -> datetime:
        return self._inner.ends_at

    @property
    def aio(self) -> AsyncSession:
        return self._inner

    def info(self) -> SessionInfo:
        return self._inner.info()

    def stream(self, prompt: str | list[dict[str, Any]], **params: Any) -> ChatStream:
        return ChatStream(self._inner.stream(prompt, **params), self._portal)

    def chat(self, prompt: str | list[dict[str, Any]], **params: Any) -> str:
        return self._portal.run(self._inner.chat(prompt, **params))

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> ChatCompletion:
        return self._portal.run(self._inner.complete(messages, **params))

    def close(self) -> None:
        self._portal.run(self._inner.close())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
