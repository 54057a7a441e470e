"""`connect()` and the workbench: one object that reaches the marketplace of one network.

`AsyncWorkbench` holds the implementation; `Workbench` is its synchronous twin, running the
same coroutines on a background loop so it also works inside Jupyter.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from mor_workbench import sandbox
from mor_workbench._portal import portal
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer, load_signer
from mor_workbench.chain.networks import get_network
from mor_workbench.chain.rpc import RpcClient, redact_url
from mor_workbench.errors import ChainError, ConfigurationError
from mor_workbench.market import tables

__all__ = ["AsyncWorkbench", "Workbench", "aconnect", "connect"]

RPC_URL_ENV = "MOR_RPC_URL"


class AsyncWorkbench:
    """The marketplace of one network, seen from one account (or read-only without one)."""

    def __init__(self, network: str, chain: Chain, account: Signer | None) -> None:
        self.network = network
        self.chain = chain
        self.account = account

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
        """Active bids of `model` (name or id), or of every model."""
        return await tables.bids(self.chain, model)

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
        """Detach from the network (a sandbox keeps running for the next connect)."""
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
        return AsyncWorkbench("sandbox", Chain(RpcClient(info.rpc_url), info.deployment), account)
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
    return AsyncWorkbench(network, chain, account)


def connect(network: str = "sandbox", **options: Any) -> Workbench:
    """A `Workbench` on `network`; see `aconnect` for the options."""
    return Workbench(portal().run(aconnect(network, **options)))
