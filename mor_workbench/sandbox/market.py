"""What the sandbox marketplace holds: accounts, models, providers, their bids and a short
service record per provider (closed sessions on chain, so the reference score has stats to
read)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eth_utils import keccak

from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import active_bids
from mor_workbench.protocol.signing import (
    Approval,
    Receipt,
    encode_approval,
    encode_receipt,
    eth_sign,
)
from mor_workbench.router.peer import deposit_for, opened_session_id
from mor_workbench.sandbox.model_server.profiles import PROFILES

__all__ = [
    "MODELS",
    "PROVIDERS",
    "ModelSpec",
    "ProviderSpec",
    "ServiceRecord",
    "seed_market",
    "seed_service_records",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    tags: tuple[str, ...]
    base_price_per_second: int  # MOR wei per second for a "balanced" provider


@dataclass(frozen=True)
class ServiceRecord:
    """A provider's past on the sandbox chain, per model: sessions closed with its signed
    receipt (its profile's tokens/s and TTFT go on chain as the live routers report them)
    and sessions its user had to close alone (a dispute: the provider failed them).

    Without a past every stat is empty, the reference score is then 1/price, and the
    cheapest, slowest provider ranks first."""

    receipts: int
    disputes: int = 0


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    profile: str  # latency profile of its simulated model server
    price_factor: float  # multiplies each model's base price
    stake: int = 200 * MOR
    record: ServiceRecord = ServiceRecord(receipts=4)


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("llama-3.3-70b", ("llm", "chat", "small"), 2 * 10**13),
    ModelSpec("qwen3-235b", ("llm", "code"), 3 * 10**13),
    ModelSpec("mistral-31-24b", ("llm", "chat"), 4 * 10**13),
    ModelSpec("gpt-oss-120b", ("llm", "reasoning"), 8 * 10**13),
    # as the live network lists them: a web-search variant is a model of its own named
    # "<model>:web" (gateway models/prod_model_price.json), tagged as the gateway's
    # src/core/model_types.py reads it; an embedding model tagged "Embeddings"
    ModelSpec("llama-3.3-70b:web", ("llm", "chat", "web-search-enabled"), 3 * 10**13),
    ModelSpec("text-embedding-bge-m3", ("Embeddings",), 5 * 10**12),
)
PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec("fast", "fast", 1.5, record=ServiceRecord(receipts=5)),
    ProviderSpec("balanced", "balanced", 1.0, record=ServiceRecord(receipts=4, disputes=1)),
    # Cheap, slow, with little at stake (the minimum) and a poor record: the reference score
    # divides by the price, so only a record and a stake this weak rank it below the others.
    ProviderSpec(
        "budget", "slow", 0.6, stake=MOR // 5, record=ServiceRecord(receipts=1, disputes=2)
    ),
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
    await seed_service_records(chain, owner, [(p, spec) for p, spec, _ in providers], model_ids)


async def seed_service_records(
    chain: Chain,
    user: Signer,
    providers: list[tuple[Signer, ProviderSpec]],
    model_ids: list[bytes],
) -> None:
    """Play each provider's `ServiceRecord` on chain for every model: `user` opens a short
    session on its bid (approved by the provider's key) and closes it at once, with the
    provider's receipt carrying its profile's speed, or with its own receipt (a dispute).

    The chain records these as the live contract does (getProviderModelStats, getModelStats);
    the closes return `user`'s stake except the part used today, which stays on hold.
    """
    token, diamond = chain.deployment.token, chain.deployment.diamond
    chain_id = chain.deployment.chain_id
    await chain.transact(user, "approve", diamond, 2**256 - 1, to=token)
    keys = {p.address: (p, spec) for p, spec in providers}
    for bid_id, bid in await active_bids(chain, model_ids):
        if bid["provider"] not in keys:
            continue
        provider, spec = keys[bid["provider"]]
        profile = PROFILES[spec.profile]
        record = spec.record
        for index in range(record.receipts + record.disputes):
            now = await chain.block_timestamp()
            # in ms (the contract reads both), a distinct approval for each of the bid's sessions
            stamp_ms = now * 1000 + index
            approval = encode_approval(Approval(bid_id, chain_id, user.address, stamp_ms))
            deposit = await deposit_for(chain, bid["pricePerSecond"], 300)
            opened = await chain.transact(
                user,
                "openSession",
                user.address,
                deposit,
                False,
                approval,
                eth_sign(approval, provider.private_key_bytes()),
            )
            session_id = opened_session_id(chain, opened)
            signed_by = provider if index < record.receipts else user
            # closed in the second it opened: every record has the same (zero) duration, not
            # one that depends on where the wall clock's second boundaries fell
            opened_at = await chain.block_timestamp()
            await chain.rpc.request("evm_setNextBlockTimestamp", [opened_at])
            receipt = encode_receipt(
                Receipt(
                    session_id,
                    chain_id,
                    opened_at,
                    int(profile.tokens_per_second * 1000),
                    int(profile.ttft_s * 1000),
                )
            )
            signature = eth_sign(receipt, signed_by.private_key_bytes())
            await chain.transact(user, "closeSession", receipt, signature)
