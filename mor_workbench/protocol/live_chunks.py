"""The live wire's streamed chunks, built in one pass: a provider's payload (a backend's JSON
chunk) to the bytes of the signed response that carries it, ECIES-encrypted to the consumer.

A chunk on the live network is `{"id":…,"result":{"message":"0x<hex of the ECIES box>",
"signature":"0x…","timestamp":<ms>}}` followed by a newline, signed over the Go JSON of the
result without its signature, `{"message":"0x…","timestamp":<ms>}` (`SessionPromptRes`). Hex
needs no JSON escaping, so those bytes are written directly, once each, instead of encoding
the message twice (to sign it, then to send it) through the generic encoder; the output is
byte for byte what `Response(id, result=sign(SessionPromptRes(…), key)).encode()` gives.
"""

from __future__ import annotations

import json
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak

from mor_workbench.protocol.ecies import ecies_encrypt, recipient_key
from mor_workbench.protocol.gojson import go_string
from mor_workbench.protocol.messages import Response, SessionPromptRes
from mor_workbench.protocol.signing import sign_digest

__all__ = ["ChunkSealer"]

_compact_json = json.JSONEncoder(separators=(",", ":")).encode
"""json.dumps(value, separators=(",", ":")), without building an encoder per chunk."""


class ChunkSealer:
    """Seals the chunks of one answer: to `request_id`, signed with `signing_key` (the
    provider's, built once), encrypted to `recipient` (the consumer's public key, 65 or 64
    bytes or already parsed; parsed once here). Raises `LocalProtocolError` when `recipient`
    is not a secp256k1 public key."""

    def __init__(
        self, request_id: str, signing_key: PrivateKey, recipient: bytes | PublicKey
    ) -> None:
        self._request_id = request_id
        self._key = signing_key
        if not isinstance(recipient, PublicKey):
            recipient = recipient_key(recipient)
        self._recipient = recipient
        self._head = '{"id":' + go_string(request_id) + ',"result":{"message":"0x'

    def seal(self, payload: Any, timestamp_ms: int) -> Response:
        """The response carrying `payload` (a JSON value: a backend's chunk, or "[DONE]"),
        written compactly (no spaces, ASCII) and stamped `timestamp_ms` (ms, wall clock),
        with its wire bytes already encoded."""
        plaintext = _compact_json(payload).encode()
        return self.envelope(ecies_encrypt(self._recipient, plaintext), timestamp_ms)

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
