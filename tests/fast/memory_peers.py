"""Providers in memory for the fast tests: each answers MOR-RPC bytes handed to it by the
router's `MockTransport`, with real messages, real signatures by its own registered key and
real ECIES, and approvals and receipts the real contracts on anvil accept.

A provider's `mode` says how it treats prompts: "answer" (streams `ANSWER` word by word),
"refuse" (a signed error), "stall" (says nothing), or "die" (a few chunks, then its process
is gone: the connection breaks and its endpoint refuses connections from then on). Pings,
approvals and close receipts it always answers while it is up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mor_workbench.chain.client import Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.protocol import (
    ENCRYPTED_PROMPTS,
    Approval,
    Decoder,
    PingReq,
    PongRes,
    Receipt,
    Request,
    Response,
    RpcError,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
    ecies_decrypt,
    ecies_encrypt,
    encode_approval,
    encode_receipt,
    eth_sign,
    public_key_of,
    sign,
    sign_error,
    verify,
)
from mor_workbench.protocol.signing import recover_public_key
from mor_workbench.router.transport import PeerHandler

ANSWER = "Rivers route water the way routers route words."
DIE_AFTER_CHUNKS = 3
Mode = Literal["answer", "refuse", "stall", "die"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def chunk(text: str) -> dict[str, Any]:
    """An OpenAI chat completion chunk carrying `text`."""
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {"id": "chatcmpl-mem", "object": "chat.completion.chunk", "choices": [choice]}


def words(text: str) -> list[str]:
    """`text` as a provider streams it: one word (with its leading space) per chunk."""
    first, *rest = text.split(" ")
    return [first, *(" " + w for w in rest)]


@dataclass
class MemoryProvider:
    """One registered provider, served in memory at `endpoint` (see the module docstring)."""

    signer: Signer
    endpoint: str
    chain: Chain
    routes: dict[str, PeerHandler]
    mode: Mode = "answer"
    asked: list[str] = field(default_factory=list)  # the kinds of request received, in order
    prompts: list[dict[str, Any]] = field(default_factory=list)  # bodies received, decrypted
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # set when a prompt stalls
    _last_approval_ms: int = 0

    def __post_init__(self) -> None:
        self._key = self.signer.private_key_bytes()
        self.pubkey = public_key_of(self._key)
        self.up()

    @property
    def address(self) -> str:
        return self.signer.address

    def up(self) -> None:
        """Listen at the endpoint (again)."""
        self.routes[self.endpoint] = self.handle

    def down(self) -> None:
        """Gone, as a killed process: its endpoint refuses connections."""
        self.routes.pop(self.endpoint, None)

    async def handle(self, data: bytes) -> AsyncIterator[bytes]:
        """The replies to one request's bytes (a `PeerHandler`)."""
        (raw,) = Decoder().feed(data)
        request = Request.from_json(raw)
        params = request.params
        self.asked.append(type(params).__name__)
        if isinstance(params, PingReq):
            yield self._result(request, PongRes(params.nonce, f"memory/1 {ENCRYPTED_PROMPTS}"))
        elif isinstance(params, SessionReq):
            yield self._result(request, await self._approve(params))
        elif isinstance(params, SessionReportReq):
            yield self._result(request, await self._report(params))
        elif isinstance(params, SessionPromptReq):
            async for reply in self._prompt(request, params):
                yield reply

    def _result(self, request: Request, message: Any) -> bytes:
        return Response(request.id, result=sign(message, self._key)).encode()

    async def _chain_now(self) -> int:
        """The chain's time (s) of the next block, which checks what we sign."""
        block = await self.chain.rpc.request("eth_getBlockByNumber", ["pending", False])
        return int(block["timestamp"], 16)

    async def _approve(self, req: SessionReq) -> SessionRes:
        verify(req, public_key=req.key)
        # ms on the chain's clock, strictly increasing: one approval, one session
        self._last_approval_ms = max(await self._chain_now() * 1000, self._last_approval_ms + 1)
        chain_id = self.chain.deployment.chain_id
        approval = encode_approval(Approval(req.bid_id, chain_id, req.user, self._last_approval_ms))
        return SessionRes(self.pubkey, approval, eth_sign(approval, self._key), req.user, _now_ms())

    async def _report(self, req: SessionReportReq) -> SessionReportRes:
        session_id = bytes.fromhex(req.message.removeprefix("0x"))
        chain_id = self.chain.deployment.chain_id
        receipt = encode_receipt(Receipt(session_id, chain_id, await self._chain_now(), 0, 0))
        return SessionReportRes(receipt, eth_sign(receipt, self._key), _now_ms())

    async def _prompt(self, request: Request, req: SessionPromptReq) -> AsyncIterator[bytes]:
        user_key = recover_public_key(req)
        text = req.message
        if text.startswith("0x"):
            text = ecies_decrypt(self._key, bytes.fromhex(text[2:])).decode()
        self.prompts.append(json.loads(text))
        if self.mode == "refuse":
            error = sign_error(RpcError("provider overloaded", 503, _now_ms()), self._key)
            yield Response(request.id, error=error).encode()
            return
        if self.mode == "stall":
            self.stalled.set()
            await asyncio.Event().wait()  # alive, silent: until the consumer hangs up
        for index, word in enumerate(words(ANSWER)):
            if self.mode == "die" and index == DIE_AFTER_CHUNKS:
                self.down()
                raise ConnectionResetError(104, "Connection reset by peer")
            yield self._sealed(request, user_key, chunk(word))
        yield self._sealed(request, user_key, "[DONE]")

    def _sealed(self, request: Request, user_key: bytes, payload: Any) -> bytes:
        box = ecies_encrypt(user_key, json.dumps(payload, separators=(",", ":")).encode())
        return self._result(request, SessionPromptRes("0x" + box.hex(), _now_ms()))
