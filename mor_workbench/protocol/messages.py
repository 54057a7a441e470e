"""MOR-RPC messages: the live network's params structs, their exact Go encoding, and parsing.

Each message lists its JSON fields in Go struct order with a kind that fixes the encoding:
`hex` (bytes as lowercase 0x hex), `address`, `hash` (32 bytes), `bigint` (a quoted decimal),
`uint` (a JSON number), `string`. A signature field is left out when empty (Go's omitempty),
except in ping/pong where Go writes it as "0x".

A parsed message keeps the fields it was received with, in the order received (`received`):
a signature is checked over those (`signing_payload`), not over the fields this version knows,
because a Go peer signs the JSON of its own struct and a newer peer's struct has more fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from eth_utils import is_hex_address

from mor_workbench.protocol.errors import LocalProtocolError, RemoteProtocolError
from mor_workbench.protocol.gojson import go_object, go_string

__all__ = [
    "MESSAGES",
    "Message",
    "ModelHealth",
    "PingReq",
    "PongRes",
    "Request",
    "Response",
    "RpcError",
    "SessionPromptReq",
    "SessionPromptRes",
    "SessionReportReq",
    "SessionReportRes",
    "SessionReq",
    "SessionRes",
    "go_json",
]

M = TypeVar("M", bound="Message")


def _hex(raw: bytes) -> str:
    return '"0x' + raw.hex() + '"'


def _encode(kind: str, value: Any) -> str:
    if kind in ("hex", "hash"):
        return _hex(value)
    if kind == "address":
        return '"' + value.lower() + '"'
    if kind == "bigint":
        return f'"{int(value)}"'
    if kind == "uint":
        return str(int(value))
    return go_string(value)


_GO_EXPONENT = re.compile(r"e([+-])0(\d)$")


def _go_float(number: float) -> str:
    """A float as Go's json.Marshal writes it: shortest digits, plain between 1e-6 and 1e21."""
    if not math.isfinite(number):
        raise RemoteProtocolError("a JSON number must be finite")
    if number == 0:
        return "0"
    if 1e-6 <= abs(number) < 1e21:  # Python writes 1.5e-05 and 1.0 where Go writes 0.000015, 1
        return format(Decimal(repr(number)), "f").removesuffix(".0")
    return _GO_EXPONENT.sub(r"e\1\2", repr(number))


def go_json(value: Any) -> str:
    """Any decoded JSON value (objects in their received order) as Go's json.Marshal wrote
    it: the bytes a Go peer signed, whatever its struct holds."""
    if type(value) is str:  # the common case first (a message's strings and hex)
        return go_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return go_object((k, go_json(v)) for k, v in value.items())
    raise LocalProtocolError(f"{type(value).__name__} is not a JSON value")


def _decode(kind: str, name: str, value: Any) -> Any:
    if kind in ("hex", "hash"):
        if not isinstance(value, str) or not value.startswith(("0x", "0X")):
            raise RemoteProtocolError(f"field {name!r} must be 0x-prefixed hex")
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise RemoteProtocolError(f"field {name!r} is not valid hex") from None
        if kind == "hash" and len(raw) != 32:
            raise RemoteProtocolError(f"field {name!r} must be 32 bytes")
        return raw
    if kind == "address":
        if not isinstance(value, str) or not is_hex_address(value):
            raise RemoteProtocolError(f"field {name!r} must be an address")
        return value.lower()
    if kind == "bigint":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RemoteProtocolError(f"field {name!r} must be a decimal integer")
        try:
            number = int(value)
        except ValueError:
            raise RemoteProtocolError(f"field {name!r} must be a decimal integer") from None
        if number < 0:
            raise RemoteProtocolError(f"field {name!r} must not be negative")
        return number
    if kind == "uint":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise RemoteProtocolError(f"field {name!r} must be an unsigned 64-bit integer")
        return value
    if not isinstance(value, str):
        raise RemoteProtocolError(f"field {name!r} must be a string")
    return value


@dataclass(frozen=True)
class Message:
    """A signed params struct. Subclasses declare SPEC: (json key, attribute, kind) in Go order.

    `received` holds the JSON members a parsed message arrived with, in their order (None for a
    message built here); it takes no part in equality."""

    SPEC: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    SIGNATURE_ALWAYS: ClassVar[bool] = False  # ping/pong write an empty signature as "0x"
    OMIT_EMPTY: ClassVar[tuple[str, ...]] = ()  # our extensions: left out when empty (omitempty)

    received: tuple[tuple[str, Any], ...] | None = field(
        default=None, kw_only=True, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for _, attr, kind in self.SPEC:
            if kind == "address":  # Go writes addresses in lowercase; keep one form
                object.__setattr__(self, attr, getattr(self, attr).lower())

    def encode(self, *, signed: bool = True) -> bytes:
        """The JSON bytes a Go peer produces for this struct (without the signature if not
        `signed`: those are the bytes that get signed)."""
        members = []
        for key, attr, kind in self.SPEC:
            value = getattr(self, attr)
            if attr == "signature":
                if not signed:
                    value = b""
                if not value and not self.SIGNATURE_ALWAYS:
                    continue
            elif not value and attr in self.OMIT_EMPTY:
                continue
            members.append((key, _encode(kind, value)))
        return go_object(members).encode()

    def signing_payload(self) -> bytes:
        """The bytes the sender signed: for a received message, every member it carried, in
        the order received, with the signature emptied as Go empties it (left out, or "0x" in
        ping/pong); for a message built here, `encode(signed=False)`."""
        if self.received is None:
            return self.encode(signed=False)
        members = []
        for key, value in self.received:
            if key == "signature":
                if not self.SIGNATURE_ALWAYS:
                    continue
                members.append((key, '"0x"'))
            else:
                members.append((key, go_json(value)))
        return go_object(members).encode()

    def unknown_fields(self) -> frozenset[str]:
        """Received members this version does not encode (a newer peer's fields)."""
        known = {key for key, _, _ in self.SPEC}
        return frozenset(k for k, _ in self.received or () if k not in known)

    @classmethod
    def from_json(cls: type[M], obj: Any) -> M:
        """Parse a decoded JSON object; unknown keys are ignored, as Go ignores them, but kept
        in `received` for the signature check."""
        if not isinstance(obj, dict):
            raise RemoteProtocolError(f"{cls.__name__} must be a JSON object")
        values: dict[str, Any] = {}
        for key, attr, kind in cls.SPEC:
            if key not in obj or obj[key] is None:
                if attr == "signature" or attr in cls._optional() or attr in cls.OMIT_EMPTY:
                    values[attr] = b"" if kind == "hex" else ""
                    continue
                raise RemoteProtocolError(f"{cls.__name__} is missing {key!r}")
            values[attr] = _decode(kind, key, obj[key])
        values.update(cls._extra(obj))
        return cls(**values, received=tuple(obj.items()))

    @classmethod
    def _optional(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def _extra(cls, obj: dict[str, Any]) -> dict[str, Any]:
        """Attributes parsed from members outside SPEC (none but in the pong)."""
        return {}

    def with_signature(self: M, signature: bytes) -> M:
        return replace(self, signature=signature, received=None)

    def to_json(self) -> Any:
        return json.loads(self.encode())


@dataclass(frozen=True)
class PingReq(Message):
    nonce: bytes
    signature: bytes = b""
    SPEC = (("nonce", "nonce", "hex"), ("signature", "signature", "hex"))
    SIGNATURE_ALWAYS = True
    METHOD: ClassVar[str] = "network.ping"


@dataclass(frozen=True)
class ModelHealth:
    """One entry of a provider's health report (the pong's `models`, live since proxy-router
    v7.4, PRs #772/#773/#781/#836): the on-chain model id, the status (on the live network
    `healthy`, `degraded`, `unhealthy`, `no_bid`, `no_model_configured` or `tee_unverified`;
    others are kept as received), the bid it serves, the on-chain model name, the coarse
    error kind (e.g. `bad_response`, `rate_limited`) and the backend's HTTP status of the last
    probe (0: none). The key names are the PRs' (modelId, status, errorKind, httpStatus,
    modelName); `bidId` and the order of the keys in the live Go struct are not confirmed,
    and matter to no one: a received report is verified in the order it arrives."""

    model_id: bytes
    status: str
    bid_id: bytes = b""
    model_name: str = ""
    error_kind: str = ""
    http_status: int = 0

    def encode(self) -> str:
        """JSON as our provider writes it; empty fields are left out (Go's omitempty)."""
        members = [("modelId", _hex(self.model_id))]
        if self.bid_id:
            members.append(("bidId", _hex(self.bid_id)))
        if self.model_name:
            members.append(("modelName", go_string(self.model_name)))
        members.append(("status", go_string(self.status)))
        if self.error_kind:
            members.append(("errorKind", go_string(self.error_kind)))
        if self.http_status:
            members.append(("httpStatus", str(self.http_status)))
        return go_object(members)

    @classmethod
    def from_json(cls, obj: Any) -> ModelHealth | None:
        """An entry from a received report; None when it names no model id or status (an
        entry this version cannot read says nothing about the model)."""
        if not isinstance(obj, dict):
            return None
        try:
            model_id = _decode("hash", "modelId", obj.get("modelId"))
            status = _decode("string", "status", obj.get("status"))
        except RemoteProtocolError:
            return None
        try:
            bid_id = _decode("hash", "bidId", obj["bidId"]) if obj.get("bidId") else b""
        except RemoteProtocolError:
            bid_id = b""
        name, kind, http = obj.get("modelName"), obj.get("errorKind"), obj.get("httpStatus")
        return cls(
            model_id,
            status,
            bid_id,
            name if isinstance(name, str) else "",
            kind if isinstance(kind, str) else "",
            http if isinstance(http, int) and not isinstance(http, bool) else 0,
        )


@dataclass(frozen=True)
class PongRes(Message):
    """Ping answer. `version` tells the consumer what the provider supports; ours carries the
    token `encrypted-prompts` when it accepts ECIES-encrypted prompts. `models` is the
    provider's health report (None when the pong carries none: a provider before v7.4).

    Our pong signs nonce and version only and carries the report after the signature, so that
    every live consumer that re-encodes only the fields it knows (v7.0-7.3's Go PongRes) still
    verifies it; a received pong is verified over what it carries (`signing_payload`), so a
    report a peer signed is checked too."""

    nonce: bytes
    version: str = ""
    signature: bytes = b""
    models: tuple[ModelHealth, ...] | None = None
    SPEC = (
        ("nonce", "nonce", "hex"),
        ("version", "version", "string"),
        ("signature", "signature", "hex"),
    )
    SIGNATURE_ALWAYS = True

    @classmethod
    def _optional(cls) -> tuple[str, ...]:
        return ("version",)

    @classmethod
    def _extra(cls, obj: dict[str, Any]) -> dict[str, Any]:
        report = obj.get("models")
        if not isinstance(report, list):
            return {}
        entries = (ModelHealth.from_json(e) for e in report)
        return {"models": tuple(e for e in entries if e is not None)}

    def encode(self, *, signed: bool = True) -> bytes:
        members = [("nonce", _encode("hex", self.nonce))]
        if self.version:
            members.append(("version", go_string(self.version)))
        members.append(("signature", _encode("hex", self.signature if signed else b"")))
        if signed and self.models:
            members.append(("models", "[" + ",".join(m.encode() for m in self.models) + "]"))
        return go_object(members).encode()

    def health_of(self, model_id: bytes) -> ModelHealth | None:
        """The report's entry for `model_id` (None: no report, or the model is not in it)."""
        return next((m for m in self.models or () if m.model_id == model_id), None)


@dataclass(frozen=True)
class SessionReq(Message):
    """session.request: the consumer asks a provider to approve a session on one bid."""

    user: str
    key: bytes  # the consumer's uncompressed public key (65 bytes)
    spend: int
    timestamp: int  # milliseconds
    bid_id: bytes
    signature: bytes = b""
    SPEC = (
        ("signature", "signature", "hex"),
        ("user", "user", "address"),
        ("key", "key", "hex"),
        ("spend", "spend", "bigint"),
        ("timestamp", "timestamp", "uint"),
        ("bidid", "bid_id", "hash"),
    )
    METHOD: ClassVar[str] = "session.request"


@dataclass(frozen=True)
class SessionRes(Message):
    """The provider's answer: its public key and the signed approval to open on chain."""

    pubkey: bytes
    approval: bytes
    approval_sig: bytes
    user: str
    timestamp: int
    signature: bytes = b""
    SPEC = (
        ("message", "pubkey", "hex"),
        ("approval", "approval", "hex"),
        ("approvalSig", "approval_sig", "hex"),
        ("user", "user", "address"),
        ("timestamp", "timestamp", "uint"),
        ("signature", "signature", "hex"),
    )


@dataclass(frozen=True)
class SessionPromptReq(Message):
    """session.prompt: an OpenAI request body as a JSON string (or 0x-hex ECIES of it).

    `fast_channel` (our extension, sent only to a provider whose pong advertises
    `fast-channel/1`, left out when empty): the consumer's ephemeral X25519 public key, an
    offer to stream the answer on the fast channel (`mor_workbench.protocol.fastchannel`)."""

    session_id: bytes
    message: str
    timestamp: int
    signature: bytes = b""
    fast_channel: bytes = b""
    SPEC = (
        ("signature", "signature", "hex"),
        ("sessionid", "session_id", "hash"),
        ("message", "message", "string"),
        ("timestamp", "timestamp", "uint"),
        ("fastChannel", "fast_channel", "hex"),
    )
    OMIT_EMPTY = ("fast_channel",)
    METHOD: ClassVar[str] = "session.prompt"


@dataclass(frozen=True)
class SessionPromptRes(Message):
    """One streamed piece of the answer: hex of the ECIES-encrypted JSON chunk.

    `fast_channel` (our extension, only in answer to an offer, left out when empty): the
    provider's ephemeral X25519 public key; this signed reply accepts the offer, and the answer
    follows as fast-channel frames (`mor_workbench.protocol.fastchannel`)."""

    message: str
    timestamp: int
    signature: bytes = b""
    fast_channel: bytes = b""
    SPEC = (
        ("message", "message", "string"),
        ("signature", "signature", "hex"),
        ("timestamp", "timestamp", "uint"),
        ("fastChannel", "fast_channel", "hex"),
    )
    OMIT_EMPTY = ("fast_channel",)


@dataclass(frozen=True)
class SessionReportReq(Message):
    """session.report: ask the provider for its signed close receipt (message: session id)."""

    message: str
    timestamp: int
    signature: bytes = b""
    SPEC = (
        ("signature", "signature", "hex"),
        ("message", "message", "string"),
        ("timestamp", "timestamp", "uint"),
    )
    METHOD: ClassVar[str] = "session.report"


@dataclass(frozen=True)
class SessionReportRes(Message):
    """The receipt (ABI bytes) and its EIP-191 signature, for closeSession."""

    message: bytes
    signed_report: bytes
    timestamp: int
    signature: bytes = b""
    SPEC = (
        ("message", "message", "hex"),
        ("signedReport", "signed_report", "hex"),
        ("signature", "signature", "hex"),
        ("timestamp", "timestamp", "uint"),
    )


@dataclass(frozen=True)
class RpcError:
    """An error reply: `signature` None for the live network's unsigned infrastructure errors."""

    message: str
    code: int = 400
    timestamp: int = 0
    signature: bytes | None = None
    received: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def encode(self, *, signed: bool = True) -> bytes:
        sig = "null" if self.signature is None or not signed else _hex(self.signature)
        data = go_object([("timestamp", str(self.timestamp)), ("signature", sig)])
        return go_object(
            [("message", go_string(self.message)), ("code", str(self.code)), ("data", data)]
        ).encode()

    def signing_payload(self) -> bytes:
        """The bytes the sender signed: the received error with every member it carried, in
        order, and `data.signature` null (as the live router signs it); else `encode`'s."""
        if self.received is None:
            return self.encode(signed=False)
        unsigned = dict(self.received)
        unsigned["data"] = {**unsigned["data"], "signature": None}
        return go_json(unsigned).encode()

    def unknown_fields(self) -> frozenset[str]:
        """Received members (data.* named so) this version does not encode."""
        if self.received is None:
            return frozenset()
        extra = {k for k in self.received if k not in ("message", "code", "data")}
        extra |= {f"data.{k}" for k in self.received["data"] if k not in ("timestamp", "signature")}
        return frozenset(extra)

    @classmethod
    def from_json(cls, obj: Any) -> RpcError:
        if not isinstance(obj, dict) or not isinstance(obj.get("message"), str):
            raise RemoteProtocolError("error must be an object with a message")
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        raw_sig = data.get("signature")
        signature = None
        if isinstance(raw_sig, str) and raw_sig.startswith("0x"):
            try:
                signature = bytes.fromhex(raw_sig[2:]) or None
            except ValueError:
                signature = None
        code = obj.get("code") if isinstance(obj.get("code"), int) else 400
        ts = data.get("timestamp") if isinstance(data.get("timestamp"), int) else 0
        received = obj if isinstance(obj.get("data"), dict) else None
        return cls(obj["message"], code, ts, signature, received)


MESSAGES: dict[str, type[Message]] = {
    "network.ping": PingReq,
    "session.request": SessionReq,
    "session.prompt": SessionPromptReq,
    "session.report": SessionReportReq,
}


@dataclass(frozen=True)
class Request:
    """The envelope a consumer sends: {"id", "method", "params"}."""

    id: str
    params: Message

    @property
    def method(self) -> str:
        return self.params.METHOD  # type: ignore[attr-defined]

    def encode(self) -> bytes:
        return (
            go_object(
                [
                    ("id", go_string(self.id)),
                    ("method", go_string(self.method)),
                    ("params", self.params.encode().decode()),
                ]
            )
            + "\n"
        ).encode()

    @classmethod
    def from_json(cls, obj: Any) -> Request:
        if not isinstance(obj, dict):
            raise RemoteProtocolError("a request must be a JSON object")
        method, rid = obj.get("method"), obj.get("id", "")
        if not isinstance(method, str) or not isinstance(rid, str):
            raise RemoteProtocolError("a request needs a string id and method")
        kind = MESSAGES.get(method)
        if kind is None:
            raise RemoteProtocolError(f"unknown method {method!r}")
        return cls(rid, kind.from_json(obj.get("params")))


@dataclass(frozen=True)
class Response:
    """The envelope a provider sends: {"id", "result"} or {"id", "result": null, "error"}."""

    id: str
    result: Message | None = None
    error: RpcError | None = None
    encoded: bytes | None = field(default=None, kw_only=True, compare=False, repr=False)
    """Its wire bytes when they were built with it, in one pass (`live_chunks.ChunkSealer`);
    None: `encode` writes them."""

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise LocalProtocolError("a response carries exactly one of result and error")

    def encode(self) -> bytes:
        if self.encoded is not None:
            return self.encoded
        members = [("id", go_string(self.id))]
        if self.error is not None:
            members += [("result", "null"), ("error", self.error.encode().decode())]
        else:
            assert self.result is not None
            members.append(("result", self.result.encode().decode()))
        return (go_object(members) + "\n").encode()

    @classmethod
    def from_json(cls, obj: Any, expect: type[Message]) -> Response:
        """Parse a response whose result should be an `expect`."""
        if not isinstance(obj, dict):
            raise RemoteProtocolError("a response must be a JSON object")
        rid = obj.get("id", "")
        rid = rid if isinstance(rid, str) else str(rid)
        if obj.get("error") is not None:
            return cls(rid, error=RpcError.from_json(obj["error"]))
        if obj.get("result") is None:
            raise RemoteProtocolError("a response needs a result or an error")
        return cls(rid, result=expect.from_json(obj["result"]))
