"""Networks: the live Morpheus deployments on Base and Base Sepolia, or any other deployment.

A `Network` names where the marketplace lives: its Diamond, MOR token and Multicall3. The
presets carry their chain id; a custom deployment may leave it out, and `aconnect` then reads
it from the node. `check_deployment` proves each address holds a contract before anything
else is read or sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from mor_workbench.chain.client import MULTICALL3, Chain, Deployment
from mor_workbench.chain.keys import checksum_address
from mor_workbench.chain.rpc import RpcClient, redact_url
from mor_workbench.errors import ConfigurationError

__all__ = [
    "CUSTOM",
    "NETWORKS",
    "Network",
    "check_deployment",
    "connect_chain",
    "custom_network",
    "get_network",
]

CUSTOM = "custom"  # the name a deployment given only by its addresses goes by


@dataclass(frozen=True)
class Network:
    """Where the marketplace lives on one chain: the Diamond (all marketplace facets), the MOR
    token and Multicall3 (the canonical address unless given). `chain_id=None` means "read it
    from the node"; a set chain id is checked against the node when connecting. Addresses are
    checked to be well formed here (`ConfigurationError` names the bad one)."""

    name: str = CUSTOM
    chain_id: int | None = None
    diamond: str = ""
    token: str = ""
    multicall: str = MULTICALL3

    def __post_init__(self) -> None:
        for what in ("diamond", "token", "multicall"):
            value = getattr(self, what)
            if not value:
                raise ConfigurationError(
                    f"network {self.name!r} needs a {what} address: pass {what}='0x…'"
                )
            object.__setattr__(self, what, checksum_address(value, what=what))
        if self.chain_id is not None and (
            not isinstance(self.chain_id, int) or isinstance(self.chain_id, bool)
        ):
            raise ConfigurationError(f"chain_id={self.chain_id!r} is not an integer chain id")

    def on_chain(self, chain_id: int) -> Network:
        """This network with its chain id set (read from the node for a custom deployment)."""
        return replace(self, chain_id=chain_id)

    @property
    def deployment(self) -> Deployment:
        if self.chain_id is None:
            raise ConfigurationError(f"network {self.name!r} has no chain id yet: connect first")
        return Deployment(self.chain_id, self.diamond, self.token, self.multicall)


NETWORKS: dict[str, Network] = {
    "base": Network(
        "base",
        8453,
        diamond="0x6aBE1d282f72B474E54527D93b979A4f64d3030a",
        token="0x7431aDa8a591C955a994a21710752EF9b882b8e3",
    ),
    # Checked 2026-11 against the public deployment records of MorpheusAIs/Morpheus-Lumerin-Node:
    # smart-contracts/docs/session-day-lock-upgrade-runbook.md (commit ed8523f7, the July 2026
    # day-lock cut) and the delegated-staking upgrade runbook (owner "verified on-chain
    # 2026-07-28") both name this Diamond on BASE Sepolia. The "Sepolia diamond" update of
    # v7.9.0 (#844) is a facet cut on the same Diamond, not a new address.
    "base-sepolia": Network(
        "base-sepolia",
        84532,
        diamond="0x6e4d0B775E3C3b02683A6F277Ac80240C4aFF930",
        token="0x5C80Ddd187054E1E4aBBfFCD750498e81d34FfA3",
    ),
}


def get_network(name: str) -> Network:
    """The preset called `name`, or an error listing the names that exist."""
    try:
        return NETWORKS[name]
    except KeyError:
        known = ", ".join(["sandbox", *NETWORKS, "gateway"])
        raise ConfigurationError(
            f"unknown network {name!r}: use one of {known}, "
            "or give a deployment's addresses (diamond='0x…', token='0x…')"
        ) from None


async def check_deployment(chain: Chain, where: str) -> None:
    """Raise `ConfigurationError` naming the first of the Diamond, token and Multicall3 that
    has no contract code on `chain` (`where` names the RPC endpoint in the message)."""
    d = chain.deployment
    roles = {"diamond": d.diamond, "token": d.token, "multicall": d.multicall}
    codes = await asyncio.gather(
        *(chain.rpc.request("eth_getCode", [address, "latest"]) for address in roles.values())
    )
    for (what, address), code in zip(roles.items(), codes, strict=True):
        if code in (None, "0x", "0x0", ""):
            hint = (
                "deploy Multicall3 there or pass multicall='0x…'"
                if what == "multicall"
                else f"check the {what} address for this chain"
            )
            raise ConfigurationError(
                f"no contract at {what} {address} on chain id {d.chain_id} ({where}): {hint}"
            )


def custom_network(
    name: str, diamond: str | None, token: str | None, multicall: str | None = None
) -> Network:
    """The deployment at these addresses. `name` is a label ("sandbox"/"gateway" become
    "custom"), or a preset whose chain id the node must then serve. Raises
    `ConfigurationError` when the Diamond or the token is missing or malformed."""
    if name in ("sandbox", "gateway"):
        name = CUSTOM
    for what, value in (("diamond", diamond), ("token", token)):
        if not value:
            raise ConfigurationError(
                f"a custom deployment needs both diamond and token addresses: pass {what}='0x…'"
            )
    chain_id = NETWORKS[name].chain_id if name in NETWORKS else None
    return Network(name, chain_id, diamond or "", token or "", multicall or MULTICALL3)


async def connect_chain(network: Network, urls: str | list[str]) -> Chain:
    """A chain client for `network` over `urls`: the chain id read from the node (and checked
    against the network's, when it has one), then, unless it is one of the `NETWORKS` presets
    (whose addresses the chain id check vouches for), every address checked to hold code
    (`check_deployment`). Raises `ConfigurationError` on a wrong chain or a missing contract,
    `ChainError` when the node cannot be reached; the RPC client is closed on any failure."""
    rpc = RpcClient(urls)
    where = ", ".join(redact_url(u) for u in rpc.urls)
    try:
        chain_id = int(await rpc.request("eth_chainId"), 16)
        if network.chain_id is not None and chain_id != network.chain_id:
            raise ConfigurationError(
                f"{where} serves chain id {chain_id}, but {network.name} is chain id "
                f"{network.chain_id}: use an RPC URL for {network.name}"
            )
        chain = Chain(rpc, network.on_chain(chain_id).deployment)
        if network not in NETWORKS.values():
            await check_deployment(chain, where)
    except BaseException:
        await rpc.aclose()
        raise
    return chain
