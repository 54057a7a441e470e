"""The sandbox's providers: each a real provider router in front of its own simulated model
server with its own latency profile (or, with a `Backend`, of the user's own model server),
registered on chain at the port it listens on.

As on the live network (models-config.json: `apiUrl` is the full URL of the model's endpoint),
each model's backend URL is the endpoint of its kind: `/v1/embeddings` for an embedding model
(type EMBEDDING by its tags), `/v1/chat/completions` for the others.

Both run inside the daemon process (no child processes), on the ports of the previous start
when those are still free, so clients that saved an endpoint keep reaching it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Protocol, TypeVar

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.market.catalog import model_type
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.sandbox.backend import Backend, backend_api_key
from mor_workbench.sandbox.market import MODELS, PROVIDERS, ModelSpec, base_model_id
from mor_workbench.sandbox.model_server import ModelServer

__all__ = ["ProviderPorts", "run_providers"]

log = logging.getLogger("mor_workbench.sandbox")

# provider name -> {"router": port, "model": port}; no "model" when a backend answers
ProviderPorts = dict[str, dict[str, int]]


class _Server(Protocol):
    port: int

    async def start(self) -> object: ...
    async def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Server)


async def _serve(stack: AsyncExitStack, make: Callable[[int], _S], port: int) -> _S:
    """`make(port)` started (and stopped with `stack`); `make(0)`, a free port, if it is taken."""
    server = make(port)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        if not port or exc.errno != errno.EADDRINUSE:
            raise
        log.warning("port %d is taken; listening on a new one", port)
        server = make(0)
        await server.start()
    stack.push_async_callback(server.stop)
    return server


def _endpoint(base_url: str, model: ModelSpec) -> str:
    """The full backend URL of `model` under an OpenAI base URL: its kind's endpoint."""
    if model_type(model.tags) == "EMBEDDING":
        return base_url + "/embeddings"
    return base_url + "/chat/completions"


async def run_providers(
    chain: Chain,
    owner: str,
    keys: dict[str, str],
    stack: AsyncExitStack,
    *,
    ports: ProviderPorts | None = None,
    claim_interval: float = 5.0,
    backend: Backend | None = None,
) -> ProviderPorts:
    """Start every sandbox provider (closed with `stack`) on its port in `ports` if free (else
    a new one) and point its chain endpoint at it. Each answers from its own simulated model
    server, or, with `backend`, forwards every model to the user's server (as `backend.model`,
    with `$MOR_SANDBOX_BACKEND_KEY` as its key). Returns the ports they listen on."""
    ports = ports or {}
    model_ids = [await chain.call("getModelId", owner, base_model_id(m.name)) for m in MODELS]
    listening: ProviderPorts = {}
    for spec in PROVIDERS:
        signer = Signer(keys[spec.name])
        saved = ports.get(spec.name, {})
        listening[spec.name] = {}
        if backend is None:
            simulated = await _serve(
                stack,
                lambda port, spec=spec: ModelServer(
                    [m.name for m in MODELS], profile=spec.profile, port=port
                ),
                saved.get("model", 0),
            )
            listening[spec.name]["model"] = simulated.port
            configs = [
                ModelConfig(model_id, m.name, _endpoint(simulated.base_url, m), concurrent_slots=32)
                for m, model_id in zip(MODELS, model_ids, strict=True)
            ]
        else:
            key = backend_api_key()
            configs = [
                ModelConfig(model_id, backend.model, _endpoint(backend.base_url, m), api_key=key)
                for m, model_id in zip(MODELS, model_ids, strict=True)
            ]
        server = await _serve(
            stack,
            lambda port, signer=signer, configs=configs: ProviderServer(
                signer=signer,
                chain=chain,
                models=configs,
                port=port,
                claim_interval=claim_interval,
            ),
            saved.get("router", 0),
        )
        registered = await chain.call("getProvider", signer.address)
        if registered["endpoint"] != server.endpoint:
            await chain.transact(signer, "providerRegister", signer.address, 0, server.endpoint)
        listening[spec.name]["router"] = server.port
    return listening
