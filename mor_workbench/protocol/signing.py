"""Signatures: MOR-RPC messages (keccak256 of the Go JSON, raw secp256k1, v in {0,1}) and the
payloads checked on chain (approval and receipt ABI encodings, EIP-191 signatures, v + 27).

Keys may be given as bytes or as coincurve key objects; a caller that signs or verifies many
messages (a provider streaming chunks, a consumer reading them) passes the objects, built once:
building a `PrivateKey` from bytes costs about as much as a signature."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TypeVar

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash import Keccak256
from eth_hash.backends.pysha3 import backend as pysha3_backend
from eth_utils import to_checksum_address

from mor_workbench.protocol.errors import LocalProtocolError, RemoteProtocolError
from mor_workbench.protocol.messages import Message, RpcError

__all__ = [
    "Approval",
    "Receipt",
    "address_of",
    "decode_approval",
    "decode_receipt",
    "encode_approval",
    "encode_receipt",
    "eth_recover",
    "eth_sign",
    "keccak",
    "parse_public_key",
    "public_key_of",
    "recover_public_key",
    "sign",
    "sign_digest",
    "sign_error",
    "verify",
    "verify_digest",
]

M = TypeVar("M", bound=Message)

keccak = Keccak256(pysha3_backend)
"""keccak256 (bytes → 32 bytes) through eth-hash's pysha3 backend (safe-pysha3, in C): about
5 µs for a chunk's 1.3 KB of signed JSON, against 11 through pycryptodome, which
`eth_hash.auto` picks first when both are installed (eth-account installs pycryptodome)."""
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def public_key_of(private_key: bytes) -> bytes:
    """The uncompressed public key (65 bytes, 0x04 ‖ X ‖ Y) of a private key."""
    return PrivateKey(private_key).public_key.format(compressed=False)


@functools.lru_cache(maxsize=4096)
def address_of(public_key: bytes) -> str:
    """The checksummed Ethereum address of a public key (65 or 64 bytes); remembered for the
    last 4,096 keys (a provider asks it of the same users' keys for every prompt, and the
    checksum costs as much as a signature check)."""
    raw = public_key[1:] if len(public_key) == 65 else public_key
    if len(raw) != 64:
        raise RemoteProtocolError("a public key must be 64 or 65 bytes")
    return to_checksum_address(keccak(raw)[-20:])


def sign_digest(digest: bytes, private_key: bytes | PrivateKey) -> bytes:
    """The recoverable secp256k1 signature r ‖ s ‖ v (v in {0, 1}, low s, RFC 6979 nonce) over
    a 32-byte digest."""
    if not isinstance(private_key, PrivateKey):
        private_key = PrivateKey(private_key)
    return private_key.sign_recoverable(digest, hasher=None)


def _recovery_id(signature: bytes) -> int:
    """v of a 65-byte signature (0/1, or 27/28 as on chain) after the shape checks every
    signature gets: 65 bytes, a known v, s in the lower half (no malleable twin)."""
    if len(signature) != 65:
        raise RemoteProtocolError("a signature must be 65 bytes")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1) or int.from_bytes(signature[32:64], "big") > _SECP256K1_HALF_N:
        raise RemoteProtocolError("the signature is malformed")
    return v


def _recover(digest: bytes, signature: bytes) -> bytes:
    v = _recovery_id(signature)
    try:
        key = PublicKey.from_signature_and_message(signature[:64] + bytes([v]), digest, hasher=None)
    except Exception:
        raise RemoteProtocolError("the signature does not recover to a key") from None
    return key.format(compressed=False)


def verify_digest(digest: bytes, signature: bytes, public_key: PublicKey) -> bool:
    """Whether `signature` (65 bytes, r ‖ s ‖ v) over `digest` was made by `public_key`: an
    ECDSA verification against the known key, cheaper than recovering the signer's key and
    comparing it. v is shape-checked, not used: (r, s) alone decides, so callers that must
    tell signatures apart (replay checks) compare r ‖ s. Raises `RemoteProtocolError` when
    the signature is malformed (see `_recovery_id`, r or s out of range)."""
    _recovery_id(signature)
    try:
        compact = deserialize_compact(signature[:64])
    except ValueError:
        raise RemoteProtocolError("the signature is malformed") from None
    return public_key.verify(cdata_to_der(compact), digest, hasher=None)


def sign(message: M, private_key: bytes | PrivateKey) -> M:
    """`message` with its signature: keccak256 of its Go JSON without the signature."""
    return message.with_signature(sign_digest(keccak(message.encode(signed=False)), private_key))


def sign_error(error: RpcError, private_key: bytes | PrivateKey) -> RpcError:
    """A signed error reply (the live network signs its error struct with signature null)."""
    return replace(error, signature=sign_digest(keccak(error.encode(signed=False)), private_key))


def recover_public_key(message: Message | RpcError) -> bytes:
    """The public key that signed `message` (over the fields it carries, as received)."""
    signature = message.signature
    if not signature:
        raise RemoteProtocolError(f"{type(message).__name__} is not signed")
    return _recover(keccak(message.signing_payload()), signature)


def verify(
    message: Message | RpcError,
    *,
    public_key: bytes | PublicKey | None = None,
    address: str | None = None,
) -> frozenset[str]:
    """Check `message` was signed by `public_key` (65 or 64 bytes, or a coincurve `PublicKey`:
    checked against that key, without recovering the signer's) or by the key of `address`;
    raise `RemoteProtocolError` if not. Returns the received fields the signature does not
    cover.

    The signature is checked over every field the message carried, in the order received (a
    Go peer signs its own struct, and a newer one has fields this version does not know). A
    peer that adds fields after signing (outside its signature, so that older consumers that
    re-encode only the fields they know still verify it) is accepted when the signature covers
    the known fields; the extra fields are then returned, as unsigned, for the caller to weigh.
    """
    if public_key is None and address is None:
        raise LocalProtocolError("verify needs the expected public_key or address")
    if public_key is not None and not isinstance(public_key, PublicKey):
        public_key = parse_public_key(public_key)
    if not message.signature:
        raise RemoteProtocolError(f"{type(message).__name__} is not signed")
    if _signed_by(message.signing_payload(), message.signature, public_key, address):
        return frozenset()
    extra = message.unknown_fields()
    if extra and _signed_by(message.encode(signed=False), message.signature, public_key, address):
        return extra
    expected = address if address is not None else "the expected key"
    raise RemoteProtocolError(f"{type(message).__name__} is not signed by {expected}")


def parse_public_key(public_key: bytes) -> PublicKey:
    """A key carried in a message (65 bytes 0x04 ‖ X ‖ Y, or 64 without the prefix) as a
    coincurve `PublicKey`, to verify many signatures against; `RemoteProtocolError` when it
    is not such a key."""
    raw = b"\x04" + public_key if len(public_key) == 64 else public_key
    if len(raw) != 65 or raw[0] != 4:
        raise RemoteProtocolError("a public key must be 64 or 65 bytes (uncompressed)")
    try:
        return PublicKey(raw)
    except ValueError:
        raise RemoteProtocolError("the public key is not a point on secp256k1") from None


def _signed_by(
    payload: bytes, signature: bytes, public_key: PublicKey | None, address: str | None
) -> bool:
    if public_key is None:
        signer = _recover(keccak(payload), signature)
    elif not verify_digest(keccak(payload), signature, public_key):
        return False
    elif address is None:
        return True
    else:
        signer = public_key.format(compressed=False)
    return address is None or address_of(signer).lower() == address.lower()


def _eth_digest(data: bytes) -> bytes:
    return keccak(b"\x19Ethereum Signed Message:\n32" + keccak(data))


def eth_sign(data: bytes, private_key: bytes | PrivateKey) -> bytes:
    """EIP-191 signature over keccak256(data), v + 27: what openSession/closeSession check."""
    raw = sign_digest(_eth_digest(data), private_key)
    return raw[:64] + bytes([raw[64] + 27])


def eth_recover(data: bytes, signature: bytes) -> str:
    """The address that made an EIP-191 signature over keccak256(data)."""
    return address_of(_recover(_eth_digest(data), signature))


@dataclass(frozen=True)
class Approval:
    """A provider's approval to open a session on one bid, for one user, on one chain."""

    bid_id: bytes
    chain_id: int
    user: str
    timestamp: int


def encode_approval(approval: Approval) -> bytes:
    return abi_encode(
        ["bytes32", "uint256", "address", "uint128"],
        [approval.bid_id, approval.chain_id, approval.user, approval.timestamp],
    )


def decode_approval(data: bytes) -> Approval:
    try:
        bid, chain, user, ts = abi_decode(["bytes32", "uint256", "address", "uint128"], data)
    except Exception:
        raise RemoteProtocolError(
            "the approval is not abi(bytes32,uint256,address,uint128)"
        ) from None
    return Approval(bid, chain, to_checksum_address(user), ts)


@dataclass(frozen=True)
class Receipt:
    """A provider's close receipt: the live layout with its two token counts."""

    session_id: bytes
    chain_id: int
    timestamp: int
    tps_scaled1000: int
    ttft_ms: int
    input_tokens: int = 0
    output_tokens: int = 0


_RECEIPT_TYPES = ["bytes32", "uint256", "uint128", "uint32", "uint32", "uint32", "uint32"]


def encode_receipt(receipt: Receipt) -> bytes:
    return abi_encode(
        _RECEIPT_TYPES,
        [
            receipt.session_id,
            receipt.chain_id,
            receipt.timestamp,
            min(receipt.tps_scaled1000, 2**32 - 1),
            min(receipt.ttft_ms, 2**32 - 1),
            min(receipt.input_tokens, 2**32 - 1),
            min(receipt.output_tokens, 2**32 - 1),
        ],
    )


def decode_receipt(data: bytes) -> Receipt:
    """Decode a 7-field receipt, or the contract's 5-field one."""
    try:
        if len(data) >= 7 * 32:
            return Receipt(*abi_decode(_RECEIPT_TYPES, data[: 7 * 32]))
        return Receipt(*abi_decode(_RECEIPT_TYPES[:5], data[: 5 * 32]))
    except Exception:
        raise RemoteProtocolError("the receipt is not the expected ABI layout") from None
