"""Dicts that a person can read: `wb.balance()`, `stream.info` and `Session.info()`.

Each is a plain dict of the exact values (floats in MOR or ETH, seconds, full addresses and
ids, UTC datetimes) that code indexes as before; only its display changes: `repr()`, IPython's
pretty printer and the notebook's HTML show MOR and ETH rounded with their units, times in
ms or UTC, and addresses and ids short (0x1234…abcd).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from mor_workbench.market.tables import short

__all__ = ["Balance", "CallInfo", "Readout", "SessionInfo", "call_footer"]


def call_footer(
    info: dict[str, Any], usage: dict[str, int] | None = None, *, model: str | None = None
) -> str:
    """One line under an answer, the same on every surface (`%%mor`, the Chat widget): model
    (when given), provider, session, TTFT (streamed answers only), tokens/s labelled with what
    it is measured over, tokens, MOR cost, failovers. `info` is a call's record
    (`stream.info`), `usage` its OpenAI usage when known."""
    usage = usage or {}
    parts = [model] if model else []
    provider = info.get("provider") or ""
    if provider == "gateway":
        parts.append("via the gateway")
    elif provider:
        parts.append(f"provider {short(provider)}")
    if info.get("session_id"):
        parts.append(f"session {short(info['session_id'])}")
    if info.get("ttft_s") is not None:
        parts.append(f"TTFT {info['ttft_s']:.2f} s")
    if info.get("tokens_per_s") is not None:
        over = "generation" if info.get("tokens_per_s_basis") == "generation" else "end to end"
        parts.append(f"{info['tokens_per_s']:.1f} tokens/s ({over})")
    completion = usage.get("completion_tokens", info.get("completion_tokens", 0))
    prompt = usage.get("prompt_tokens", 0)
    parts.append(f"{prompt} + {completion} tokens" if prompt else f"{completion} tokens")
    if info.get("cost_mor") is not None and provider != "gateway":
        cost = np.format_float_positional(info["cost_mor"], precision=3, fractional=False)
        parts.append(f"{cost.rstrip('.')} MOR")
    failovers = len(info.get("failovers") or ())
    if failovers:
        parts.append(f"{failovers} failover{'s' if failovers > 1 else ''}")
    return " | ".join(parts)


def short_hex(value: str) -> str:
    """`0x1234…abcd` for a long hex address or id; any other text as it is."""
    return short(value) if value.startswith("0x") else value


def amount(value: float, unit: str) -> str:
    """A MOR or ETH amount rounded for reading, trailing zeros dropped: 4 decimals from 1 up,
    6 below, 5 significant digits below 0.0001: `10,000 MOR`, `0.000123 MOR`, `3.2e-09 MOR`."""
    if value == 0:
        return f"0 {unit}"
    if abs(value) < 1e-4:
        return f"{value:.5g} {unit}"
    digits = 4 if abs(value) >= 1 else 6
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".") + f" {unit}"


def _generic(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return short_hex(value)
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


Formats = dict[str, Callable[[Any], str]]  # key -> how its value is displayed


class Readout(dict[str, Any]):
    """A dict of exact values with a readable display. Subclasses name themselves (`title`)
    and say how to show each key (`formats`: key -> function of the value)."""

    title: ClassVar[str] = "Readout"
    formats: ClassVar[Formats] = {}

    def shown(self) -> list[tuple[str, str]]:
        """(key, value as displayed) for every key, in order."""
        return [(k, self.formats.get(k, _generic)(v)) for k, v in self.items()]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.shown())
        return f"{self.title}({inner})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        if cycle:
            printer.text(f"{self.title}(…)")
            return
        rows = self.shown()
        width = max((len(k) for k, _ in rows), default=0)
        printer.text(self.title)
        for key, value in rows:
            printer.break_()
            printer.text(f"  {key:<{width}}  {value}")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='text-align:left'><code>{html.escape(k)}</code></td>"
            f"<td style='text-align:right'>{html.escape(v)}</td></tr>"
            for k, v in self.shown()
        )
        return f"<table><caption>{html.escape(self.title)}</caption>{rows}</table>"


def _mor(value: float) -> str:
    return amount(value, "MOR")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _failovers(value: list[dict[str, str]]) -> str:
    return (
        "none"
        if not value
        else "; ".join(f"{short_hex(f['provider'])}: {f['reason']}" for f in value)
    )


class Balance(Readout):
    """`wb.balance()`: ETH, MOR, staked, on hold (all, and available now) and allowance."""

    title: ClassVar[str] = "Balance"
    formats: ClassVar[Formats] = {
        "eth": lambda v: amount(v, "ETH"),
        "mor": _mor,
        "mor_staked": _mor,
        "mor_on_hold_available": _mor,
        "mor_on_hold": _mor,
        "mor_allowance": _mor,
    }


class CallInfo(Readout):
    """`stream.info`: how one call went (provider, session, TTFT, speed, tokens, cost)."""

    title: ClassVar[str] = "CallInfo"
    formats: ClassVar[Formats] = {
        "ttft_s": _ms,
        "e2e_s": _ms,
        "tokens_per_s": lambda v: "—" if v is None else f"{v:,.1f} tokens/s",
        "cost_mor": _mor,
        "failovers": _failovers,
    }


class SessionInfo(Readout):
    """`Session.info()`: the session's id, model, provider, bid, price, endpoint and end."""

    title: ClassVar[str] = "SessionInfo"
    formats: ClassVar[Formats] = {"price_per_second": lambda v: amount(v, "MOR/s")}
