"""The provider: a MOR-RPC server on TCP that approves sessions and serves prompts from backends.

Wire-compatible with live consumers (one request per connection, answers streamed as signed,
ECIES-encrypted chunks), and stricter than the live provider (see `provider.handler`).

`ProviderServer` is the façade; each job is a part of its own:

- `provider.transport` — the TCP server: accepting, per-peer caps, the first-message deadline,
  slowloris eviction, half-close;
- `provider.handler` — request handling without a socket: decode, verify, dispatch (ping,
  session.request, session.prompt, session.report), answer through a `send` callback;
- `provider.capacity` — our sessions on chain: slots, reservations, measurements;
- `provider.claims` — the claim loop with back-off;
- `provider.health` — the backends' health report published in the pong.
"""

from __future__ import annotations

import logging

import httpx

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import MorError, one_line
from mor_workbench.protocol.messages import ModelHealth
from mor_workbench.provider.backend import BackendHttp
from mor_workbench.provider.capacity import Capacity
from mor_workbench.provider.claims import CLAIM_BACKOFF_MAX_S, Claimer
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.handler import RequestHandler
from mor_workbench.provider.health import HealthProbe
from mor_workbench.provider.transport import (
    FIRST_MESSAGE_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    ConnectionLimits,
    TcpTransport,
)

__all__ = ["ProviderServer"]

log = logging.getLogger("mor_workbench.provider")


class ProviderServer:
    """Serve MOR-RPC for `models` as the provider `signer`, checking sessions on `chain`."""

    handler_class: type[RequestHandler] = RequestHandler
    """The request handler built for the server (a subclass answers differently: the tests'
    misbehaving providers), as `socketserver`'s `RequestHandlerClass`."""

    def __init__(
        self,
        *,
        signer: Signer,
        chain: Chain,
        models: list[ModelConfig],
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent: int = MAX_CONNECTIONS,
        first_message_timeout: float = FIRST_MESSAGE_TIMEOUT_S,
        max_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        max_message: int = 1024 * 1024,
        freshness_window_ms: int = 120_000,
        claim_interval: float | None = 30.0,
        claim_backoff_max: float = CLAIM_BACKOFF_MAX_S,
        health_interval: float | None = None,
        health_probe_delay: float = 2.0,
    ) -> None:
        """Connections: at most `max_concurrent` are handled at once (default 256) and at most
        `max_per_peer` from one IP address (default 32; the next is refused with a signed error
        naming the limit); a request must arrive complete within `first_message_timeout` s of
        connecting (default 10 s: the whole request, however slowly its bytes trickle in), and
        is at most `max_message` bytes. When every slot is taken, a new connection takes the
        slot of the oldest one whose request is still incomplete (that one is told why and
        closed), so connections that trickle bytes (slowloris) cannot lock out real consumers;
        when every slot is answering a request, the new connection is refused as busy.
        Raises `ConfigurationError` for a limit below 1 or a timeout of 0 s or less.

        `claim_interval` (s) is the pause between claim rounds (None: no claimer; then call
        `claim_owed()`, which also releases what is kept about settled sessions); after a failed
        round the pause doubles, up to `claim_backoff_max` (s). `health_interval` (s) is the
        pause between health sweeps of the backends (the first at start), published in the
        pong (None, the default: no sweeps but those `refresh_health()` asks for, and no
        report before the first); `health_probe_delay` (s) spaces the probes of one sweep (see
        `mor_workbench.provider.health`)."""
        limits = ConnectionLimits(
            max_concurrent=max_concurrent,
            first_message_timeout=first_message_timeout,
            max_per_peer=max_per_peer,
            max_message=max_message,
        )
        self.signer = signer
        self.chain = chain
        self.models = {m.model_id: m for m in models}
        self.capacity = Capacity(chain=chain, address=signer.address, models=self.models)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(240.0, connect=5.0))  # probes
        self._backend_http = BackendHttp()  # answers
        self.health_interval = health_interval
        self.health = HealthProbe(
            chain=chain,
            address=signer.address,
            models=self.models,
            http=self._http,
            interval_s=health_interval or 60.0,
            probe_delay_s=health_probe_delay,
        )
        self.handler = self.handler_class(
            signer=signer,
            chain=chain,
            models=self.models,
            capacity=self.capacity,
            health=self.health,
            http=self._backend_http,
            max_message=max_message,
            freshness_window_ms=freshness_window_ms,
        )
        self.transport = TcpTransport(self.handler, host=host, port=port, limits=limits)
        self.claimer = Claimer(
            chain=chain,
            signer=signer,
            capacity=self.capacity,
            interval=claim_interval,
            backoff_max=claim_backoff_max,
        )

    @property
    def host(self) -> str:
        """The address listened on."""
        return self.transport.host

    @property
    def port(self) -> int:
        """The port listened on (the one bound, once started with port 0)."""
        return self.transport.port

    @property
    def endpoint(self) -> str:
        """host:port as registered on chain."""
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections held now, each in one of the `max_concurrent` slots."""
        return self.transport.connections

    @property
    def max_concurrent(self) -> int:
        """Connections handled at once."""
        return self.transport.limits.max_concurrent

    @property
    def max_per_peer(self) -> int:
        """Connections handled at once from one IP address."""
        return self.transport.limits.max_per_peer

    @property
    def first_message_timeout(self) -> float:
        """Seconds from connecting to a complete request."""
        return self.transport.limits.first_message_timeout

    @property
    def max_message(self) -> int:
        """Bytes: the largest request taken."""
        return self.transport.limits.max_message

    @property
    def claim_interval(self) -> float | None:
        """Seconds between claim rounds (None: no claimer)."""
        return self.claimer.interval

    @property
    def claim_backoff_max(self) -> float:
        """Seconds: the longest pause after failed claim rounds."""
        return self.claimer.backoff_max

    @property
    def version(self) -> str:
        """The version published in the pong (with the features it advertises)."""
        return self.handler.version

    @property
    def public_key(self) -> bytes:
        """The provider's public key (65 bytes), which seals prompts to it."""
        return self.handler.public_key

    async def start(self) -> ProviderServer:
        """Read our sessions from the chain, then listen (and claim, with a claim interval).

        The read comes first so that no approval waits for a long history (a provider key
        with thousands of sessions); if the chain cannot be read, one line says why and the
        first approval or claim round reads it instead.
        """
        try:
            await self.capacity.sync()
        except MorError as exc:
            log.warning(
                "reading this provider's sessions from the chain failed (%s)", one_line(exc)
            )
        await self.transport.start()
        self.claimer.start()
        if self.health_interval:
            self.health.start()
        return self

    async def refresh_health(self) -> tuple[ModelHealth, ...]:
        """Probe every model's backend now; the new report (also in every pong from now).
        Raises `MorError` when the chain cannot be read (the last report stays)."""
        return await self.health.refresh()

    async def claim_owed(self) -> int:
        """Claim what our sessions on chain have made payable; how many claims paid (see
        `Claimer.claim_owed`). Raises `ChainError` when the chain fails."""
        return await self.claimer.claim_owed()

    async def stop(self) -> None:
        """Stop accepting, let running answers finish briefly, then close everything."""
        await self.health.stop()
        await self.claimer.stop()
        await self.transport.stop()
        await self._http.aclose()
        await self._backend_http.aclose()

    async def __aenter__(self) -> ProviderServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
