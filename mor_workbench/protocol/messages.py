"""MOR-RPC messages: the live network's params structs, their exact Go encoding, and parsing.

Each message lists its JSON fields in Go struct order with a kind that fixes the encoding:
`hex` (bytes as lowercase 0x hex), `address`, `hash` (32 bytes), `bigint` (a quoted decimal),
`uint` (a JSON number), `string`. A signature field is left out when empty (Go's omitempty),
except in ping/pong where Go writes it as "0x".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from eth_utils import is_hex_address

from mor_workbench.protocol.errors import LocalProtocolError, RemoteProtocolError
from mor_workbench.protocol.gojson import go_object, go_string

__all__ = [
    "MESSAGES",
    "Message",
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
    """A signed params struct. Subclasses declare SPEC: (json key, attribute, kind) in Go order."""

    SPEC: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    SIGNATURE_ALWAYS: ClassVar[bool] = False  # ping/pong write an empty signature as "0x"

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
            members.append((key, _encode(kind, value)))
        return go_object(members).encode()

    @classmethod
    def from_json(cls: type[M], obj: Any) -> M:
        """Parse a decoded JSON object; unknown keys are ignored, as Go ignores them."""
        if not isinstance(obj, dict):
            raise RemoteProtocolError(f"{cls.__name__} must be a JSON object")
        values: dict[str, Any] = {}
        for key, attr, kind in cls.SPEC:
            if key not in obj or obj[key] is None:
                if attr == "signature" or attr in cls._optional():
                    values[attr] = b"" if kind == "hex" else ""
                    continue
                raise RemoteProtocolError(f"{cls.__name__} is missing {key!r}")
            values[attr] = _decode(kind, key, obj[key])
        return cls(**values)

    @classmethod
    def _optional(cls) -> tuple[str, ...]:
        return ()

    def with_signature(self: M, signature: bytes) -> M:
        return replace(self, signature=signature)

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
class PongRes(Message):
    """Ping answer. `version` tells the consumer what the provider supports; ours carries the
    token `encrypted-prompts` when it accepts ECIES-encrypted prompts."""

    nonce: bytes
    version: str = ""
    signature: bytes = b""
    SPEC = (
        ("nonce", "nonce", "hex"),
        ("version", "version", "string"),
        ("signature", "signature", "hex"),
    )
    SIGNATURE_ALWAYS = True

    @classmethod
    def _optional(cls) -> tuple[str, ...]:
        return ("version",)

    def encode(self, *, signed: bool = True) -> bytes:
        members = [("nonce", _encode("hex", self.nonce))]
        if self.version:
            members.append(("version", go_string(self.version)))
        members.append(("signature", _encode("hex", self.signature if signed else b"")))
        return go_object(members).encode()


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
    """session.prompt: an OpenAI request body as a JSON string (or 0x-hex ECIES of it)."""

    session_id: bytes
    message: str
    timestamp: int
    signature: bytes = b""
    SPEC = (
        ("signature", "signature", "hex"),
        ("sessionid", "session_id", "hash"),
        ("message", "message", "string"),
        ("timestamp", "timestamp", "uint"),
    )
    METHOD: ClassVar[str] = "session.prompt"


@dataclass(frozen=True)
class SessionPromptRes(Message):
    """One streamed piece of the answer: hex of the ECIES-encrypted JSON chunk."""

    message: str
    timestamp: int
    signature: bytes = b""
    SPEC = (
        ("message", "message", "string"),
        ("signature", "signature", "hex"),
        ("timestamp", "timestamp", "uint"),
    )


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

    def encode(self, *, signed: bool = True) -> bytes:
        sig = "null" if self.signature is None or not signed else _hex(self.signature)
        data = go_object([("timestamp", str(self.timestamp)), ("signature", sig)])
        return go_object(
            [("message", go_string(self.message)), ("code", str(self.code)), ("data", data)]
        ).encode()

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
        return cls(obj["message"], code, ts, signature)


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

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise LocalProtocolError("a response carries exactly one of result and error")

    def encode(self) -> bytes:
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
