"""`connect()` for any deployment (issue 12 §3): the sandbox reached only through its addresses
and RPC URL, as a user would reach a fork or a private deployment. Its chain id (31337) is read
from the node, tables and chat work, and a bad address gets one clear line before anything
else, in the library and in the provider CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import extra_provider
import pytest

import mor_workbench as mor
from mor_workbench.chain import listings
from mor_workbench.chain.client import MULTICALL3, Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router import peer
from mor_workbench.sandbox.paths import SandboxPaths

NOWHERE = "0x" + "12" * 20  # a well-formed address with no code on the sandbox chain


def _keys(info) -> dict:
    return json.loads(SandboxPaths(info.directory).accounts.read_text())


def _nonce(info, address: str) -> int:
    return extra_provider.transaction_count(info.rpc_url, address)


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MOR_RPC_URL", raising=False)


def test_a_deployment_given_by_its_addresses_reads_tables_and_chats(sandbox_info) -> None:
    d = sandbox_info.deployment
    key = _keys(sandbox_info)["consumer"]
    with mor.connect(rpc_url=sandbox_info.rpc_url, diamond=d.diamond, token=d.token, key=key) as wb:
        assert wb.aio.chain.deployment.chain_id == 31337  # read from the node, no preset
        assert wb.aio.chain.deployment.multicall == MULTICALL3
        assert wb.network == "custom"
        assert wb.address == sandbox_info.signer("consumer").address
        models = wb.models()
        assert "llama-3.3-70b" in set(models["name"])
        assert len(wb.bids("llama-3.3-70b")) >= 1
        answer = wb.chat("Say something.", model="llama-3.3-70b", max_tokens=16)
        assert isinstance(answer, str) and answer


def test_a_network_object_is_accepted(sandbox_info) -> None:
    d = sandbox_info.deployment
    network = mor.Network("my-fork", diamond=d.diamond, token=d.token)
    assert network.chain_id is None  # no preset: read at connect
    with mor.connect(network, rpc_url=sandbox_info.rpc_url) as wb:
        assert wb.network == "my-fork"
        assert wb.aio.chain.deployment.chain_id == 31337
        assert wb.address is None  # no key: read-only
        assert "llama-3.3-70b" in set(wb.models()["name"])


@pytest.mark.parametrize("role", ["diamond", "token", "multicall"])
def test_an_address_without_code_is_one_line_before_anything_else(sandbox_info, role) -> None:
    d = sandbox_info.deployment
    addresses = {"diamond": d.diamond, "token": d.token, role: NOWHERE}
    consumer = sandbox_info.signer("consumer").address
    before = _nonce(sandbox_info, consumer)
    key = _keys(sandbox_info)["consumer"]
    with pytest.raises(mor.ConfigurationError) as info:
        mor.connect(rpc_url=sandbox_info.rpc_url, key=key, **addresses)
    message = str(info.value)
    assert "\n" not in message
    assert f"no contract at {role} {NOWHERE}" in message and "chain id 31337" in message
    assert _nonce(sandbox_info, consumer) == before


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        ({"diamond": "0x123", "token": NOWHERE}, r"diamond '0x123' is not an Ethereum address"),
        ({"diamond": NOWHERE}, r"needs both diamond and token.*token='0x…'"),
        ({"token": NOWHERE}, r"needs both diamond and token.*diamond='0x…'"),
    ],
)
def test_malformed_or_missing_addresses_are_named(sandbox_info, addresses, expected) -> None:
    with pytest.raises(mor.ConfigurationError, match=expected):
        mor.connect(rpc_url=sandbox_info.rpc_url, **addresses)


def test_addresses_labelled_with_a_preset_must_be_on_its_chain(sandbox_info) -> None:
    d = sandbox_info.deployment
    with pytest.raises(mor.ConfigurationError, match=r"chain id 31337.*base is chain id 8453"):
        mor.connect("base", rpc_url=sandbox_info.rpc_url, diamond=d.diamond, token=d.token)


def test_a_custom_deployment_needs_an_rpc_url(sandbox_info) -> None:
    d = sandbox_info.deployment
    with pytest.raises(mor.ConfigurationError, match="custom needs an RPC URL"):
        mor.connect(diamond=d.diamond, token=d.token)


@pytest.fixture
def models_config(sandbox_info, tmp_path) -> Path:
    async def model_id() -> str:
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        found, _ = await listings.resolve_model(chain, "llama-3.3-70b")
        await chain.rpc.aclose()
        return "0x" + found.hex()

    config = tmp_path / "models-config.json"
    model = {
        "modelId": asyncio.run(model_id()),
        "modelName": "llama-3.3-70b",
        "apiType": "openai",
        "apiUrl": "http://127.0.0.1:9/v1/chat/completions",
    }
    config.write_text(json.dumps({"models": [model]}))
    return config


def _provider_command(sandbox_info, config: Path, diamond: str) -> subprocess.Popen:
    env = {**os.environ, "MOR_PRIVATE_KEY": _keys(sandbox_info)["providers"]["budget"]}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.cli",
            "provider",
            "--config",
            str(config),
            "--rpc-url",
            sandbox_info.rpc_url,
            "--diamond",
            diamond,
            "--token",
            sandbox_info.deployment.token,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_the_provider_cli_serves_a_deployment_given_by_its_addresses(
    sandbox_info, models_config
) -> None:
    process = _provider_command(sandbox_info, models_config, sandbox_info.deployment.diamond)
    provider = sandbox_info.signer("provider:budget").address
    try:
        line = process.stdout.readline()
        assert provider in line, process.stderr.read() if process.poll() is not None else line
        endpoint = line.split(" on ")[1].split(";")[0]
        pong = asyncio.run(peer.ping(endpoint, sandbox_info.signer("consumer"), provider))
        assert pong.version
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


def test_the_provider_cli_names_a_diamond_without_code(sandbox_info, models_config) -> None:
    process = _provider_command(sandbox_info, models_config, NOWHERE)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert out == ""
    assert err.strip().splitlines() == [
        f"mor-workbench: no contract at diamond {NOWHERE} on chain id 31337 "
        f"({sandbox_info.rpc_url}): check the diamond address for this chain"
    ]


def test_serve_answers_for_a_deployment_given_by_its_addresses(sandbox_info) -> None:
    """`mor-workbench serve --rpc-url … --diamond … --token …`: the same deployment as above
    served as an OpenAI endpoint, answered through the official openai client."""
    import openai

    env = {**os.environ, "MOR_PRIVATE_KEY": _keys(sandbox_info)["consumer"]}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.cli",
            "serve",
            "--network",
            "my-fork",
            "--rpc-url",
            sandbox_info.rpc_url,
            "--diamond",
            sandbox_info.deployment.diamond,
            "--token",
            sandbox_info.deployment.token,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert "serving" in line, process.stderr.read() if process.poll() is not None else line
        url = line.split(" at ")[1].split(" ")[0]
        client = openai.OpenAI(base_url=url, api_key="unused")
        assert "llama-3.3-70b" in {m.id for m in client.models.list()}
        answer = client.chat.completions.create(
            model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert answer.choices[0].message.content
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=60)
    assert process.returncode == 0
