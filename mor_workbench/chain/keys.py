"""Account keys: load from a hex string, the environment or an encrypted keystore, never echo them.

`Signer` holds the key privately; its repr, str and every error mention only the address.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_hex_address, to_checksum_address

from mor_workbench.errors import ConfigurationError

__all__ = ["KEYSTORE_PASSWORD_ENV", "KEY_ENV", "Signer", "checksum_address", "load_signer"]

KEY_ENV = "MOR_PRIVATE_KEY"
KEYSTORE_PASSWORD_ENV = "MOR_KEYSTORE_PASSWORD"


def checksum_address(value: str, *, what: str = "address") -> str:
    """The EIP-55 form of `value`, or a clear error naming what was malformed."""
    if not isinstance(value, str) or not is_hex_address(value):
        raise ConfigurationError(
            f"{what} {value!r} is not an Ethereum address: expected 0x followed by 40 hex digits"
        )
    return to_checksum_address(value)


class Signer:
    """An account that signs transactions and messages; the key never leaves this object."""

    __slots__ = ("__account", "__signing_key")

    def __init__(self, private_key: str | bytes) -> None:
        try:
            account: LocalAccount = Account.from_key(private_key)
        except Exception:
            # Deliberately no detail: the message must not echo any part of the key.
            raise ConfigurationError(
                "the private key is malformed: expected 32 bytes as 64 hex digits (0x optional)"
            ) from None
        self.__account = account
        self.__signing_key = PrivateKey(bytes(account.key))

    @property
    def address(self) -> str:
        return self.__account.address

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """Raw signed transaction bytes, ready for eth_sendRawTransaction."""
        return bytes(self.__account.sign_transaction(tx).raw_transaction)

    def sign_message_hash(self, digest: bytes) -> bytes:
        """EIP-191 personal-message signature over a 32-byte digest (65 bytes, v = 27/28)."""
        return bytes(self.__account.sign_message(encode_defunct(primitive=digest)).signature)

    def sign_digest(self, digest: bytes) -> bytes:
        """Raw secp256k1 signature over a 32-byte digest: r ‖ s ‖ v with v in {0, 1}."""
        signed = self.__account.unsafe_sign_hash(digest)
        return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])

    @property
    def public_key(self) -> bytes:
        """Uncompressed public key without the 0x04 prefix (64 bytes)."""
        return self.__account._key_obj.public_key.to_bytes()

    @property
    def public_key_65(self) -> bytes:
        """Uncompressed public key with the 0x04 prefix (65 bytes), as MOR-RPC carries it."""
        return b"\x04" + self.public_key

    @property
    def signing_key(self) -> PrivateKey:
        """The key as a coincurve object, built once (building one costs about as much as a
        signature): what MOR-RPC signatures and ECIES use. Never log it."""
        return self.__signing_key

    def private_key_bytes(self) -> bytes:
        """The raw key bytes (the package signs and decrypts with `signing_key`). Never log it."""
        return bytes(self.__account.key)

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Signer cannot be pickled: it would copy the private key")


def load_signer(
    key: str | None = None,
    *,
    keystore: str | os.PathLike[str] | None = None,
    password: str | None = None,
) -> Signer:
    """A signer from `key`, else a keystore file, else the MOR_PRIVATE_KEY environment variable."""
    if key is not None:
        return Signer(key)
    if keystore is not None:
        path = Path(keystore).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"keystore file {str(path)!r} does not exist")
        password = password if password is not None else os.environ.get(KEYSTORE_PASSWORD_ENV)
        if password is None:
            raise ConfigurationError(
                f"the keystore needs a password: pass password=… or set {KEYSTORE_PASSWORD_ENV}"
            )
        try:
            secret = Account.decrypt(json.loads(path.read_text()), password)
        except ValueError:
            raise ConfigurationError(
                f"could not decrypt keystore {str(path)!r}: wrong password or not a keystore"
            ) from None
        return Signer(secret)
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        return Signer(env_key.strip())
    raise ConfigurationError(
        f"no account key: set {KEY_ENV}, or pass key=… or keystore='path/to/keystore.json'"
    )
