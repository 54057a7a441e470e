"""A provider that misbehaves on purpose, for tests: a real MOR-RPC server on a socket (our
`ProviderServer`, so approvals, sessions on chain and close receipts are the real ones) whose
answers to session.prompt are built by hand from the protocol module — messages, signatures,
ECIES — with one switchable `fault` that breaks them the way a hostile or broken provider
would. With `fault = None` it answers honestly through its model server.

Run it on an event loop of its own (a thread), since the workbench under test runs its own:

    with running_misbehaving_provider(key, chain, model_id, MODEL) as bad:
        bad.fault = "not-json"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, Literal

from eth_account import Account

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.protocol import Response, SessionPromptRes, ecies_encrypt, sign
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.handler import BackendAnswer, RequestHandler, Send
from mor_workbench.provider.server import ProviderServer
from mor_workbench.sandbox.model_server import ModelServer

Fault = Literal[
    "plaintext",  # a signed chunk that is not encrypted
    "not-json",  # an encrypted chunk whose plaintext is not JSON
    "not-object",  # an encrypted chunk of JSON that is not an object
    "foreign-key",  # a chunk signed by a key other than the provider's
    "replay",  # the same signed chunk twice
    "huge",  # one chunk over the consumer's message limit
    "endless",  # valid chunks forever, never [DONE]
    "slow-endless",  # valid chunks forever, one every `pace_s`, never [DONE]
    "stall-first",  # nothing at all after the request
    "stall-between",  # one valid chunk, then nothing
]
FAULTS: tuple[Fault, ...] = Fault.__args__  # type: ignore[attr-defined]

HUGE_BYTES = 5 * 1024 * 1024  # over the consumer's 4 MiB message limit


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunk(text: str, *, stream: bool = True) -> dict[str, Any]:
    """A valid OpenAI chat completion chunk (or whole completion) carrying `text`."""
    if stream:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        kind = "chat.completion"
    return {"id": "chatcmpl-bad", "object": kind, "created": 0, "model": "m", "choices": [choice]}


class MisbehavingHandler(RequestHandler):
    """`RequestHandler` whose prompt answers break MOR-RPC as `fault` says (None: honest)."""

    fast_channel = False  # its faults are the live wire's (the channel's: test_fastchannel)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fault: Fault | None = None
        self.pace_s = 0.5
        self.prompts = 0  # session.prompt requests answered with a fault

    async def _forward(
        self,
        session_id: bytes,
        answer: BackendAnswer,
        send_chunk: Callable[[Any], Awaitable[None]],
        user_key: bytes,
        request_id: str,
        send_response: Send,
    ) -> None:
        fault = self.fault
        if fault is None:
            await super()._forward(
                session_id, answer, send_chunk, user_key, request_id, send_response
            )
            return
        self.prompts += 1
        stream = answer.streaming

        async def send(message: str, key: bytes | None = None) -> SessionPromptRes:
            signed = sign(SessionPromptRes(message, _now_ms()), key or self._key)
            await send_response(Response(request_id, result=signed))
            return signed

        def boxed(plaintext: bytes) -> str:
            return "0x" + ecies_encrypt(user_key, plaintext).hex()

        valid = boxed(json.dumps(_chunk("Hello ", stream=stream)).encode())
        if fault == "plaintext":
            await send(json.dumps(_chunk("Hello ", stream=stream)))
        elif fault == "not-json":
            await send(boxed(b"this is not JSON {"))
        elif fault == "not-object":
            await send(boxed(b"[1, 2, 3]"))
        elif fault == "foreign-key":
            await send(valid, key=Account.create().key)
        elif fault == "replay":
            first = await send(valid)
            await send_response(Response(request_id, result=first))
        elif fault == "huge":
            await send("0x" + "00" * (HUGE_BYTES // 2))
        elif fault in ("endless", "slow-endless"):
            while True:
                await send_chunk(_chunk("again "))
                await asyncio.sleep(self.pace_s if fault == "slow-endless" else 0)
        elif fault == "stall-first":
            await asyncio.sleep(3600)
        elif fault == "stall-between":
            await send(valid)
            await asyncio.sleep(3600)
        if fault not in ("stall-first", "stall-between"):
            await asyncio.sleep(3600)  # hold the connection: the consumer must give up on it


class MisbehavingProvider(ProviderServer):
    """`ProviderServer` with a `MisbehavingHandler`: set `fault` (and `pace_s`) on it."""

    handler_class = MisbehavingHandler
    handler: MisbehavingHandler

    @property
    def fault(self) -> Fault | None:
        return self.handler.fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        self.handler.fault = fault

    @property
    def pace_s(self) -> float:
        return self.handler.pace_s

    @pace_s.setter
    def pace_s(self, pace_s: float) -> None:
        self.handler.pace_s = pace_s

    @property
    def prompts(self) -> int:
        """session.prompt requests answered with a fault."""
        return self.handler.prompts


class _Loop:
    """An event loop on a thread of its own, for servers the code under test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[Any], timeout: float = 60.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def running_misbehaving_provider(
    key: str, make_chain: Callable[[], Chain], model_id: bytes, model_name: str
) -> Iterator[MisbehavingProvider]:
    """A started `MisbehavingProvider` for `key`, serving `model_name` (id `model_id`) through
    a simulated model server, on a thread of its own; `endpoint` is where it listens."""
    loop = _Loop()
    backend = ModelServer([model_name], profile="instant")
    provider: MisbehavingProvider | None = None
    try:
        loop.run(backend.start())
        config = ModelConfig(model_id, model_name, f"{backend.base_url}/chat/completions")

        async def start() -> MisbehavingProvider:
            server = MisbehavingProvider(
                signer=Signer(key), chain=make_chain(), models=[config], claim_interval=None
            )
            return await server.start()

        provider = loop.run(start())
        yield provider
    finally:
        if provider is not None:
            provider.fault = None
            with contextlib.suppress(Exception):
                loop.run(provider.stop(), timeout=30)
            with contextlib.suppress(Exception):
                loop.run(provider.chain.rpc.aclose())
        with contextlib.suppress(Exception):
            loop.run(backend.stop(), timeout=30)
        loop.stop()
