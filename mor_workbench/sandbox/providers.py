"""The sandbox's providers: each a real provider router in front of its own simulated model
server with its own latency profile, registered on chain at the port it listens on."""

from __future__ import annotations

from contextlib import AsyncExitStack

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.sandbox.market import MODELS, PROVIDERS, base_model_id
from mor_workbench.sandbox.model_server import ModelServer

__all__ = ["run_providers"]


async def run_providers(
    chain: Chain,
    owner: str,
    keys: dict[str, str],
    stack: AsyncExitStack,
    *,
    claim_interval: float = 5.0,
) -> list[ProviderServer]:
    """Start every sandbox provider (closed with `stack`) and point its chain endpoint at it."""
    model_ids = [await chain.call("getModelId", owner, base_model_id(m.name)) for m in MODELS]
    servers = []
    for spec in PROVIDERS:
        signer = Signer(keys[spec.name])
        backend = await stack.enter_async_context(
            ModelServer([m.name for m in MODELS], profile=spec.profile)
        )
        configs = [
            ModelConfig(
                model_id, m.name, backend.base_url + "/chat/completions", concurrent_slots=32
            )
            for m, model_id in zip(MODELS, model_ids, strict=True)
        ]
        server = await stack.enter_async_context(
            ProviderServer(
                signer=signer, chain=chain, models=configs, claim_interval=claim_interval
            )
        )
        registered = await chain.call("getProvider", signer.address)
        if registered["endpoint"] != server.endpoint:
            await chain.transact(signer, "providerRegister", signer.address, 0, server.endpoint)
        servers.append(server)
    return servers
