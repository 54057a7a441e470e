"""`mor-workbench provider --config models-config.json` runs a provider a consumer can reach."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from mor_workbench.chain import listings
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router import peer


def test_provider_command_serves_a_live_format_config(sandbox_info, tmp_path) -> None:
    async def model_id() -> str:
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        found, _ = await listings.resolve_model(chain, "llama-3.2")
        await chain.rpc.aclose()
        return "0x" + found.hex()

    config = tmp_path / "models-config.json"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "modelId": asyncio.run(model_id()),
                        "modelName": "llama-3.2",
                        "apiType": "openai",
                        "apiUrl": "http://127.0.0.1:9/v1/chat/completions",
                        "concurrentSlots": 2,
                    }
                ]
            }
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.cli",
            "provider",
            "--config",
            str(config),
            "--network",
            "sandbox",
            "--dir",
            str(sandbox_info.directory),
            "--account",
            "provider:budget",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        endpoint = line.split(" on ")[1].split(";")[0]
        provider = sandbox_info.signer("provider:budget").address
        assert provider in line
        pong = asyncio.run(peer.ping(endpoint, sandbox_info.signer("consumer"), provider))
        assert peer.supports_encrypted_prompts(pong)
    finally:
        process.terminate()
        process.wait(10)
