"""`mor-workbench provider --config models-config.json` runs a provider a consumer can reach,
and stops cleanly on Ctrl-C (SIGINT) and on SIGTERM (what systemd and docker send)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mor_workbench.chain import listings
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router import peer


@pytest.fixture
def models_config(sandbox_info, tmp_path) -> Path:
    async def model_id() -> str:
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        found, _ = await listings.resolve_model(chain, "llama-3.3-70b")
        await chain.rpc.aclose()
        return "0x" + found.hex()

    config = tmp_path / "models-config.json"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "modelId": asyncio.run(model_id()),
                        "modelName": "llama-3.3-70b",
                        "apiType": "openai",
                        "apiUrl": "http://127.0.0.1:9/v1/chat/completions",
                        "concurrentSlots": 2,
                    }
                ]
            }
        )
    )
    return config


@pytest.fixture
def provider_process(sandbox_info, models_config) -> Iterator[tuple[subprocess.Popen, str]]:
    """The command as a real process: (process, the endpoint its first line names)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.cli",
            "provider",
            "--config",
            str(models_config),
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
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert sandbox_info.signer("provider:budget").address in line, process.stderr.read()
        yield process, line.split(" on ")[1].split(";")[0]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_provider_command_serves_a_live_format_config(sandbox_info, provider_process) -> None:
    _, endpoint = provider_process
    provider = sandbox_info.signer("provider:budget").address
    pong = asyncio.run(peer.ping(endpoint, sandbox_info.signer("consumer"), provider))
    assert peer.supports_encrypted_prompts(pong)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_provider_command_stops_cleanly_on_sigterm_and_ctrl_c(
    sandbox_info, provider_process, stop
) -> None:
    """Issue 9: SIGTERM killed the provider with no clean-up (exit -15); it must stop as
    Ctrl-C does: server closed, exit code 0, one 'stopped' line, no traceback."""
    process, endpoint = provider_process
    provider = sandbox_info.signer("provider:budget").address
    asyncio.run(peer.ping(endpoint, sandbox_info.signer("consumer"), provider))
    process.send_signal(stop)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.strip().splitlines() == [f"provider {provider} stopped"]
    assert "Traceback" not in err
