"""Provider health before any money moves: which of a model's bids to ask for a session, given
what each provider reported about the model in its pong.

The rules are the live consumer's (proxy-router): since v7.5 (PR #812) it pings the provider
before `session.request` and skips it when the ping fails or the pong's report marks the
bid's model `unhealthy`, `tee_unverified` or `no_model_configured`; a missing report (an older
provider) is no evidence of failure. Since v7.9 (PR #836, `SESSION_HEALTH_POLICY`) the
consumer picks a policy: `permissive` (the default) asks every provider not refused as above;
`preferred` asks providers reporting healthy or degraded first, the others after; `strict`
asks only providers reporting the model healthy. A model with a single provider always opens
permissively, so it stays usable. A rate-limited backend counts as degraded, not unhealthy
(PR #836; a v7.4-v7.8 provider reports it as `unhealthy` with `errorKind: rate_limited`).
Whatever the policy, a provider that said it cannot serve the model is never asked, so never
paid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ConfigurationError
from mor_workbench.protocol import ProtocolError
from mor_workbench.protocol.messages import ModelHealth, PongRes
from mor_workbench.router import peer
from mor_workbench.router.transport import TCP, PeerTransport

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "Checked",
    "HealthPolicy",
    "check_all",
    "check_policy",
    "describe",
    "gate",
    "grade",
]

HealthPolicy = Literal["permissive", "preferred", "strict"]
POLICIES: tuple[HealthPolicy, ...] = ("permissive", "preferred", "strict")
DEFAULT_POLICY: HealthPolicy = "permissive"  # the live default (SESSION_HEALTH_POLICY, #836)
REFUSING = frozenset({"unhealthy", "no_model_configured", "tee_unverified"})
PING_TIMEOUT_S = 5.0  # the live consumer's pre-open ping timeout (#812)

Grade = Literal["healthy", "degraded", "unknown", "refused"]


class _Bid(Protocol):
    @property
    def provider(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def model_id(self) -> bytes: ...


B = TypeVar("B", bound=_Bid)


def check_policy(policy: str) -> HealthPolicy:
    """`policy` if it is one of POLICIES; else `ConfigurationError` naming them."""
    if policy not in POLICIES:
        raise ConfigurationError(
            f"health policy {policy!r} is not known: use 'permissive' (the live default), "
            "'preferred' or 'strict'"
        )
    return policy  # type: ignore[return-value]


def grade(entry: ModelHealth | None) -> Grade:
    """What a report entry means for opening: `refused` (the provider said it cannot serve
    the model), `healthy`, `degraded` (rate-limited: a capacity risk, not a failure), or
    `unknown` (no entry, `no_bid`, or a status this version does not know)."""
    if entry is None:
        return "unknown"
    if entry.status == "healthy":
        return "healthy"
    if entry.status == "degraded" or entry.error_kind == "rate_limited":
        return "degraded"
    if entry.status in REFUSING:
        return "refused"
    return "unknown"


def describe(entry: ModelHealth | None) -> str:
    """A report entry in a few words: "unhealthy (bad_response, HTTP 402)"; "unknown" when the
    provider reported nothing for the model."""
    if entry is None:
        return "unknown"
    detail = [d for d in (entry.error_kind, f"HTTP {entry.http_status}") if d != "HTTP 0" and d]
    return entry.status + (f" ({', '.join(detail)})" if detail else "")


@dataclass(frozen=True)
class Checked:
    """A provider's answer to the pre-open ping: its pong, or why there was none."""

    pong: PongRes | None
    error: str = ""

    def health(self, model_id: bytes) -> ModelHealth | None:
        return None if self.pong is None else self.pong.health_of(model_id)

    def describe(self, model_id: bytes) -> str:
        """The reported health of `model_id` in a few words: "healthy", "unhealthy
        (bad_response, HTTP 402)", "not reported" (a pong without it), "unknown" (no pong)."""
        if self.pong is None:
            return "unknown"
        entry = self.health(model_id)
        return "not reported" if entry is None else describe(entry)


async def check(
    endpoint: str,
    signer: Signer,
    provider: str,
    timeout: float = PING_TIMEOUT_S,
    *,
    transport: PeerTransport = TCP,
) -> Checked:
    """Ping one provider (its pong verified as `provider`'s) over `transport`; a failure
    becomes the reason."""
    try:
        pong = await peer.ping(endpoint, signer, provider, timeout=timeout, transport=transport)
        return Checked(pong)
    except (peer.ProviderError, ProtocolError, OSError, TimeoutError) as exc:
        return Checked(None, f"ping failed: {str(exc) or type(exc).__name__}")


async def check_all(
    bids: Sequence[B],
    signer: Signer,
    timeout: float = PING_TIMEOUT_S,
    *,
    transport: PeerTransport = TCP,
) -> dict[str, Checked]:
    """Ping every provider of `bids` once, concurrently, over `transport`; by lower-case
    provider address."""
    endpoints = {b.provider.lower(): (b.endpoint, b.provider) for b in bids}
    answers = await asyncio.gather(
        *(
            check(endpoint, signer, provider, timeout, transport=transport)
            for endpoint, provider in endpoints.values()
        )
    )
    return dict(zip(endpoints, answers, strict=True))


def gate(
    bids: Sequence[B],
    checked: dict[str, Checked],
    policy: HealthPolicy,
    *,
    single_provider: bool,
) -> tuple[list[tuple[B, PongRes]], list[tuple[str, str]]]:
    """The bids to ask, in order, each with its provider's pong, and the providers skipped
    with the reason (for `NoProviderAvailable.tried`). `bids` come in the strategy's order;
    `single_provider` is whether the model has one provider only (then `permissive`)."""
    effective = "permissive" if single_provider else policy
    first: list[tuple[B, PongRes]] = []
    later: list[tuple[B, PongRes]] = []
    skipped: list[tuple[str, str]] = []
    for bid in bids:
        answer = checked[bid.provider.lower()]
        if answer.pong is None:
            skipped.append((bid.provider, answer.error))
            continue
        entry = answer.health(bid.model_id)
        graded = grade(entry)
        if graded == "refused":
            skipped.append((bid.provider, f"it reported the model {describe(entry)}"))
        elif effective == "strict" and graded != "healthy":
            reason = "no health report" if entry is None else f"reported {describe(entry)}"
            skipped.append((bid.provider, f"{reason}; the strict health policy asks healthy only"))
        elif effective == "preferred" and graded == "unknown":
            later.append((bid, answer.pong))
        else:
            first.append((bid, answer.pong))
    return first + later, skipped
