"""How the router orders a model's bids before asking providers, on top of the reference score.

The reference router always asks the best-scored bid first, so every consumer herds onto one
provider. The default here draws among the top bids with probability proportional to score,
skips providers that failed recently, and honours allow/deny lists and a price cap. Its
`health` option is the live consumer's SESSION_HEALTH_POLICY (see `router.health`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from mor_workbench.errors import ConfigurationError
from mor_workbench.router.health import DEFAULT_POLICY, HealthPolicy, check_policy
from mor_workbench.router.scoring import Score

__all__ = ["Cooldowns", "Strategy"]


class _Scored(Protocol):
    @property
    def provider(self) -> str: ...
    @property
    def price_per_second(self) -> int: ...
    @property
    def score(self) -> Score: ...


B = TypeVar("B", bound=_Scored)


@dataclass(frozen=True)
class Strategy:
    """Provider choice. `order="weighted"` (the default) draws the first provider among the
    `top` best bids with probability proportional to score, then the rest best first;
    `order="best"` is the reference's strict score order. Providers that failed in the last
    `cooldown_s` seconds go last; `allow`/`deny` are provider addresses; `max_price_per_second`
    (MOR) drops dearer bids. `health` is how the providers' self-reported model health gates
    opens: "permissive" (the live default), "preferred" or "strict" (rules in
    `mor_workbench.router.health`); a provider that reported it cannot serve the model is
    never asked under any of them. Unknown values raise `ConfigurationError`.

    `tee=True` (or `connect(..., require_tee=True)`) opens sessions only on models tagged
    `tee` on chain, the tag the live network gives its "secure" models; any other model is
    refused with `ConfigurationError` before any transaction. What it guarantees: the model's
    owner declared it runs in a trusted execution environment. Each provider's Intel TDX quote
    is then checked at open and before each prompt, as the reference consumer does
    (`router.attestation`), and a provider whose quote does not verify, bind its attestation
    endpoint's certificate and match a pinned golden RTMR3 is skipped (never paid); AMD
    SEV-SNP providers are never verified by this library."""

    order: Literal["weighted", "best"] = "weighted"
    top: int = 3
    cooldown_s: float = 300.0
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    max_price_per_second: float | None = None
    health: HealthPolicy = DEFAULT_POLICY
    tee: bool = False

    def __post_init__(self) -> None:
        check_policy(self.health)
        if not isinstance(self.tee, bool):
            raise ConfigurationError(f"strategy tee={self.tee!r} must be True or False")
        if self.order not in ("weighted", "best"):
            raise ConfigurationError(
                f"strategy order {self.order!r} is not known: use 'weighted' or 'best'"
            )
        if self.top < 1:
            raise ConfigurationError(f"strategy top={self.top} must be at least 1")
        for name in ("allow", "deny"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"strategy {name} must be a list of addresses, not a str")
            if value is not None:
                object.__setattr__(self, name, frozenset(a.lower() for a in value))

    @classmethod
    def of(cls, value: Strategy | str | dict | None) -> Strategy:
        """A strategy from itself, "weighted"/"best", or a dict of options."""
        if value is None:
            return cls()
        if isinstance(value, Strategy):
            return value
        if isinstance(value, str):
            return cls(order=value)  # type: ignore[arg-type]
        if isinstance(value, dict):
            try:
                return cls(**value)
            except TypeError as exc:
                raise ConfigurationError(f"strategy options not understood: {exc}") from None
        raise ConfigurationError("strategy must be 'weighted', 'best', a dict or a Strategy")

    def excludes(self, provider: str, price_per_second_wei: int) -> str | None:
        """Why this strategy never asks `provider`'s bid at that price (MOR wei per second),
        in a few words ("deny list", "not in the allow list", "over the price cap …"); None
        when it may ask it."""
        if provider.lower() in self.deny:
            return "deny list"
        if self.allow is not None and provider.lower() not in self.allow:
            return "not in the allow list"
        cap = self.max_price_per_second
        if cap is not None and price_per_second_wei > cap * 1e18:
            return f"over the price cap ({cap:g} MOR/s)"
        return None

    def choose(
        self, bids: Sequence[B], cooling: Iterable[str] = (), rng: random.Random | None = None
    ) -> list[B]:
        """The order to ask providers in: eligible bids first (best score first, the first pick
        weighted among the top), providers cooling down after a failure last."""
        eligible = [b for b in bids if self.excludes(b.provider, b.price_per_second) is None]
        eligible.sort(key=lambda b: b.score.score, reverse=True)
        cold = {c.lower() for c in cooling}
        fresh = [b for b in eligible if b.provider.lower() not in cold]
        stale = [b for b in eligible if b.provider.lower() in cold]
        if self.order == "weighted" and len(fresh) > 1:
            head = fresh[: self.top]
            weights = [max(b.score.score, 0.0) for b in head]
            if sum(weights) > 0:
                first = (rng or random).choices(range(len(head)), weights)[0]
                fresh.insert(0, fresh.pop(first))
        return fresh + stale


@dataclass
class Cooldowns:
    """When each provider last failed us, to skip it for a while."""

    failed_at: dict[str, float] = field(default_factory=dict)

    def failed(self, provider: str) -> None:
        self.failed_at[provider.lower()] = time.monotonic()

    def cooling(self, cooldown_s: float) -> set[str]:
        now = time.monotonic()
        return {p for p, at in self.failed_at.items() if now - at < cooldown_s}
