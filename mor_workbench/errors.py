"""THE exception tree of mor-workbench: every error the package raises derives from `MorError`
and is defined (or re-exported) here. Messages are one line that says what was wrong and how
to fix it; they never contain a key.

Every failure is sorted once, where it happens, into one of two kinds:

- the **request** is at fault (`RequestError`): bad input, a request too large, an unknown
  model, parameters the model refused. Another provider would refuse it too, so it is never
  retried nor failed over; `serve` answers it with its 4xx `status` and OpenAI error fields.
- the **provider** is at fault (`ProviderError`, and `RemoteProtocolError` for a reply that
  breaks MOR-RPC): it refused, stalled, crashed or lied. The router closes that session and
  fails over to the next provider; `serve` answers 5xx only when every provider failed
  (`NoProviderAvailable`, or `ProviderError` once the failovers are spent).

    MorError
    ├── RequestError                  the request is at fault (4xx; never failed over)
    │   ├── ConfigurationError        bad input to a function (also a ValueError)
    │   │   ├── RequestTooLarge       the prompt does not fit a MOR-RPC message
    │   │   └── ModelNotFound         no active model of that name (404)
    │   ├── RequestRejected           the model refused the request (also a ProviderError)
    │   └── BudgetExceeded            the call would cross a `mor.budget` cap (402)
    ├── ProviderError                 the provider is at fault (failover)
    │   ├── ProviderStalled           no reply in time, or the call's deadline passed
    │   └── SessionExpired            the session ended: open a new one
    ├── NoProviderAvailable           no provider accepted (503)
    ├── BackendError                  (provider side) the model server refused or failed
    ├── ProtocolError                 a MOR-RPC message could not be built, parsed or verified
    │   ├── LocalProtocolError        we were asked to send something MOR-RPC forbids
    │   └── RemoteProtocolError       the peer sent something malformed, forged or too large
    ├── ChainError                    the chain could not be read or written
    │   ├── RpcUnavailable
    │   └── ContractReverted
    ├── InsufficientFunds             too little MOR or ETH (402)
    ├── IllegalTransition             a session moved where its life does not go (a bug)
    └── SandboxError                  the local sandbox could not be managed

(`mor_workbench.chain.rpc.RpcError`, a `ChainError`, is the node's JSON-RPC error.)
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = [
    "AttestationUnverified",
    "BackendError",
    "BudgetExceeded",
    "ChainError",
    "ChannelError",
    "ChunkForged",
    "ChunkMissing",
    "ChunkReplayed",
    "ConfigurationError",
    "ContractReverted",
    "IllegalTransition",
    "InsufficientFunds",
    "LocalProtocolError",
    "ModelNotFound",
    "MorError",
    "NoProviderAvailable",
    "ProtocolError",
    "ProviderError",
    "ProviderStalled",
    "RemoteProtocolError",
    "RequestError",
    "RequestRejected",
    "RequestTooLarge",
    "RpcUnavailable",
    "SandboxError",
    "SessionExpired",
    "StreamTruncated",
    "TranscriptForged",
    "one_line",
]


class MorError(Exception):
    """Root of every mor-workbench error, so callers can catch one type.

    In IPython and Jupyter it shows as one line, its type and message, with a hint that
    `%tb` prints the full traceback (the frames of the workbench's private event loop are
    noise to a notebook user; the message already says what to fix). The hook is IPython's
    `_render_traceback_` protocol; elsewhere (scripts, pytest) tracebacks are untouched.
    """

    def _render_traceback_(self) -> list[str]:
        """The lines IPython shows for this error: one, unless `%tb` asked for them all."""
        if _asked_for_by_tb_magic():
            from IPython.core.getipython import get_ipython  # loaded: IPython is calling us

            shell = get_ipython()
            if shell is not None:
                return shell.InteractiveTB.structured_traceback(
                    type(self), self, self.__traceback__
                )
        message = one_line(self)
        return [
            f"\x1b[0;31m{type(self).__name__}\x1b[0m: {message} "
            "\x1b[2m(%tb for the full traceback)\x1b[0m"
        ]


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An error as one readable line: its message with line breaks folded (its type when it
    has none), cut to `limit` characters with an ellipsis. Every surface shows errors so."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _asked_for_by_tb_magic() -> bool:
    """Whether IPython's `%tb` magic (IPython/core/magics/execution.py) is the caller."""
    frame = sys._getframe(2)
    while frame is not None:
        if (
            frame.f_code.co_name == "tb"
            and frame.f_globals.get("__name__") == "IPython.core.magics.execution"
        ):
            return True
        frame = frame.f_back
    return False


# ----- the request is at fault -----


class RequestError(MorError):
    """The request itself is at fault: fix it, do not retry it (no provider would accept it).

    Raised before any money moves where the fault can be seen locally, or by the router when
    a model refuses the request. Carries an OpenAI error's fields, which `serve` returns as
    they are: `status` (HTTP), `type`, `param` and `code` (None when unknown).
    """

    status: int = 400
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    @property
    def error_message(self) -> str:
        """The message as the OpenAI error's `message` field."""
        return str(self)

    def openai_error(self) -> dict[str, Any]:
        """The OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.error_message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigurationError(RequestError, ValueError):
    """The caller gave bad input: an unknown network, a malformed address or key, a missing
    tool, a bad parameter. Raised before anything is sent; fix the argument named."""


class RequestTooLarge(ConfigurationError):
    """The request cannot reach any provider: its MOR-RPC message would exceed the peer limit.

    `size` and `limit` are in bytes. Raised before any session is opened or paid for; shorten
    the prompt.
    """

    status = 413
    code = "request_too_large"
    param = "messages"

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"the request is {size / 1024:,.0f} KiB as a MOR-RPC message, over the "
            f"{limit / 1024:,.0f} KiB a provider accepts: shorten the prompt (encrypted prompts "
            "take about twice their length)"
        )


class ModelNotFound(ConfigurationError):
    """No active model on the marketplace has that name or id (raised by model lookups before
    any session opens); choose one of the names the message lists (`wb.models()`)."""

    status = 404
    param = "model"
    code = "model_not_found"


class BudgetExceeded(RequestError):
    """A call would cross a cap of the active `mor.budget(...)` (mor_workbench/budget.py):
    raised before a session whose stake would cross `max_mor` (or one session more than
    `max_sessions`) is opened, and mid-stream when a call's spend crosses `per_call` or
    `max_mor` (that session is then closed). Never failed over; `serve` answers 402.
    `cap` names the cap ("max_mor", "per_call", "max_sessions"); `limit`, `would_be` are in
    its unit (MOR, or sessions)."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, cap: str, limit: float, would_be: float, what: str) -> None:
        self.cap, self.limit, self.would_be = cap, limit, would_be
        unit = "" if cap == "max_sessions" else " MOR"
        super().__init__(
            f"{what} would bring the budget's {cap} to {would_be:.6g}{unit}, over its "
            f"{limit:.6g}{unit}: raise the cap or ask for less (shorter sessions, fewer tokens)"
        )


# ----- the provider is at fault -----


class ProviderError(MorError):
    """A provider refused, stalled, crashed or sent a bad answer; the message says which.

    Raised by the router's peer calls; a call fails over to the next provider on it, and
    raises it only once its failovers are spent. `retryable` (kept for compatibility) is
    False only for `RequestRejected`, when the request itself was at fault.
    """

    @property
    def retryable(self) -> bool:
        """Whether another provider might take the request (False for request faults)."""
        return not isinstance(self, RequestError)


class AttestationUnverified(ProviderError):
    """A step of a TEE provider's attestation check failed (no quote, a quote that does not
    verify, is not bound to the served certificate, or whose RTMR3 is not a golden value); the
    message says which and why. `router.attestation.TeeVerifier.check` turns it into an
    unverified `Attestation`; only the step functions (`fetch_quote`, `verify_tdx_quote`)
    raise it."""


class ProviderStalled(ProviderError, TimeoutError):
    """The provider sent nothing within the timeout (before the first reply or between
    chunks), or the call ran past its overall deadline. The router fails over."""


class SessionExpired(ProviderError):
    """The session ended (its time ran out or it was closed): open a new one (a renewing
    lease does so by itself)."""


class RequestRejected(RequestError, ProviderError):
    """The model refused the request as invalid (an OpenAI `invalid_request_error`: bad
    parameters, context too long, …); another provider would refuse it too, so it is raised
    at once, never failed over. The backend's `status`, `type`, `param` and `code` and its
    own `message` (`error_message`) are kept as it sent them. Fix the request."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"the model refused the request: {message}")
        self._message = message
        self.status, self.type, self.param, self.code = status, type, param, code

    @property
    def error_message(self) -> str:
        return self._message


class BackendError(MorError):
    """(Provider side) the model server refused or failed a request: `status` is its HTTP
    status and `body` its JSON error (OpenAI shape), both forwarded to the consumer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(f"backend answered {status}: {message or json.dumps(body)[:200]}")


class NoProviderAvailable(MorError):
    """No provider of the model accepted a session (or every one failed the call); `tried`
    lists each (provider, why). Raised by the router; try later, another model, or a looser
    strategy."""

    def __init__(self, model: str, tried: list[tuple[str, str]], why: str = "") -> None:
        self.tried = tried
        detail = "; ".join(f"{p[:10]}…: {w}" for p, w in tried) or why or "the model has no bids"
        super().__init__(f"no provider accepted a session for {model!r} ({detail})")


# ----- MOR-RPC -----


class ProtocolError(MorError):
    """A MOR-RPC message could not be built, parsed, verified or decrypted."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, unsigned, forged, replayed, stale or too large.
    On the consumer side the provider is at fault: the router fails over."""


class ChannelError(RemoteProtocolError):
    """A frame of the fast channel between our own peers (`mor_workbench.protocol.fastchannel`)
    broke one of its rules; the provider (or someone between us) is at fault."""


class ChunkForged(ChannelError):
    """A fast-channel frame failed authentication: altered in transit, or sealed with another
    session's or request's key."""


class ChunkReplayed(ChannelError):
    """A fast-channel frame arrived again (its sequence number was already taken)."""


class ChunkMissing(ChannelError):
    """A fast-channel frame arrived ahead of its turn: one before it was dropped, or the
    frames were reordered."""


class StreamTruncated(ChannelError):
    """A fast-channel answer ended without its final signed transcript (cut off)."""


class TranscriptForged(ChannelError):
    """A fast-channel transcript signature is not the provider's over what was received."""


# ----- chain, funds, sandbox -----


class ChainError(MorError):
    """The chain could not be read or written: unreachable RPC, wrong chain, failed transaction."""


class RpcUnavailable(ChainError):
    """No RPC endpoint answered: check the RPC URL or try later."""


class ContractReverted(ChainError):
    """A contract call or transaction reverted; `error` names the decoded custom error."""

    def __init__(self, message: str, *, error: str | None = None, args: tuple = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


class SandboxError(MorError):
    """The local sandbox marketplace could not be started, attached or managed."""


class InsufficientFunds(MorError):
    """The account holds too little MOR (or ETH for gas) for what was asked; amounts in wei.
    Raised before any transaction is sent: fund the account or ask for less."""

    def __init__(self, token: str, needed: int, available: int, what: str) -> None:
        self.token, self.needed, self.available = token, needed, available
        super().__init__(
            f"{what} needs {needed / 1e18:.6g} {token} but the account holds "
            f"{available / 1e18:.6g} {token}: fund the account or ask for a shorter session"
        )


class IllegalTransition(MorError):
    """A session was asked to move where its life does not go (router/states.py's table): a
    bug in the caller, never a user's mistake. `state` and `event` name the refused move."""

    def __init__(self, state: str, event: str) -> None:
        self.state, self.event = state, event
        super().__init__(f"a session that is {state} cannot be {event}")
