"""`connect()` and the workbench: one object that reaches the marketplace of one network.

`AsyncWorkbench` holds the implementation; `Workbench` is its synchronous twin, running the
same coroutines on a background loop so it also works inside Jupyter.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pandas as pd

from mor_workbench import sandbox
from mor_workbench._portal import portal
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer, load_signer
from mor_workbench.chain.networks import get_network
from mor_workbench.chain.rpc import RpcClient, redact_url
from mor_workbench.errors import ChainError, ConfigurationError, MorError
from mor_workbench.market import tables
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import Router, rank_bids
from mor_workbench.sandbox.paths import workbench_home
from mor_workbench.session import AsyncSession, Session, parse_duration

__all__ = ["AsyncWorkbench", "Workbench", "aconnect", "connect"]

RPC_URL_ENV = "MOR_RPC_URL"


class AsyncWorkbench:
    """The marketplace of one network, seen from one account (or read-only without one)."""

    def __init__(self, network: str, chain: Chain, account: Signer | None) -> None:
        self.network = network
        self.chain = chain
        self.account = account
        self._router: Router | None = None
        self._sessions: dict[str, AsyncSession] = {}  # open sessions by model, for reuse

    @property
    def router(self) -> Router:
        """The router for this account (sessions are journaled per chain and account)."""
        if self.account is None:
            raise ConfigurationError(
                "a read-only workbench cannot open sessions: connect with key=… or MOR_PRIVATE_KEY"
            )
        if self._router is None:
            name = f"{self.chain.deployment.chain_id}-{self.account.address}.sqlite3"
            journal = SessionJournal(workbench_home() / "journal" / name)
            self._router = Router(self.chain, self.account, journal)
        return self._router

    async def recover(self) -> dict[str, int]:
        """Settle what an earlier process of this account left (run by connect): sessions
        still open are closed and released on-hold stakes withdrawn. Failures only warn."""
        if self.account is None:
            return {}
        try:
            return await self.router.recover()
        except MorError as exc:
            warnings.warn(f"could not settle earlier sessions yet: {exc}", stacklevel=2)
            return {}

    async def open_session(
        self, model: str, *, duration: str | int = "10m", direct_payment: bool = False
    ) -> AsyncSession:
        """Open a session for `model` with the best provider that accepts."""
        opened = await self.router.open(
            model, parse_duration(duration), direct_payment=direct_payment
        )
        return AsyncSession(self.router, opened, model)

    async def _session_for(self, model: str) -> AsyncSession:
        session = self._sessions.get(model)
        if session is None or session.closed or session.ends_at.timestamp() < time.time() + 30:
            session = await self.open_session(model)
            self._sessions[model] = session
        return session

    async def stream(
        self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any
    ) -> AsyncIterator[str]:
        """Text deltas; opens (or reuses) this workbench's session for `model`."""
        session = await self._session_for(model)
        async for delta in session.stream(prompt, **params):
            yield delta

    async def chat(self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any) -> str:
        """The answer as a string; opens (or reuses) this workbench's session for `model`."""
        return await (await self._session_for(model)).chat(prompt, **params)

    async def balance(self, user: str | None = None) -> dict[str, float]:
        """ETH, MOR, MOR staked in open sessions and MOR on hold (available now / later)."""
        who = user or self.address
        if who is None:
            raise ConfigurationError("a read-only workbench has no account: pass user='0x…'")
        token = self.chain.deployment.token
        eth, mor, (available, hold), sessions = await asyncio.gather(
            self.chain.eth_balance(who),
            self.chain.call("balanceOf", who, to=token),
            self.chain.call("getUserStakesOnHold", who, 255),
            tables.sessions(self.chain, who),
        )
        staked = int(sum(sessions.loc[sessions["is_active"], "stake_wei"])) if len(sessions) else 0
        return {
            "eth": eth / 1e18,
            "mor": mor / 1e18,
            "mor_staked": staked / 1e18,
            "mor_on_hold_available": available / 1e18,
            "mor_on_hold": hold / 1e18,
        }

    async def close_all(self) -> int:
        """Close every open session this account's journal holds (from any process)."""
        for session in self._sessions.values():
            session.closed = True
        self._sessions.clear()
        return await self.router.close_all()

    def __repr__(self) -> str:
        who = self.account.address if self.account else "read-only"
        return (
            f"<{type(self).__name__} {self.network} chain={self.chain.deployment.chain_id} {who}>"
        )

    @property
    def address(self) -> str | None:
        return self.account.address if self.account else None

    async def models(self) -> pd.DataFrame:
        """Active models."""
        return await tables.models(self.chain)

    async def bids(self, model: str | None = None) -> pd.DataFrame:
        """Active bids of `model` (name or id) with each bid's score and its parts, or the bids
        of every model."""
        frame = await tables.bids(self.chain, model)
        if model is None or frame.empty:
            return frame
        scores = {"0x" + b.bid_id.hex(): b.score for b in await rank_bids(self.chain, model)}
        for part in ("score", "raw", "tps", "ttft", "duration", "success", "stake"):
            column = "score" if part == "score" else f"score_{part}"
            frame[column] = [getattr(scores[i], part) for i in frame["id"]]
        return frame

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

    async def close(self) -> None:
        """Close the sessions this workbench opened, then detach (a sandbox keeps running)."""
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()
        await self.chain.rpc.aclose()

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

    def models(self) -> pd.DataFrame:
        return self._portal.run(self._inner.models())

    def bids(self, model: str | None = None) -> pd.DataFrame:
        return self._portal.run(self._inner.bids(model))

    def providers(self) -> pd.DataFrame:
        return self._portal.run(self._inner.providers())

    def sessions(self, user: str | None = None) -> pd.DataFrame:
        return self._portal.run(self._inner.sessions(user))

    def stats(self) -> pd.DataFrame:
        return self._portal.run(self._inner.stats())

    def open_session(self, model: str, **options: Any) -> Session:
        return Session(self._portal.run(self._inner.open_session(model, **options)), self._portal)

    def chat(self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any) -> str:
        return self._portal.run(self._inner.chat(prompt, model=model, **params))

    def stream(
        self, prompt: str | list[dict[str, Any]], *, model: str, **params: Any
    ) -> Iterator[str]:
        return self._portal.iterate(self._inner.stream(prompt, model=model, **params))

    def close_all(self) -> int:
        return self._portal.run(self._inner.close_all())

    def balance(self, user: str | None = None) -> dict[str, float]:
        return self._portal.run(self._inner.balance(user))

    def close(self) -> None:
        self._portal.run(self._inner.close())

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def aconnect(
    network: str = "sandbox",
    *,
    rpc_url: str | list[str] | None = None,
    key: str | None = None,
    keystore: str | os.PathLike[str] | None = None,
    password: str | None = None,
    sandbox_dir: str | os.PathLike[str] | None = None,
) -> AsyncWorkbench:
    """An `AsyncWorkbench` on `network`: "sandbox" (local, started if needed), "base" or
    "base-sepolia" (needs `rpc_url` or $MOR_RPC_URL; a key is optional for read-only use)."""
    if not isinstance(network, str):
        raise ConfigurationError("network must be a name such as 'sandbox' or 'base'")
    if network == "sandbox":
        import asyncio

        info = await asyncio.to_thread(sandbox.start, sandbox_dir)
        account = load_signer(key) if key else info.signer("consumer")
        workbench = AsyncWorkbench(
            "sandbox", Chain(RpcClient(info.rpc_url), info.deployment), account
        )
        await workbench.recover()
        return workbench
    preset = get_network(network)
    urls = rpc_url or os.environ.get(RPC_URL_ENV)
    if not urls:
        raise ConfigurationError(
            f"connecting to {network} needs an RPC URL: "
            f"pass rpc_url='https://…' or set {RPC_URL_ENV}"
        )
    rpc = RpcClient(urls)
    chain = Chain(rpc, preset.deployment)
    try:
        chain_id = await chain.chain_id()
    except ChainError:
        await rpc.aclose()
        raise
    if chain_id != preset.chain_id:
        await rpc.aclose()
        where = ", ".join(redact_url(u) for u in rpc.urls)
        raise ConfigurationError(
            f"{where} serves chain id {chain_id}, but {network} is chain id {preset.chain_id}: "
            f"use an RPC URL for {network}"
        )
    has_key = key or keystore or os.environ.get("MOR_PRIVATE_KEY")
    account = load_signer(key, keystore=keystore, password=password) if has_key else None
    workbench = AsyncWorkbench(network, chain, account)
    await workbench.recover()
    return workbench


def connect(network: str = "sandbox", **options: Any) -> Workbench:
    """A `Workbench` on `network`; see `aconnect` for the options."""
    return Workbench(portal().run(aconnect(network, **options)))
