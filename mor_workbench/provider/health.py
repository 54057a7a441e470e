"""The provider's model health report, as live providers publish it in their pong since
proxy-router v7.4 (PRs #772, #773, #781; statuses of #836).

A probe sweep reads this provider's active bids on chain and sends one cheap request (one
token: a one-token chat completion, or for an embedding model the embedding of one word) to the
backend of each configured model that has an active bid. The report is the union
of configured models and bid models:

- `healthy`: the backend answered the probe;
- `degraded`: it answered 429 (rate-limited: up and configured, only throttled);
- `unhealthy`: any other error, with a coarse `errorKind` (`bad_response`, `timeout`,
  `unreachable`) and the backend's `httpStatus` when it answered; backend URLs and error texts
  never leave the provider;
- `no_bid`: a configured model with no active bid of this provider;
- `no_model_configured`: a bid of this provider on a model it has no backend for.

Sweeps run every `interval_s` seconds, `probe_delay_s` apart between probes (the live default
pacing is 2 s, `MODEL_HEALTH_CHECK_PROBE_DELAY`), and on demand with `refresh()`.

Live traffic counts too, as on live providers since v7.5 (PRs #812/#813): after
`MAX_CONSECUTIVE_ERRORS` (3, the live `MODEL_HEALTH_MAX_CONSECUTIVE_ERRORS`) backend failures
in a row on real prompts (5xx, no answer, a timeout; not a 4xx, which is the request's fault,
nor a 429, which is throttling) a model is published `unhealthy` with the last failure's kind
and status, without waiting for the next sweep; one answered prompt, or a sweep whose probe
answers, clears it (`observe`, `published`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from mor_workbench._tasks import cancel_and_wait
from mor_workbench.chain import listings
from mor_workbench.chain.client import Call, Chain
from mor_workbench.errors import MorError
from mor_workbench.protocol.messages import ModelHealth
from mor_workbench.provider.config import ModelConfig

__all__ = ["MAX_CONSECUTIVE_ERRORS", "HealthProbe", "probe_backend"]

MAX_CONSECUTIVE_ERRORS = 3
"""Backend failures in a row on live traffic that flip a model to unhealthy (the live
`MODEL_HEALTH_MAX_CONSECUTIVE_ERRORS` default)."""

log = logging.getLogger("mor_workbench.provider")


async def probe_backend(
    model: ModelConfig, http: httpx.AsyncClient, timeout_s: float
) -> tuple[str, str, int]:
    """One cheap request to `model`'s backend (a one-token chat completion, or the embedding of
    one word for a model that serves embeddings): (status, errorKind, HTTP status), e.g.
    ("healthy", "", 200), ("degraded", "rate_limited", 429)."""
    headers = {"authorization": f"Bearer {model.api_key}"} if model.api_key else {}
    body: dict[str, Any] = {"model": model.model_name}
    if model.serves_embeddings:
        body["input"] = "ping"
        answered = "data"  # the member a good answer has
    else:
        body.update(messages=[{"role": "user", "content": "ping"}], max_tokens=1, stream=False)
        answered = "choices"
    try:
        response = await http.post(model.api_url, json=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        return "unhealthy", "timeout", 0
    except httpx.HTTPError:
        return "unhealthy", "unreachable", 0
    if response.status_code == 429:
        return "degraded", "rate_limited", 429
    if response.status_code >= 400:
        return "unhealthy", "bad_response", response.status_code
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get(answered), list):
        return "unhealthy", "bad_response", response.status_code
    return "healthy", "", response.status_code


class HealthProbe:
    """The health report of the provider `address` serving `models` (keyed by on-chain id)."""

    def __init__(
        self,
        *,
        chain: Chain,
        address: str,
        models: dict[bytes, ModelConfig],
        http: httpx.AsyncClient,
        interval_s: float = 60.0,
        probe_delay_s: float = 0.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.chain = chain
        self.address = address
        self.models = models
        self.http = http
        self.interval_s = interval_s
        self.probe_delay_s = probe_delay_s
        self.timeout_s = timeout_s
        self.report: tuple[ModelHealth, ...] | None = None  # None until the first sweep
        self._streaks: dict[bytes, int] = {}  # backend failures in a row on live traffic
        self._failing: dict[bytes, tuple[str, int]] = {}  # flipped: (errorKind, httpStatus)
        self._sweeping = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def observe(self, model_id: bytes, failure: tuple[str, int] | None) -> None:
        """Count one live prompt's backend outcome for `model_id`: `failure` is (errorKind,
        httpStatus) of a backend failure (see the module docstring for which count), None for
        an answer. The `MAX_CONSECUTIVE_ERRORS`-th failure in a row flips the model to
        unhealthy in `published()`; an answer clears it."""
        if failure is None:
            self._streaks.pop(model_id, None)
            self._failing.pop(model_id, None)
            return
        self._streaks[model_id] = streak = self._streaks.get(model_id, 0) + 1
        if streak >= MAX_CONSECUTIVE_ERRORS:
            self._failing[model_id] = failure

    def published(self) -> tuple[ModelHealth, ...] | None:
        """The report the pong carries: the last sweep's, with models failing on live traffic
        marked unhealthy (entries of their own when no sweep has run); None when there is
        neither."""
        if not self._failing:
            return self.report
        entries = {e.model_id: e for e in self.report or ()}
        for model_id, (kind, http) in self._failing.items():
            known = entries.get(model_id)
            bid_id, name = (known.bid_id, known.model_name) if known else (b"", "")
            if not name and model_id in self.models:
                name = self.models[model_id].model_name
            entries[model_id] = ModelHealth(model_id, "unhealthy", bid_id, name, kind, http)
        return tuple(entries[k] for k in sorted(entries))

    async def refresh(self) -> tuple[ModelHealth, ...]:
        """Sweep now (a sweep already running is waited for, not stacked) and return the report.
        Raises `MorError` when the chain cannot be read (the last report stays)."""
        async with self._sweeping:
            bids = await self._active_bids()
            names = await self._chain_names(set(bids) | set(self.models))
            entries: list[ModelHealth] = []
            probed = 0
            for model_id in sorted(set(bids) | set(self.models)):
                bid_id, name = bids.get(model_id, b""), names.get(model_id, "")
                config = self.models.get(model_id)
                if config is None:
                    entries.append(ModelHealth(model_id, "no_model_configured", bid_id, name))
                    continue
                if not bid_id:
                    entries.append(ModelHealth(model_id, "no_bid", b"", name))
                    continue
                if probed and self.probe_delay_s:
                    await asyncio.sleep(self.probe_delay_s)
                probed += 1
                status, kind, http = await probe_backend(config, self.http, self.timeout_s)
                if status == "healthy":  # the backend answers again: live failures are past
                    self.observe(model_id, None)
                entries.append(ModelHealth(model_id, status, bid_id, name, kind, http))
            self.report = tuple(entries)
            return self.report

    async def _active_bids(self) -> dict[bytes, bytes]:
        """This provider's most recent active bid per model id."""
        (bid_ids,) = await listings.listing(self.chain, "getProviderActiveBids", [(self.address,)])
        found = listings.check(await self.chain.read_many([Call("getBid", (b,)) for b in bid_ids]))
        latest: dict[bytes, tuple[int, bytes]] = {}
        for bid_id, bid in zip(bid_ids, found, strict=True):
            if latest.get(bid["modelId"], (-1, b""))[0] < bid["createdAt"]:
                latest[bid["modelId"]] = (bid["createdAt"], bid_id)
        return {model_id: bid_id for model_id, (_, bid_id) in latest.items()}

    async def _chain_names(self, model_ids: set[bytes]) -> dict[bytes, str]:
        found: dict[bytes, Any] = await listings.models_by_id(self.chain, sorted(model_ids))
        return {i: m["name"] for i, m in found.items() if isinstance(m, dict) and m.get("name")}

    def start(self) -> None:
        """Sweep now and then every `interval_s` seconds, in the background."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except MorError as exc:  # the chain unreadable: keep the last report, say why
                log.warning("model health sweep failed (%s); keeping the last report", exc)
            await asyncio.sleep(self.interval_s)
