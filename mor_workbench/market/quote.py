"""What a session would cost before any money moves: per bid, the stake an open moves, what a
natural close returns and holds (and until when), and the expected cost per 1K tokens.

Every amount comes from the marketplace contract's own maths, read from the chain (the same
reads that size an open: `router.peer.deposit_for`, `getSessionEnd`, `stipendToStake`), never
from a second copy of the formulas. The close follows the live day-lock
(Morpheus-Lumerin-Node #833/#835, contracts/src/SessionFacet.sol `_close`): the stipend used on
the day the session stops (since that day's UTC midnight or the open), as stake, is held until
the next UTC midnight; the rest of the stake comes back at the close.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pandas as pd

from mor_workbench.chain.client import Call, Chain
from mor_workbench.errors import ConfigurationError
from mor_workbench.market.catalog import CHAT_TYPES
from mor_workbench.market.tables import mor, when
from mor_workbench.router.health import REFUSING
from mor_workbench.router.peer import deposit_for
from mor_workbench.router.strategy import Strategy

__all__ = ["DAY_S", "mor_per_1k_tokens", "natural_duration", "quote"]

DAY_S = 86_400  # the contract's day (startOfTheDay): UTC midnights on the chain's clock

_COLUMNS = [
    "model",
    "provider_short",
    "id_short",
    "price_per_second",
    "duration_s",
    "stake",
    "returned_at_close",
    "held_at_close",
    "held_until",
    "session_cost",
    "tps",
    "mor_per_1k_tokens",
    "health",
    "excluded",
    "why",
    "ends_at",
    "id",
    "provider",
    "stake_wei",
    "returned_wei",
    "held_wei",
    "session_cost_wei",
]


def natural_duration(now: int, default_s: int, shortest_s: int) -> int:
    """The length (s) of a session sized without a user duration, opened at `now` (chain
    seconds): `default_s`, unless the next UTC midnight comes first and no sooner than the
    contract's `shortest_s`; then the session ends at that midnight. Closed after it, on a
    later day than its last used second, the day-lock holds (almost) nothing of its stake
    (`_close`: only the stipend used on the day it stops is held), where a session running
    past midnight would hold the next day's part until the midnight after."""
    to_midnight = DAY_S - now % DAY_S
    return to_midnight if shortest_s <= to_midnight < default_s else default_s


def mor_per_1k_tokens(price_per_second_wei: int, tokens_per_s: float) -> float:
    """MOR per 1K generated tokens at a provider's measured speed (NaN when unmeasured): a
    session is paid per second, so tokens cost price / speed."""
    if not tokens_per_s or tokens_per_s <= 0 or math.isnan(tokens_per_s):
        return float("nan")
    return 1000 * mor(price_per_second_wei) / tokens_per_s


def _excluded(row: Any, strategy: Strategy) -> str:
    """Why the router would never ask this bid ("" when it may), in the order it checks."""
    if row.type not in CHAT_TYPES:
        return f"{row.type} model: chat, stream and complete refuse it"
    if strategy.tee and not row.tee:
        return "not tagged tee (require_tee)"
    why = strategy.excludes(row.provider, row.price_per_second_wei)
    if why:
        return why
    health = str(getattr(row, "health", "not reported"))
    if health == "unknown":
        return "did not answer the ping"
    if health.split(" ")[0] in REFUSING:
        return f"reported {health}"
    if strategy.health == "strict" and not health.startswith("healthy"):
        return f"reported {health}; the strict health policy asks healthy only"
    return ""


async def quote(
    chain: Chain,
    bids: pd.DataFrame,
    stats: pd.DataFrame,
    strategy: Strategy,
    *,
    duration_s: int | None = None,
    tokens: int | None = None,
    default_duration_s: int,
    direct_payment: bool = False,
) -> pd.DataFrame:
    """One row per bid of `bids` (a `wb.bids(model)` frame, with `health`): what opening a
    session on it would move, eligible bids first, cheapest stake first.

    The session lasts `duration_s` seconds, or long enough for `tokens` completion tokens at
    the provider's measured speed (`stats`' `tps`; `default_duration_s` where unmeasured),
    within the contract's limits; with neither, `natural_duration`. Columns (MOR floats, the
    exact wei beside them): `stake` (what the open moves from the wallet, to the wei),
    `returned_at_close` and `held_at_close` (a natural close on its end day; held until
    `held_until`, a UTC datetime, then withdrawn), `session_cost` (what the provider earns
    over the whole session: paid from the stake in direct-payment mode, from the protocol's
    compute budget in staking mode), `tps` and `mor_per_1k_tokens`, the reported `health`,
    and `excluded` with `why`. The hold is converted at today's rate (paying providers moves
    it a little by the close). Raises `ConfigurationError` for a duration outside the
    contract's limits, or both `duration_s` and `tokens`."""
    if duration_s is not None and tokens is not None:
        raise ConfigurationError("pass duration=… or tokens=…, not both")
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
    ):
        raise ConfigurationError(f"tokens={tokens!r} is not a number of tokens: pass e.g. 2000")
    now = await chain.block_timestamp()
    limits = shortest, longest = await chain.read_many(
        [Call("MIN_SESSION_DURATION"), Call("getMaxSessionDuration")]
    )
    if duration_s is not None and not shortest <= duration_s <= longest:
        raise ConfigurationError(
            f"a session of {duration_s} s is outside this marketplace's limits: ask for "
            f"{shortest} to {longest} s"
        )
    measured = zip(stats["model"], stats["provider"], stats["tps"], strict=True)
    speed = {(m, p.lower()): t for m, p, t in measured}
    rows = await asyncio.gather(
        *(
            _row(
                chain,
                row,
                strategy,
                speed.get((row.model, row.provider.lower()), float("nan")),
                _seconds(duration_s, tokens, speed, row, default_duration_s, now, limits),
                now,
                direct_payment,
            )
            for row in bids.itertuples()
        )
    )
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    for name in ("held_until", "ends_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    for name in ("stake_wei", "returned_wei", "held_wei", "session_cost_wei"):
        frame[name] = frame[name].astype(object)
    if rows:
        frame = frame.sort_values(["excluded", "stake"], kind="stable")
    return frame.reset_index(drop=True)


def _seconds(
    duration_s: int | None,
    tokens: int | None,
    speed: dict[tuple[str, str], float],
    row: Any,
    default_s: int,
    now: int,
    limits: tuple[int, int],
) -> int:
    """A row's session length (s): as asked, for `tokens` at its measured speed, or natural."""
    shortest, longest = limits
    if duration_s is not None:
        return duration_s
    if tokens is None:
        return natural_duration(now, default_s, shortest)
    tps = speed.get((row.model, row.provider.lower()), 0.0)
    if not tps or math.isnan(tps):
        return default_s
    return min(max(math.ceil(tokens / tps), shortest), longest)


async def _row(
    chain: Chain,
    row: Any,
    strategy: Strategy,
    tps: float,
    duration_s: int,
    now: int,
    direct: bool,
) -> dict[str, Any]:
    price = int(row.price_per_second_wei)
    stake = await deposit_for(chain, price, duration_s)
    ends_at = await chain.call("getSessionEnd", stake, price, now)
    end_day = ends_at - ends_at % DAY_S
    earned = (ends_at - now) * price
    refund = stake - (earned if direct else 0)
    used_on_end_day = (ends_at - max(now, end_day)) * price
    held = min(refund, await chain.call("stipendToStake", used_on_end_day, end_day))
    excluded = _excluded(row, strategy)
    return {
        "model": row.model,
        "provider_short": row.provider_short,
        "id_short": row.id_short,
        "price_per_second": mor(price),
        "duration_s": ends_at - now,
        "stake": mor(stake),
        "returned_at_close": mor(refund - held),
        "held_at_close": mor(held),
        "held_until": when(end_day + DAY_S) if held else pd.NaT,
        "session_cost": mor(earned),
        "tps": tps,
        "mor_per_1k_tokens": mor_per_1k_tokens(price, tps),
        "health": getattr(row, "health", "not reported"),
        "excluded": bool(excluded),
        "why": excluded,
        "ends_at": when(ends_at),
        "id": row.id,
        "provider": row.provider,
        "stake_wei": stake,
        "returned_wei": refund - held,
        "held_wei": held,
        "session_cost_wei": earned,
    }
