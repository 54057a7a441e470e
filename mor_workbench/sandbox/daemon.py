"""The sandbox daemon: a background process that owns the local chain and outlives notebooks.

Started by `mor_workbench.sandbox.start()`; runs anvil with its state saved in the sandbox
directory, deploys and seeds the marketplace the first time, runs the providers (each a real
provider router in front of its own simulated model server), publishes `sandbox.json` when
ready and removes it when it stops (SIGTERM/SIGINT). With a saved backend (`backend.json`, see
`mor_workbench.sandbox.backend`) the providers forward to the user's own model server instead.

Its one child process, anvil, dies with it (see `Anvil`), and a start never runs a second chain
on the saved state. The ports of the chain and of the providers are saved in `ports.json` and
reused by the next start while they are free, so connected clients keep their URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

from eth_account import Account

from mor_workbench._private_files import private_dir, private_file
from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain, Deployment
from mor_workbench.chain.deploy import deploy_marketplace
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.sandbox.backend import load_backend
from mor_workbench.sandbox.market import PROVIDERS, seed_market
from mor_workbench.sandbox.paths import SandboxPaths
from mor_workbench.sandbox.providers import ProviderPorts, run_providers

log = logging.getLogger("mor_workbench.sandbox")


def _write_private(path: Path, data: dict) -> None:
    private_file(path).write_text(json.dumps(data, indent=2))


def _new_accounts() -> dict:
    """Fresh keys for this sandbox: owner, consumer and one per provider."""
    return {
        "owner": Account.create().key.hex(),
        "consumer": Account.create().key.hex(),
        "providers": {spec.name: Account.create().key.hex() for spec in PROVIDERS},
    }


async def _prepare(paths: SandboxPaths, rpc: RpcClient) -> Deployment:
    """Deploy and seed on first start; on later starts reuse the saved deployment."""
    if paths.deployment.exists():
        saved = json.loads(paths.deployment.read_text())
        deployment = Deployment(**saved)
        if await rpc.request("eth_getCode", [deployment.diamond, "latest"]) not in ("0x", None):
            return deployment
        log.warning("saved chain state has no marketplace; deploying again")
    accounts = _new_accounts()
    _write_private(paths.accounts, accounts)
    owner = Signer(accounts["owner"])
    await rpc.request("anvil_setBalance", [owner.address, hex(10**24)])
    deployment = await deploy_marketplace(rpc, owner)
    chain = Chain(rpc, deployment)
    providers = [
        (Signer(accounts["providers"][spec.name]), spec, "127.0.0.1:0") for spec in PROVIDERS
    ]
    await seed_market(chain, owner, Signer(accounts["consumer"]), providers)
    paths.deployment.write_text(json.dumps(deployment.__dict__, indent=2))
    return deployment


def _saved_ports(paths: SandboxPaths) -> tuple[int, ProviderPorts]:
    """The chain's and the providers' ports of the last start (0 and {} on the first)."""
    try:
        saved = json.loads(paths.ports.read_text())
        return int(saved["anvil"]), dict(saved["providers"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0, {}


async def _run(paths: SandboxPaths) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    anvil_port, provider_ports = _saved_ports(paths)
    anvil = Anvil(state=paths.chain_state, log=paths.anvil_log, port=anvil_port)
    # On this (the main) thread: anvil's parent-death signal follows the thread that started it.
    url = anvil.start()
    rpc = RpcClient(url)
    stack = AsyncExitStack()
    try:
        started = time.monotonic()
        deployment = await _prepare(paths, rpc)
        accounts = json.loads(paths.accounts.read_text())
        backend = load_backend(paths.backend)
        provider_ports = await run_providers(
            Chain(rpc, deployment),
            Signer(accounts["owner"]).address,
            accounts["providers"],
            stack,
            ports=provider_ports,
            backend=backend,
        )
        paths.ports.write_text(
            json.dumps({"anvil": anvil.port, "providers": provider_ports}, indent=2)
        )
        paths.info.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "rpc_url": url,
                    **deployment.__dict__,
                    "backend": backend.__dict__ if backend else None,
                    "started_at": time.time(),
                },
                indent=2,
            )
        )
        log.info("sandbox ready at %s in %.1f s", url, time.monotonic() - started)
        while not stop.is_set():
            if anvil.process is None or anvil.process.poll() is not None:
                log.error("anvil exited; stopping the sandbox")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        paths.info.unlink(missing_ok=True)
        await stack.aclose()
        await rpc.aclose()
        anvil.stop()
        log.info("sandbox stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the mor-workbench sandbox in the foreground.")
    parser.add_argument("--dir", required=True, help="the sandbox directory")
    args = parser.parse_args()
    paths = SandboxPaths(Path(args.dir))
    # Everything here is about the sandbox's accounts (keys, chain state, logs): whatever this
    # process and its chain create is its owner's only, and what an older version left is
    # tightened.
    os.umask(0o077)
    private_dir(paths.root)
    logging.basicConfig(
        filename=paths.daemon_log,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_run(paths))
    except Exception:
        log.exception("sandbox failed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
