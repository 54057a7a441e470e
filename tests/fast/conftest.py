"""The fast layer: the real router, protocol, journal and contracts, with the providers in
memory (`MockTransport` + `memory_peers.MemoryProvider`) instead of processes on sockets.

One anvil with our contracts and a market of three providers on one model is started for the
whole run; every test starts from the same chain state (an evm_snapshot taken after seeding,
reverted after each test), with its own RPC client, journal and in-memory providers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from memory_peers import MemoryProvider

from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain, Deployment
from mor_workbench.chain.deploy import deploy_marketplace
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import Router
from mor_workbench.router.strategy import Strategy
from mor_workbench.router.transport import MockTransport, PeerHandler
from mor_workbench.sandbox.market import MODELS, ProviderSpec, ServiceRecord, seed_market

MODEL = "llama-3.3-70b"
# No service record: the reference score is then 1/price, so the cheapest ranks first.
NEW = ServiceRecord(receipts=0)
PROVIDERS = (
    ProviderSpec("first", "fast", 0.5, record=NEW),
    ProviderSpec("second", "fast", 1.0, record=NEW),
    ProviderSpec("third", "fast", 2.0, record=NEW),
)


@dataclass(frozen=True)
class Market:
    """The session's chain: where it listens, what is deployed, who is who."""

    rpc_url: str
    deployment: Deployment
    consumer: Signer
    providers: dict[str, tuple[Signer, str]]  # name -> (key, endpoint registered on chain)


def _key() -> Signer:
    return Signer(Account.create().key)


@pytest.fixture(scope="session")
def market() -> Iterator[Market]:
    node = Anvil()
    node.start()

    async def seed() -> Market:
        rpc = RpcClient(node.url)
        try:
            owner, consumer = _key(), _key()
            await rpc.request("anvil_setBalance", [owner.address, hex(10**21)])
            deployment = await deploy_marketplace(rpc, owner)
            providers = {s.name: (_key(), f"{s.name}.memory:1") for s in PROVIDERS}
            listed = [(providers[s.name][0], s, providers[s.name][1]) for s in PROVIDERS]
            chain = Chain(rpc, deployment)
            await seed_market(chain, owner, consumer, listed, models=(MODELS[0],))
            return Market(node.url, deployment, consumer, providers)
        finally:
            await rpc.aclose()

    try:
        yield asyncio.run(seed())
    finally:
        node.stop()


@pytest.fixture
async def chain(market: Market) -> AsyncIterator[Chain]:
    """A client of the market's chain; whatever the test does to the chain is undone after."""
    rpc = RpcClient(market.rpc_url)
    snapshot = await rpc.request("evm_snapshot", [])
    try:
        yield Chain(rpc, market.deployment)
    finally:
        await rpc.request("evm_revert", [snapshot])
        await rpc.aclose()


@pytest.fixture
def routes() -> dict[str, PeerHandler]:
    """Endpoint -> in-memory provider: what the router's transport reaches."""
    return {}


@pytest.fixture
def providers(market: Market, chain: Chain, routes) -> dict[str, MemoryProvider]:
    """The market's three providers, up and answering, by name (best ranked: "first")."""
    return {
        name: MemoryProvider(signer, endpoint, chain, routes)
        for name, (signer, endpoint) in market.providers.items()
    }


@pytest.fixture
def make_router(market: Market, chain: Chain, routes, tmp_path: Path) -> Callable[..., Router]:
    """A router of the consumer on the market over the in-memory transport; its journal at
    `journal` (default: this test's one journal file). A second router on the same file is
    the next process; pass `chain=` a fresh `Chain` for a fresh nonce cache."""

    def build(journal: Path | None = None, *, on: Chain | None = None, **options) -> Router:
        return Router(
            on or chain,
            market.consumer,
            SessionJournal(journal or tmp_path / "journal.sqlite3"),
            strategy=Strategy(order="best"),
            transport=MockTransport(routes),
            **options,
        )

    return build
