"""What the sandbox marketplace holds: accounts, models, providers and their bids."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eth_utils import keccak

from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer

__all__ = ["MODELS", "PROVIDERS", "ModelSpec", "ProviderSpec", "seed_market"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    tags: tuple[str, ...]
    base_price_per_second: int  # MOR wei per second for a "balanced" provider


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    profile: str  # latency profile of its simulated model server
    price_factor: float  # multiplies each model's base price
    stake: int = 200 * MOR


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("llama-3.2", ("llm", "chat", "small"), 2 * 10**13),
    ModelSpec("qwen-2.5-coder", ("llm", "code"), 3 * 10**13),
    ModelSpec("mistral-small", ("llm", "chat"), 4 * 10**13),
    ModelSpec("deepseek-r1", ("llm", "reasoning"), 8 * 10**13),
    # as the live network lists them: a web-search variant is a model of its own named
    # "<model>:web" (gateway models/prod_model_price.json), tagged as the gateway's
    # src/core/model_types.py reads it; an embedding model tagged "Embeddings"
    ModelSpec("llama-3.2:web", ("llm", "chat", "web-search-enabled"), 3 * 10**13),
    ModelSpec("text-embedding-bge-m3", ("Embeddings",), 5 * 10**12),
)
PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec("fast", "fast", 1.5),
    ProviderSpec("balanced", "balanced", 1.0),
    ProviderSpec("budget", "slow", 0.6),
)
CONSUMER_MOR = 10_000 * MOR
PROVIDER_MOR = 1_000 * MOR
ETH_EACH = 1_000 * 10**18


def base_model_id(name: str) -> bytes:
    """The base model id registered for a model name (keccak of the name)."""
    return keccak(text=name)


async def seed_market(
    chain: Chain,
    owner: Signer,
    consumer: Signer,
    providers: list[tuple[Signer, ProviderSpec, str]],
    models: tuple[ModelSpec, ...] = MODELS,
) -> None:
    """Fund the accounts, register the models, the providers (at `endpoint`) and their bids."""
    everyone = [owner, consumer, *(p for p, _, _ in providers)]
    await chain.rpc.batch([("anvil_setBalance", [s.address, hex(ETH_EACH)]) for s in everyone])
    token = chain.deployment.token
    diamond = chain.deployment.diamond
    await chain.transact(owner, "transfer", consumer.address, CONSUMER_MOR, to=token)
    for provider, _, _ in providers:
        await chain.transact(owner, "transfer", provider.address, PROVIDER_MOR, to=token)
    min_stake = await chain.call("getModelMinimumStake")
    for model in models:
        await chain.transact(
            owner,
            "modelRegister",
            owner.address,
            base_model_id(model.name),
            keccak(text=f"ipfs:{model.name}"),
            0,
            min_stake,
            model.name,
            list(model.tags),
        )
    model_ids = [
        await chain.call("getModelId", owner.address, base_model_id(m.name)) for m in models
    ]

    async def register(provider: Signer, spec: ProviderSpec, endpoint: str) -> None:
        await chain.transact(provider, "approve", diamond, 2**256 - 1, to=token)
        await chain.transact(provider, "providerRegister", provider.address, spec.stake, endpoint)
        for model, model_id in zip(models, model_ids, strict=True):
            price = int(model.base_price_per_second * spec.price_factor)
            await chain.transact(provider, "postModelBid", provider.address, model_id, price)

    await asyncio.gather(*(register(p, spec, ep) for p, spec, ep in providers))
