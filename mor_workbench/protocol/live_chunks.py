"""The live wire's streamed chunks, built in one pass: a provider's payload (a backend's JSON
chunk) to the bytes of the signed response that carries it, ECIES-encrypted to the consumer.

A chunk on the live network is `{"id":…,"result":{"message":"0x<hex of the ECIES box>",
"signature":"0x…","timestamp":<ms>}}` followed by a newline, signed over the Go JSON of the
result without its signature, `{"message":"0x…","timestamp":<ms>}` (`SessionPromptRes`). Hex
needs no JSON escaping, so those bytes are written directly, once each, instead of encoding
the message twice (to sign it, then to send it) through the generic encoder; the output is
byte for byte what `Response(id, result=sign(SessionPromptRes(…), key)).encode()` gives.

The chunks of one answer share one ephemeral ECIES key (`ecies.BoxSealer`): each box is a
go-ethereum ECIES message a Go consumer opens unchanged, and costs no elliptic-curve
multiplication; the signature is the one multiplication left per chunk.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKey

from mor_workbench.protocol.ecies import BoxSealer
from mor_workbench.protocol.framing import Decoder
from mor_workbench.protocol.gojson import go_string
from mor_workbench.protocol.messages import Response, SessionPromptRes
from mor_workbench.protocol.payload_json import compact
from mor_workbench.protocol.signing import keccak, sign_digest

__all__ = ["ChunkLines", "ChunkSealer", "SealedChunk"]


class ChunkSealer:
    """Seals the chunks of one answer: to `request_id`, signed with `signing_key` (the
    provider's, built once), encrypted to `recipient` (the consumer's public key, 65 or 64
    bytes or already parsed) under one ephemeral key for the answer. Raises
    `LocalProtocolError` when `recipient` is not a secp256k1 public key."""

    def __init__(
        self, request_id: str, signing_key: PrivateKey, recipient: bytes | PublicKey
    ) -> None:
        self._request_id = request_id
        self._key = signing_key
        self._boxes = BoxSealer(recipient)
        self._head = '{"id":' + go_string(request_id) + ',"result":{"message":"0x'

    def seal(self, payload: Any, timestamp_ms: int) -> Response:
        """The response carrying `payload` (a JSON value: a backend's chunk, or "[DONE]"),
        written compactly (`payload_json.compact`: no spaces, UTF-8) and stamped
        `timestamp_ms` (ms, wall clock), with its wire bytes already encoded."""
        plaintext = compact(payload)
        return self.envelope(self._boxes.seal(plaintext), timestamp_ms)

    def envelope(self, box: bytes, timestamp_ms: int) -> Response:
        """The signed response carrying an ECIES `box` already made."""
        box_hex = box.hex()
        stamp = str(int(timestamp_ms))
        signature = sign_digest(
            keccak(('{"message":"0x' + box_hex + '","timestamp":' + stamp + "}").encode()),
            self._key,
        )
        tail = '","signature":"0x' + signature.hex() + '","timestamp":' + stamp + "}}\n"
        message = SessionPromptRes("0x" + box_hex, timestamp_ms, signature)
        wire = (self._head + box_hex + tail).encode()
        return Response(self._request_id, result=message, encoded=wire)


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """A chunk read straight from its line, not yet checked: its ECIES box, its 65-byte
    signature and the bytes that signature must cover (the result's Go JSON without its
    signature, as the provider signed it)."""

    box: bytes
    signature: bytes
    signed: bytes


_SIGNATURE = b'","signature":"0x'
_TIMESTAMP = b'","timestamp":'
_SIGNATURE_HEX = 130
_STAMP = re.compile(rb"(0|[1-9][0-9]{0,18})}}")
"""A chunk line's timestamp and the two closing braces (a JSON integer: no leading zero)."""


class ChunkLines:
    """The consumer's reading of the replies to one prompt (request `request_id`), sans-IO:
    `feed(bytes)` gives each message completed, in order. A chunk in the form a provider writes
    it (one line, `{"id":<request_id>,"result":{"message":"0x<hex>","signature":"0x<hex>",
    "timestamp":<ms>}}`, members in the Go struct's order, no spaces) comes as a `SealedChunk`,
    read from its bytes (the signed bytes are a slice of the line: hex needs no JSON escaping)
    without a JSON parse; anything else (errors, other spellings, a newer peer's extra
    members) as a `Response` parsed by the generic path, so nothing is refused here that the
    generic path accepts. Messages over `max_message` bytes or malformed raise
    `RemoteProtocolError`."""

    reusable = False
    """The live wire takes one request per connection."""

    def __init__(self, request_id: str, max_message: int) -> None:
        self._head = ('{"id":' + go_string(request_id) + ',"result":{"message":"0x').encode()
        self._decoder = Decoder(max_message, read_line=self._chunk)

    def feed(self, data: bytes) -> list[SealedChunk | Response]:
        if data[-1:] == b"\n" and self._decoder.idle and data.find(b"\n") == len(data) - 1:
            chunk = self._chunk(data[:-1])  # one whole line, the usual read: no buffering
            if chunk is not None:
                return [chunk]
        return [
            item if type(item) is SealedChunk else Response.from_json(item, SessionPromptRes)
            for item in self._decoder.feed(data)
        ]

    def _chunk(self, line: bytes) -> SealedChunk | None:
        """The chunk `line` carries when it has the form above, else None."""
        if not line.startswith(self._head):
            return None
        box_start = len(self._head)
        box_end = line.find(_SIGNATURE, box_start)
        signature_end = box_end + len(_SIGNATURE) + _SIGNATURE_HEX
        if box_end < 0 or not line.startswith(_TIMESTAMP, signature_end):
            return None
        stamp = _STAMP.fullmatch(line, signature_end + len(_TIMESTAMP))
        if stamp is None:
            return None
        try:  # strict hex: no spaces, nothing a JSON string would escape
            box = binascii.unhexlify(line[box_start:box_end])
            signature = binascii.unhexlify(line[box_end + len(_SIGNATURE) : signature_end])
        except binascii.Error:
            return None
        signed = b'{"message":"0x' + line[box_start:box_end] + _TIMESTAMP + stamp[1] + b"}"
        return SealedChunk(box, signature, signed)
