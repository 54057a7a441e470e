"""Shared fixtures: real anvil nodes and isolated sandboxes that end with the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain import listings
from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import Router
from mor_workbench.sandbox.model_server import ModelServer


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A bare anvil node (no contracts) for this test."""
    node = Anvil()
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An isolated sandbox shared by the test session, stopped at the end."""
    directory = tmp_path_factory.mktemp("sandbox")
    sandbox.start(directory)
    yield directory
    sandbox.reset(directory)


@pytest.fixture(scope="session")
def sandbox_info(sandbox_dir: Path) -> sandbox.SandboxInfo:
    info = sandbox.status(sandbox_dir)
    assert info is not None
    return info


@dataclass
class ProviderServers:
    """Provider servers made on demand by a test, all as the sandbox's provider:balanced (its
    stake and its llama-3.3-70b bid on chain) in front of one fast simulated model server:
    `make(kind=ProviderServer, **settings)` starts one, stopped with the test."""

    make: Callable[..., Awaitable[ProviderServer]]
    chain: Chain
    provider: Signer
    model_id: bytes


@pytest.fixture
async def provider_servers(sandbox_info) -> AsyncIterator[ProviderServers]:
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    provider = sandbox_info.signer("provider:balanced")
    model_id, _ = await listings.resolve_model(chain, "llama-3.3-70b")
    backend = ModelServer(["llama-3.3-70b"], profile="fast")
    async with backend, contextlib.AsyncExitStack() as stack:
        config = ModelConfig(model_id, "llama-3.3-70b", backend.base_url + "/chat/completions")

        async def make(
            kind: type[ProviderServer] = ProviderServer, **settings: Any
        ) -> ProviderServer:
            made = kind(
                signer=provider, chain=chain, models=[config], claim_interval=None, **settings
            )
            return await stack.enter_async_context(made)

        yield ProviderServers(make, chain, provider, model_id)
    await chain.rpc.aclose()


@pytest.fixture
async def market(provider_servers, sandbox_info, tmp_path, wire) -> AsyncIterator[dict[str, Any]]:
    """Provider servers on demand (`provider_servers`) and a router of the sandbox's consumer
    over the test module's `wire` (a transport fixture), with a journal of the test's own;
    the router's idle connections are let go at the end."""
    router = Router(
        provider_servers.chain,
        sandbox_info.signer("consumer"),
        SessionJournal(tmp_path / "journal.sqlite3"),
        transport=wire,
    )
    yield {
        "server": provider_servers.make,
        "router": router,
        "wire": wire,
        "provider": provider_servers.provider,
    }
    await router.drain()


@pytest.fixture
def wb(sandbox_info, tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    """A workbench on the shared sandbox, with a journal home of this test's own."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)
    yield workbench
    workbench.close()
