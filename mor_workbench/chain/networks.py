"""Known networks: the live Morpheus deployments on Base and Base Sepolia."""

from __future__ import annotations

from dataclasses import dataclass

from mor_workbench.chain.client import MULTICALL3, Deployment
from mor_workbench.errors import ConfigurationError

__all__ = ["NETWORKS", "Network", "get_network"]


@dataclass(frozen=True)
class Network:
    """A live network preset: its chain id and the marketplace's addresses there."""

    name: str
    chain_id: int
    diamond: str
    token: str
    multicall: str = MULTICALL3

    @property
    def deployment(self) -> Deployment:
        return Deployment(self.chain_id, self.diamond, self.token, self.multicall)


NETWORKS: dict[str, Network] = {
    "base": Network(
        "base",
        8453,
        diamond="0x6aBE1d282f72B474E54527D93b979A4f64d3030a",
        token="0x7431aDa8a591C955a994a21710752EF9b882b8e3",
    ),
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
        raise ConfigurationError(f"unknown network {name!r}: use one of {known}") from None
