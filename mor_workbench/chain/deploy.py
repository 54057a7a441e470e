"""Deploy our Morpheus-compatible marketplace (shipped artifacts) to a local chain and configure it.

Used by the sandbox and by tests; the live networks already have the real Diamond.
"""

from __future__ import annotations

from dataclasses import dataclass

from mor_workbench.chain.abi import load_artifact
from mor_workbench.chain.client import MULTICALL3, Chain, Deployment
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient

__all__ = ["MAINNET_POOLS", "MarketConfig", "Pool", "deploy_marketplace"]

MOR = 10**18


@dataclass(frozen=True)
class Pool:
    """An emission pool of the linear-decrease schedule (the compute pool sizes stipends)."""

    initial_reward: int
    reward_decrease: int
    payout_start: int
    decrease_interval: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (
            self.initial_reward,
            self.reward_decrease,
            self.payout_start,
            self.decrease_interval,
        )


# Base mainnet's pools: 0 capital, 1 code, 2 community, 3 compute, 4 protection.
_START = 1707393600  # 2024-02-08 12:00 UTC
MAINNET_POOLS: tuple[Pool, ...] = (
    *(Pool(3456 * MOR, 592558728240000000, _START, 86400) for _ in range(4)),
    Pool(576 * MOR, 98759788040000000, _START, 86400),
)


@dataclass(frozen=True)
class MarketConfig:
    """Marketplace parameters; defaults follow the live Base deployment."""

    provider_min_stake: int = MOR // 5
    model_min_stake: int = MOR // 10
    bid_fee: int = MOR // 10
    min_price_per_second: int = 10**10
    max_price_per_second: int = 10**16
    max_session_duration: int = 7 * 86400
    pools: tuple[Pool, ...] = MAINNET_POOLS
    token_supply: int = 100_000_000 * MOR


async def deploy_marketplace(
    rpc: RpcClient, owner: Signer, config: MarketConfig = MarketConfig()
) -> Deployment:
    """Deploy token, Multicall3 (at its canonical address), facets and Diamond; configure them.

    `owner` deploys everything, receives the whole MOR supply and is the funding account that
    pays providers in staking mode.
    """
    chain_id = int(await rpc.request("eth_chainId"), 16)
    chain = Chain(rpc, Deployment(chain_id, diamond="", token=""))
    token = await chain.deploy(owner, "MorpheusToken", config.token_supply)
    if await rpc.request("eth_getCode", [MULTICALL3, "latest"]) in ("0x", "0x0", None):
        code = load_artifact("Multicall3")["deployedBytecode"]
        await rpc.request("anvil_setCode", [MULTICALL3, code])
    plan = load_artifact("deployment")
    cuts = []
    for facet in plan["facets"]:
        address = await chain.deploy(owner, facet["name"])
        cuts.append((address, [bytes.fromhex(s.removeprefix("0x")) for s in facet["selectors"]]))
    diamond = await chain.deploy(owner, plan["diamond"], owner.address, cuts)
    chain = Chain(rpc, Deployment(chain_id, diamond=diamond, token=token))
    await chain.transact(
        owner, "__Marketplace_init", token, config.min_price_per_second, config.max_price_per_second
    )
    await chain.transact(
        owner,
        "__SessionRouter_init",
        owner.address,
        config.max_session_duration,
        [p.as_tuple() for p in config.pools],
    )
    await chain.transact(owner, "setMarketplaceBidFee", config.bid_fee)
    await chain.transact(owner, "providerSetMinStake", config.provider_min_stake)
    await chain.transact(owner, "modelSetMinStake", config.model_min_stake)
    await chain.transact(owner, "approve", diamond, 2**256 - 1, to=token)
    return chain.deployment
