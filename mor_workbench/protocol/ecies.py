"""ECIES exactly as go-ethereum's crypto/ecies does it with secp256k1 (what live routers use).

secp256k1 ECDH (the shared x coordinate), NIST SP 800-56 concat KDF with SHA-256 into a 16-byte
AES key and a MAC key (itself hashed with SHA-256), AES-128-CTR with a random IV, and
HMAC-SHA-256 over IV ‖ ciphertext ‖ s2. Output: ephemeral public key (65) ‖ IV (16) ‖
ciphertext ‖ tag (32).

Keys may be coincurve objects (a sender that encrypts every chunk to one recipient parses its
key once; a receiver passes its `PrivateKey`). Per message the cost is what the scheme needs:
one fixed-base multiplication (the ephemeral public key) and one ECDH multiplication.

A stream of messages to one recipient (the chunks of one answer) may share an ephemeral key:
`BoxSealer` draws one per stream, and `BoxOpener` derives the keys once per ephemeral key it
sees. Each box is still exactly a go-ethereum ECIES message (a Go peer opens it unchanged); what
keeps the shared keys safe is the fresh random IV of every box (AES-CTR never reuses a keystream:
two boxes' counter ranges overlap with probability about (blocks * boxes)^2 / 2^128) and the HMAC
over each box under the MAC key (no box can be altered or cut and still open). The secrets a
stream holds (the ephemeral key, the derived keys) open only that stream's boxes, which the
sender has in plaintext anyway, and die with the stream.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from coincurve import PrivateKey, PublicKey
from coincurve.utils import get_valid_secret
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mor_workbench.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BoxOpener",
    "BoxSealer",
    "concat_kdf",
    "ecies_decrypt",
    "ecies_encrypt",
    "recipient_key",
    "shared_secret",
]

KEY_LEN = 16  # AES-128
BLOCK = 16
TAG_LEN = 32
PUB_LEN = 65
OVERHEAD = PUB_LEN + BLOCK + TAG_LEN


def concat_kdf(z: bytes, s1: bytes, length: int) -> bytes:
    """NIST SP 800-56 concatenation KDF with SHA-256 (go-ethereum's concatKDF)."""
    out = b""
    counter = 1
    while len(out) < length:
        out += hashlib.sha256(counter.to_bytes(4, "big") + z + s1).digest()
        counter += 1
    return out[:length]


def shared_secret(private_key: bytes | PrivateKey, public_key: bytes | PublicKey) -> bytes:
    """The ECDH x coordinate, left-padded to 32 bytes."""
    if isinstance(private_key, PrivateKey):
        private_key = private_key.secret
    if not isinstance(public_key, PublicKey):
        public_key = PublicKey(public_key)
    return public_key.multiply(private_key).format(compressed=False)[1:33]


def _keys(z: bytes, s1: bytes) -> tuple[bytes, bytes]:
    k = concat_kdf(z, s1, 2 * KEY_LEN)
    return k[:KEY_LEN], hashlib.sha256(k[KEY_LEN:]).digest()


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def recipient_key(public_key: bytes) -> PublicKey:
    """A recipient's key (65 bytes 0x04 ‖ X ‖ Y, or 64 without the prefix), parsed once for
    many `ecies_encrypt` calls. Raises `LocalProtocolError` when it is not such a key."""
    if len(public_key) == 64:
        public_key = b"\x04" + public_key
    try:
        return PublicKey(public_key)
    except Exception:
        raise LocalProtocolError(
            "not a secp256k1 public key: expected 65 bytes 0x04 ‖ X ‖ Y"
        ) from None


def _ephemeral_key(secret: bytes | None = None) -> tuple[bytes, bytes]:
    """An ephemeral key's secret and public point (65 bytes), drawn when `secret` is None.
    Only the point: a coincurve PrivateKey would compute an x-only public key too, a second
    multiplication nobody uses."""
    if secret is None:
        secret = get_valid_secret()  # in [1, n): no second check
        return secret, PublicKey.from_valid_secret(secret).format(compressed=False)
    return secret, PublicKey.from_secret(secret).format(compressed=False)


def _seal(
    ephemeral_public: bytes, ke: bytes, km: bytes, plaintext: bytes, s2: bytes, iv: bytes | None
) -> bytes:
    iv = iv if iv is not None else os.urandom(BLOCK)
    em = iv + _ctr(ke, iv, plaintext)
    return ephemeral_public + em + hmac.digest(km, em + s2, "sha256")


def _ephemeral_of(data: bytes) -> PublicKey:
    """The ephemeral key of the box `data`, after its shape checks."""
    if len(data) < OVERHEAD or data[0] != 4:
        raise RemoteProtocolError("ECIES message is malformed (too short or bad ephemeral key)")
    try:
        return PublicKey(data[:PUB_LEN])
    except Exception:
        raise RemoteProtocolError("ECIES ephemeral key is not on secp256k1") from None


def _open(ke: bytes, km: bytes, data: bytes, s2: bytes) -> bytes:
    em, tag = data[PUB_LEN:-TAG_LEN], data[-TAG_LEN:]
    if not hmac.compare_digest(hmac.digest(km, em + s2, "sha256"), tag):
        raise RemoteProtocolError("ECIES message failed authentication (wrong key or tampered)")
    return _ctr(ke, em[:BLOCK], em[BLOCK:])


def ecies_encrypt(
    public_key: bytes | PublicKey,
    plaintext: bytes,
    *,
    s1: bytes = b"",
    s2: bytes = b"",
    ephemeral: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Encrypt to `public_key` (65 or 64 bytes, or one parsed by `recipient_key`) under a fresh
    ephemeral key. `ephemeral`/`iv` are for test vectors only."""
    recipient = public_key if isinstance(public_key, PublicKey) else recipient_key(public_key)
    secret, ephemeral_public = _ephemeral_key(ephemeral)
    ke, km = _keys(shared_secret(secret, recipient), s1)
    return _seal(ephemeral_public, ke, km, plaintext, s2, iv)


def ecies_decrypt(
    private_key: bytes | PrivateKey, data: bytes, *, s1: bytes = b"", s2: bytes = b""
) -> bytes:
    """Decrypt a go-ethereum ECIES message; a wrong key or any tampering raises
    `RemoteProtocolError`."""
    ke, km = _keys(shared_secret(private_key, _ephemeral_of(data)), s1)
    return _open(ke, km, data, s2)


class BoxSealer:
    """Encrypts a stream of messages to one recipient (65 or 64 bytes, or parsed by
    `recipient_key`) under one ephemeral key drawn here, so that each message costs AES-CTR
    under a fresh random IV and an HMAC, no multiplication (why sharing the key is safe: the
    module's docstring). Raises `LocalProtocolError` when the recipient is not a key."""

    def __init__(self, public_key: bytes | PublicKey) -> None:
        recipient = public_key if isinstance(public_key, PublicKey) else recipient_key(public_key)
        secret, self._ephemeral = _ephemeral_key()
        self._ke, self._km = _keys(shared_secret(secret, recipient), b"")

    def seal(self, plaintext: bytes) -> bytes:
        """The box of `plaintext`: ephemeral key (65) ‖ IV (16) ‖ ciphertext ‖ tag (32)."""
        return _seal(self._ephemeral, self._ke, self._km, plaintext, b"", None)


class BoxOpener:
    """Opens go-ethereum ECIES messages to `private_key`, keeping the keys derived for the last
    `keep` ephemeral keys seen (oldest dropped first), so a run of boxes under one ephemeral
    key (what `BoxSealer` sends) costs one ECDH; from a sender that draws a key per box, each
    box costs one, as with `ecies_decrypt`. `open` raises `RemoteProtocolError` for a wrong key
    or any tampering."""

    def __init__(self, private_key: bytes | PrivateKey, *, keep: int = 1) -> None:
        self._secret = private_key.secret if isinstance(private_key, PrivateKey) else private_key
        self._keep = keep
        self._keys: dict[bytes, tuple[bytes, bytes]] = {}  # by ephemeral key, oldest first

    def open(self, data: bytes) -> bytes:
        """The plaintext of the box `data`."""
        ephemeral = data[:PUB_LEN]
        keys = self._keys.get(ephemeral)
        if keys is None or len(data) < OVERHEAD:
            keys = _keys(shared_secret(self._secret, _ephemeral_of(data)), b"")
            if len(self._keys) >= self._keep:
                del self._keys[next(iter(self._keys))]
            self._keys[ephemeral] = keys
        return _open(*keys, data, b"")
