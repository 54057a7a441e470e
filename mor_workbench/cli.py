"""The `mor-workbench` command: manage the sandbox and run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mor_workbench import sandbox
from mor_workbench.errors import ConfigurationError, MorError


def _sandbox(args: argparse.Namespace) -> int:
    if args.action == "status":
        info = sandbox.status(args.dir)
        if info is None:
            print("sandbox: not running")
            return 1
        print(f"sandbox: running (pid {info.pid}) at {info.rpc_url}")
        print(f"  diamond {info.deployment.diamond}  MOR token {info.deployment.token}")
        print(f"  models  {_answered_by(info)}")
        print(f"  directory {info.directory}")
    elif args.action == "start":
        started = time.monotonic()
        info = sandbox.start(args.dir, backend=args.backend, backend_model=args.backend_model)
        print(f"sandbox: running at {info.rpc_url} ({time.monotonic() - started:.1f} s)")
        print(f"  models  {_answered_by(info)}")
    elif args.backend is not None or args.backend_model is not None:
        raise ConfigurationError("--backend and --backend-model go with `sandbox start`")
    elif args.action == "stop":
        print("sandbox: stopped" if sandbox.stop(args.dir) else "sandbox: was not running")
    elif args.action == "reset":
        sandbox.reset(args.dir)
        print("sandbox: reset (the next start deploys a fresh marketplace)")
    return 0


def _answered_by(info: sandbox.SandboxInfo) -> str:
    """Who answers the sandbox's prompts, in one line."""
    if info.backend is None:
        return (
            "simulated (deliberately meaningless text; `sandbox start --backend URL` puts your "
            "own model server behind the providers)"
        )
    return f"answered by your server: {info.backend.describe()}"


def _demo(args: argparse.Namespace) -> int:
    from mor_workbench import connect

    started = time.monotonic()
    with connect("sandbox", sandbox_dir=args.dir) as wb:
        print(f"Sandbox marketplace ready in {time.monotonic() - started:.1f} s: {wb!r}\n")
        with pd.option_context(
            "display.width", 160, "display.max_columns", 12, "display.max_colwidth", 24
        ):
            print("Models")
            print(wb.models()[["name", "tags", "stake", "owner", "created_at"]].to_string(), "\n")
            print("Bids")
            print(
                wb.bids()[
                    [
                        "model",
                        "provider_short",
                        "price_per_second",
                        "price_per_hour",
                        "id_short",
                        "created_at",
                    ]
                ].to_string(),
                "\n",
            )
            print("Providers")
            print(
                wb.providers()[
                    ["address", "endpoint", "stake", "is_active", "created_at"]
                ].to_string(),
                "\n",
            )
        before = wb.balance()
        print(f"Balance before: {before['mor']:.6f} MOR, {before['eth']:.4f} ETH\n")
        with wb.open_session("llama-3.3-70b", duration="10m") as session:
            info = session.info()
            print(
                f"Session {info['id'][:10]}… with provider {info['provider'][:10]}… at "
                f"{info['price_per_second']:.6f} MOR/s (chosen by score and price), "
                f"ends {info['ends_at']:%H:%M:%S} UTC"
            )
            print("Chat:", session.chat("What is the Morpheus marketplace?"))
            print("Stream: ", end="", flush=True)
            stream = session.stream("And how are providers chosen?")
            for delta in stream:
                print(delta, end="", flush=True)
            call = stream.info
            print(
                f"\n  [{call['completion_tokens']} tokens, first token after "
                f"{call['ttft_s'] * 1000:.0f} ms, {call['tokens_per_s']:.0f} tokens/s, "
                f"{call['cost_mor']:.6f} MOR of session time]"
            )
            during = wb.balance()
            print(f"\nStaked while open: {during['mor_staked']:.6f} MOR")
        after = wb.balance()
        _print_settlement(before, during["mor_staked"], after)
    return 0


def _print_settlement(before: dict[str, float], staked: float, after: dict[str, float]) -> None:
    """The demo's last lines: where the session's MOR went, each labelled (live day-lock rule:
    the part of the stake used today is held until the next UTC midnight)."""
    returned = after["mor"] - before["mor"] + staked
    held = after["mor_on_hold"] - before["mor_on_hold"]
    spent = (before["mor"] + before["mor_on_hold"]) - (after["mor"] + after["mor_on_hold"])
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    release = midnight + timedelta(days=1)
    print("Closed with the provider's receipt.")
    print(f"  staked    {staked:12.6f} MOR  locked in the session while it was open")
    print(f"  returned  {returned:12.6f} MOR  the unused part, back in the close transaction")
    print(
        f"  on hold   {held:12.6f} MOR  the part used today, held by the contract until "
        f"{release:%Y-%m-%d %H:%M} UTC (the next UTC day); connect() withdraws it then"
    )
    print(
        f"  spent     {spent:12.6f} MOR  in staking mode the provider is paid from the "
        "protocol's compute budget, not from your stake"
    )


def _provider(args: argparse.Namespace) -> int:
    from mor_workbench.chain.client import Chain
    from mor_workbench.chain.keys import load_signer
    from mor_workbench.chain.networks import connect_chain, custom_network, get_network
    from mor_workbench.chain.rpc import RpcClient
    from mor_workbench.provider.config import load_models_config
    from mor_workbench.provider.server import ProviderServer

    models = load_models_config(args.config)
    custom = args.diamond or args.token or args.multicall
    if args.network == "sandbox" and not custom:
        info = sandbox.start(args.dir)
        rpc = RpcClient(info.rpc_url)
        signer = info.signer(args.account) if args.account else load_signer()

        async def open_chain() -> Chain:
            return Chain(rpc, info.deployment)
    else:
        if custom:
            network = custom_network(args.network, args.diamond, args.token, args.multicall)
        else:
            network = get_network(args.network)
        url = args.rpc_url or os.environ.get("MOR_RPC_URL")
        if not url:
            raise ConfigurationError("pass --rpc-url or set MOR_RPC_URL")
        signer = load_signer(keystore=args.keystore)

        async def open_chain() -> Chain:  # chain id read from the node, addresses checked
            return await connect_chain(network, url)

    async def serve() -> None:
        chain = await open_chain()
        try:
            async with ProviderServer(
                signer=signer,
                chain=chain,
                models=models,
                host=args.host,
                port=args.port,
                health_interval=args.health_interval or None,
            ) as server:
                print(
                    f"provider {signer.address} serving {len(models)} model(s) on "
                    f"{server.endpoint}; Ctrl-C or SIGTERM stops",
                    flush=True,
                )
                await asyncio.Event().wait()
        finally:
            await chain.rpc.aclose()

    _run_service(serve())
    print(f"provider {signer.address} stopped", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mor_workbench.serve import serve
    from mor_workbench.workbench import aconnect

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigurationError(f"--api-key-env names ${args.api_key_env}, which is not set")
    options: dict[str, object] = {}
    custom = args.diamond or args.token or args.multicall
    if args.network == "sandbox" and not custom:
        options["sandbox_dir"] = args.dir
    if args.rpc_url:
        options["rpc_url"] = args.rpc_url
    if custom:  # any deployment, as mor.connect(rpc_url=, diamond=, token=) takes it
        options.update(diamond=args.diamond, token=args.token, multicall=args.multicall)

    def ready(url: str) -> None:
        print(
            f"serving the Morpheus marketplace at {url} (OpenAI-compatible); Ctrl-C stops",
            flush=True,
        )

    if args.budget is not None:  # every request counts in it (see mor_workbench.budget)
        from mor_workbench.budget import budget

        budget(max_mor=args.budget).activate()

    async def run() -> None:
        workbench = await aconnect(args.network, **options)
        await serve(workbench, args.host, args.port, api_key=api_key, ready=ready)

    _run_service(run())
    return 0


def _add_deployment_arguments(command: argparse.ArgumentParser) -> None:
    """The options naming any deployment of the contracts (`provider` and `serve` alike)."""
    command.add_argument("--rpc-url", default=None, help="RPC URL (or $MOR_RPC_URL)")
    command.add_argument(
        "--diamond",
        default=None,
        help="any deployment: its Diamond address (with --token and --rpc-url; chain id from "
        "the node)",
    )
    command.add_argument("--token", default=None, help="any deployment: its MOR token address")
    command.add_argument(
        "--multicall",
        default=None,
        help="any deployment: its Multicall3 (default the canonical 0xcA11…CA11)",
    )


def _run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service until Ctrl-C or SIGTERM (what systemd, docker and process
    managers send to stop it): both cancel it the same way, so its clean-up (closing the
    sessions it opened) runs before the process exits."""

    async def until_stopped() -> None:
        task = asyncio.current_task()
        assert task is not None
        terminated = False

        def terminate() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
        try:
            await main
        except asyncio.CancelledError:
            if not terminated:
                raise

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mor-workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    box = commands.add_parser("sandbox", help="manage the local sandbox marketplace")
    box.add_argument("action", choices=["status", "start", "stop", "reset"])
    box.add_argument("--dir", default=None, help="sandbox directory (default: per user)")
    box.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="start: your OpenAI-compatible server's base URL (Ollama: http://127.0.0.1:11434/v1) "
        "answers for every sandbox model, its key in $MOR_SANDBOX_BACKEND_KEY; 'simulated' "
        "goes back to the simulated models; kept by later starts",
    )
    box.add_argument(
        "--backend-model",
        default=None,
        metavar="NAME",
        help="start: the model name sent to the backend (default: the first it lists)",
    )
    box.set_defaults(run=_sandbox)
    demo = commands.add_parser("demo", help="start the sandbox and show the market")
    demo.add_argument("--dir", default=None, help="sandbox directory (default: per user)")
    demo.set_defaults(run=_demo)
    provider = commands.add_parser(
        "provider", help="serve models as a provider (MOR-RPC) from a models-config.json"
    )
    provider.add_argument("--config", required=True, help="models-config.json (live format)")
    provider.add_argument(
        "--network",
        default="sandbox",
        help="sandbox, base or base-sepolia; with --diamond/--token, a label for that deployment",
    )
    _add_deployment_arguments(provider)
    provider.add_argument(
        "--keystore", default=None, help="encrypted keystore (else $MOR_PRIVATE_KEY)"
    )
    provider.add_argument("--account", default=None, help="sandbox account, e.g. provider:balanced")
    provider.add_argument("--host", default="127.0.0.1")
    provider.add_argument("--port", type=int, default=3333)
    provider.add_argument(
        "--health-interval",
        type=float,
        default=60.0,
        help="seconds between probes of each model's backend, reported in the pong (0: off)",
    )
    provider.add_argument("--dir", default=None, help="sandbox directory (default: per user)")
    provider.set_defaults(run=_provider)
    served = commands.add_parser(
        "serve", help="serve the marketplace as a local OpenAI-compatible endpoint"
    )
    served.add_argument(
        "--network",
        default="sandbox",
        help="sandbox, base, base-sepolia or gateway; with --diamond/--token, a label for that "
        "deployment",
    )
    served.add_argument("--dir", default=None, help="sandbox directory (default: per user)")
    _add_deployment_arguments(served)
    served.add_argument("--host", default="127.0.0.1")
    served.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    served.add_argument(
        "--api-key-env", default=None, help="environment variable holding the Bearer key to require"
    )
    served.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="MOR",
        help="cap the MOR this server stakes and spends (held + spent, see mor.budget): "
        "requests that would cross it are refused with HTTP 402",
    )
    served.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except MorError as exc:
        print(f"mor-workbench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
