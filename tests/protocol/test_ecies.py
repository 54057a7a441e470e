"""ECIES against go-ethereum's published vectors (crypto/ecies/ecies_test.go) and its layout."""

from __future__ import annotations

import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from mor_workbench.protocol.ecies import concat_kdf, ecies_decrypt, ecies_encrypt, shared_secret
from mor_workbench.protocol.errors import ProtocolError

# go-ethereum TestKDF: concatKDF(sha256, "input", nil, n)
KDF_64 = bytes.fromhex(
    "858b192fa2ed4395e2bf88dd8d5770d67dc284ee539f12da8bceaa45d06ebae0"
    "700f1ab918a5f0413b8140f9940d6955f3467fd6672cce1024c5b1effccc0f61"
)


@pytest.mark.parametrize("length", [6, 32, 48, 64])
def test_concat_kdf_matches_go_ethereum(length: int) -> None:
    assert concat_kdf(b"input", b"", length) == KDF_64[:length]


def test_shared_secret_matches_go_ethereum_static_vector() -> None:
    # go-ethereum TestSharedKeyStatic
    a = bytes.fromhex("7ebbc6a8358bc76dd73ebc557056702c8cfc34e5cfcd90eb83af0347575fd2ad")
    b = bytes.fromhex("6a3d6396903245bba5837752b9e0348874e72db0c4e11e9c485a81b4ea4353b9")
    expected = bytes.fromhex("167ccc13ac5e8a26b131c3446030c60fbfac6aa8e31149d0869f93626a4cdf62")
    pub_a = PrivateKey(a).public_key.format(compressed=False)
    pub_b = PrivateKey(b).public_key.format(compressed=False)
    assert shared_secret(a, pub_b) == shared_secret(b, pub_a) == expected


def test_public_key_padding_vector() -> None:
    # go-ethereum TestSharedKeyPadding: a key whose x coordinate is short of 32 bytes' worth
    prv = bytes.fromhex("1adf5c18167d96a1f9a0b1ef63be8aa27eaf6032c233b2b38f7850cf5b859fd9")
    point = PrivateKey(prv).public_key.format(compressed=False)
    assert point[1:33].hex() == "1a8ed022ff7aec59dc1b440446bdda5ff6bcb3509a8b109077282b361efffbd8"
    assert point[33:].hex() == "e040bd480b1deccc3bc40bd5b1fdcb7bfd352500b477cb9471366dbd4493f923"
    other = bytes.fromhex("0097a076fc7fcd9208240668e31c9abee952cbb6e375d1b8febc7499d6e16f1a")
    other_pub = PrivateKey(other).public_key.format(compressed=False)
    assert len(shared_secret(prv, other_pub)) == 32
    assert shared_secret(prv, other_pub) == shared_secret(other, point)


def test_layout_is_ephemeral_key_iv_ciphertext_tag() -> None:
    key = PrivateKey()
    eph, iv = bytes(range(1, 33)), bytes(16)
    message = b"Hello, world."
    box = ecies_encrypt(key.public_key.format(compressed=False), message, ephemeral=eph, iv=iv)
    assert len(box) == 65 + 16 + len(message) + 32
    assert box[:65] == PrivateKey(eph).public_key.format(compressed=False)
    assert box[65:81] == iv
    assert ecies_decrypt(key.secret, box) == message


def test_wrong_key_tampering_and_shared_data_are_refused() -> None:
    key = PrivateKey()
    box = ecies_encrypt(key.public_key.format(compressed=False), b"secret", s2=b"shared data 2")
    assert ecies_decrypt(key.secret, box, s2=b"shared data 2") == b"secret"
    with pytest.raises(ProtocolError):
        ecies_decrypt(key.secret, box)
    with pytest.raises(ProtocolError):
        ecies_decrypt(PrivateKey().secret, box, s2=b"shared data 2")
    for bad in (b"", box[:60], b"\x05" + box[1:], box[:-1] + bytes([box[-1] ^ 1])):
        with pytest.raises(ProtocolError):
            ecies_decrypt(key.secret, bad, s2=b"shared data 2")


@given(st.binary(max_size=2048))
def test_round_trip(message: bytes) -> None:
    key = PrivateKey(
        bytes.fromhex("4b50fa71f5c3eeb8fdc452224b2395af2fcc3d125e06c32c82e048c0559db03f")
    )
    pub = key.public_key.format(compressed=False)
    assert ecies_decrypt(key.secret, ecies_encrypt(pub, message)) == message
    assert ecies_decrypt(key.secret, ecies_encrypt(pub[1:], message)) == message
