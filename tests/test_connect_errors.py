"""Bad connection input gets one clear line saying what to do, never a key or a raw URL."""

from __future__ import annotations

import pytest

import mor_workbench as mor
from mor_workbench.chain.rpc import RpcClient, redact_url
from mor_workbench.errors import ConfigurationError, RpcUnavailable

KEY = "0x" + "5d" * 32


def test_unknown_network_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown network 'mainnet'.*base-sepolia"):
        mor.connect("mainnet")


def test_live_network_needs_an_rpc_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOR_RPC_URL", raising=False)
    with pytest.raises(ConfigurationError, match="needs an RPC URL"):
        mor.connect("base")


def test_unreachable_rpc_is_named_redacted() -> None:
    url = "http://127.0.0.1:9/v2/SECRETAPIKEY"
    with pytest.raises(RpcUnavailable) as info:
        mor.connect("base", rpc_url=url, key=KEY)
    message = str(info.value)
    assert "127.0.0.1:9" in message
    assert "SECRETAPIKEY" not in message and KEY[2:] not in message


def test_rpc_url_must_be_http() -> None:
    with pytest.raises(ConfigurationError, match="not http"):
        RpcClient("ws://localhost:8545/secret")


def test_wrong_chain_for_the_preset(anvil) -> None:
    with pytest.raises(ConfigurationError, match=r"chain id 31337.*base is chain id 8453"):
        mor.connect("base", rpc_url=anvil.url)


def test_malformed_key_for_live_network() -> None:
    # A base-sepolia RPC is simulated by anvil with that chain id; the key check comes after it.
    from mor_workbench.chain.anvil import Anvil

    node = Anvil(chain_id=84532)
    node.start()
    try:
        with pytest.raises(ConfigurationError, match="private key is malformed"):
            mor.connect("base-sepolia", rpc_url=node.url, key="0xdeadbeef")
        wb = mor.connect("base-sepolia", rpc_url=node.url)
        assert wb.address is None and "read-only" in repr(wb)
        wb.close()
    finally:
        node.stop()


def test_missing_anvil_names_the_install_command(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MOR_ANVIL", str(tmp_path / "no-anvil"))
    from mor_workbench.chain.anvil import find_anvil

    with pytest.raises(ConfigurationError, match="npm install @foundry-rs/anvil"):
        find_anvil()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://base-mainnet.g.alchemy.com/v2/abc123", "https://base-mainnet.g.alchemy.com/…"),
        ("https://user:pw@rpc.example:8443/?key=1", "https://rpc.example:8443/…"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
