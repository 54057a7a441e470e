"""What the sandbox marketplace holds: accounts, models, providers, their bids and a short
service record per provider (closed sessions on chain, so the reference score has stats to
read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import active_bids, check
from mor_workbench.errors import ChainError, ContractReverted
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
    "transact_many",
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
SEED_GAS = 2_000_000  # gas limit of each seeding transaction (the unused part is not charged)
SEND_BATCH = 500  # signed transactions per JSON-RPC batch


def base_model_id(name: str) -> bytes:
    """The base model id registered for a model name (keccak of the name)."""
    return keccak(text=name)


async def transact_many(
    chain: Chain, calls: Sequence[tuple[Signer, Call]], *, timestamp: int | None = None
) -> list[dict[str, Any]]:
    """Send each call as a transaction of its signer, `SEND_BATCH` to a block: signed here with
    nonces counted locally, sent in one JSON-RPC batch per block without waiting for each
    receipt, then mined at once (anvil's automine paused and its block gas limit raised to
    hold them, both restored after). A signer's calls run in the order given. `timestamp`
    (s): the blocks', e.g. the last block's again. Anvil only (evm_setAutomine, evm_mine).

    Returns the receipts in order; raises `ContractReverted` naming the first call that
    reverted, `ChainError` when the node refuses a transaction.
    """
    if not calls:
        return []
    rpc = chain.rpc
    senders = sorted({signer.address for signer, _ in calls})
    block, *counts = await rpc.batch(
        [("eth_getBlockByNumber", ["latest", False])]
        + [("eth_getTransactionCount", [a, "pending"]) for a in senders]
    )
    nonces = {a: int(n, 16) for a, n in zip(senders, check(counts), strict=True)}
    tip = 10**9
    max_fee = 2 * int(block.get("baseFeePerGas", "0x0"), 16) + tip
    raws = []
    for signer, call in calls:
        to, data = chain.encode_call(call)
        nonce = nonces[signer.address]
        nonces[signer.address] = nonce + 1
        raws.append(
            "0x"
            + signer.sign_transaction(
                {
                    "chainId": chain.deployment.chain_id,
                    "nonce": nonce,
                    "gas": SEED_GAS,
                    "maxPriorityFeePerGas": tip,
                    "maxFeePerGas": max_fee,
                    "type": 2,
                    "to": to,
                    "data": data,
                    "value": 0,
                }
            ).hex()
        )
    await rpc.batch(
        [("evm_setAutomine", [False]), ("anvil_setBlockGasLimit", [hex(SEED_GAS * SEND_BATCH)])]
    )
    receipts: list[dict[str, Any]] = []
    try:
        for start in range(0, len(raws), SEND_BATCH):
            sent = await rpc.batch(
                [("eth_sendRawTransaction", [r]) for r in raws[start : start + SEND_BATCH]]
            )
            for (_, call), reply in zip(calls[start:], sent, strict=False):
                if isinstance(reply, Exception):
                    raise ChainError(f"{call.fn}: the node refused the transaction: {reply}")
            if timestamp is not None:
                await rpc.request("evm_setNextBlockTimestamp", [timestamp])
            await rpc.request("evm_mine", [])
            receipts += await rpc.batch([("eth_getTransactionReceipt", [h]) for h in sent])
    finally:
        await rpc.batch(
            [("anvil_setBlockGasLimit", [block["gasLimit"]]), ("evm_setAutomine", [True])]
        )
    for (_, call), receipt in zip(calls, receipts, strict=True):
        if not isinstance(receipt, dict):
            raise ChainError(f"{call.fn}: the transaction was not mined in its seeding block")
        if int(receipt["status"], 16) != 1:
            raise ContractReverted(
                f"{call.fn} reverted on chain (transaction {receipt['transactionHash']})"
            )
    return receipts


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
    await transact_many(
        chain,
        [(owner, Call("transfer", (consumer.address, CONSUMER_MOR), to=token))]
        + [(owner, Call("transfer", (p.address, PROVIDER_MOR), to=token)) for p, _, _ in providers],
    )
    min_stake = await chain.call("getModelMinimumStake")
    await transact_many(
        chain,
        [
            (
                owner,
                Call(
                    "modelRegister",
                    (
                        owner.address,
                        base_model_id(m.name),
                        keccak(text=f"ipfs:{m.name}"),
                        0,
                        min_stake,
                        m.name,
                        list(m.tags),
                    ),
                ),
            )
            for m in models
        ],
    )
    model_ids = check(
        await chain.read_many(
            [Call("getModelId", (owner.address, base_model_id(m.name))) for m in models]
        )
    )
    listing: list[tuple[Signer, Call]] = []
    for provider, spec, endpoint in providers:
        listing.append((provider, Call("approve", (diamond, 2**256 - 1), to=token)))
        listing.append(
            (provider, Call("providerRegister", (provider.address, spec.stake, endpoint)))
        )
        for model, model_id in zip(models, model_ids, strict=True):
            price = int(model.base_price_per_second * spec.price_factor)
            listing.append((provider, Call("postModelBid", (provider.address, model_id, price))))
    await transact_many(chain, listing)
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
    now = await chain.block_timestamp()
    deposits: dict[int, int] = {}  # by price per second: sessions of 300 s
    opens: list[tuple[Signer, Call]] = []
    records: list[tuple[Signer, ProviderSpec]] = []  # who signs each session's receipt
    for bid_id, bid in await active_bids(chain, model_ids):
        if bid["provider"] not in keys:
            continue
        provider, spec = keys[bid["provider"]]
        price = bid["pricePerSecond"]
        if price not in deposits:
            deposits[price] = await deposit_for(chain, price, 300)
        record = spec.record
        for index in range(record.receipts + record.disputes):
            # in ms (the contract reads both), a distinct approval for each of the bid's sessions
            approval = encode_approval(Approval(bid_id, chain_id, user.address, now * 1000 + index))
            signature = eth_sign(approval, provider.signing_key)
            opens.append(
                (
                    user,
                    Call(
                        "openSession",
                        (user.address, deposits[price], False, approval, signature),
                    ),
                )
            )
            records.append((provider if index < record.receipts else user, spec))
    # opened and closed in one second: every record has the same (zero) duration, not one that
    # depends on where the wall clock's second boundaries fell
    opened = await transact_many(chain, opens, timestamp=now)
    closes = []
    for receipt, (signed_by, spec) in zip(opened, records, strict=True):
        profile = PROFILES[spec.profile]
        session_id = opened_session_id(chain, receipt)
        payload = encode_receipt(
            Receipt(
                session_id,
                chain_id,
                now,
                int(profile.tokens_per_second * 1000),
                int(profile.ttft_s * 1000),
            )
        )
        signature = eth_sign(payload, signed_by.signing_key)
        closes.append((user, Call("closeSession", (payload, signature))))
    await transact_many(chain, closes, timestamp=now)
