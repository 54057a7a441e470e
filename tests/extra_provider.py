"""An extra provider on a test's sandbox chain, beside the three the sandbox seeds: funded,
staked and registered (or moved to another endpoint), bidding when asked; and an account's
transaction count, which tests compare to show that nothing was sent."""

from __future__ import annotations

import asyncio

from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import resolve_model
from mor_workbench.chain.rpc import RpcClient

STAKE = 200 * MOR
"""What the extra provider stakes at registration (MOR wei)."""


async def register(
    chain: Chain,
    owner: Signer,
    provider: Signer,
    endpoint: str,
    *,
    model: str | None = None,
    price: int | None = None,
    fund: bool = True,
) -> bytes | None:
    """Register `provider` at `endpoint`. With `fund`, it first gets ETH and 300 MOR from
    `owner`, approves the Diamond and stakes `STAKE`; without, it is registered again with no
    new stake (its endpoint moved). With `price` (MOR wei per second) it bids on `model`.
    Returns `model`'s id when one is named."""
    if fund:
        await chain.rpc.request("anvil_setBalance", [provider.address, hex(10**21)])
        token = chain.deployment.token
        await chain.transact(owner, "transfer", provider.address, 300 * MOR, to=token)
        await chain.transact(provider, "approve", chain.deployment.diamond, 2**255, to=token)
    stake = STAKE if fund else 0
    await chain.transact(provider, "providerRegister", provider.address, stake, endpoint)
    if model is None:
        return None
    model_id, _ = await resolve_model(chain, model)
    if price is not None:
        await chain.transact(provider, "postModelBid", provider.address, model_id, price)
    return model_id


def transaction_count(rpc_url: str | list[str], address: str) -> int:
    """How many transactions `address` has sent (its nonce), read on a client of its own."""

    async def ask() -> int:
        rpc = RpcClient(rpc_url)
        try:
            return int(await rpc.request("eth_getTransactionCount", [address, "latest"]), 16)
        finally:
            await rpc.aclose()

    return asyncio.run(ask())
