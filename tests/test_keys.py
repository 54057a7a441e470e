"""Keys load from every source and never appear in reprs, errors or pickles."""

from __future__ import annotations

import json
import pickle

import pytest
from eth_account import Account

from mor_workbench.chain.keys import Signer, checksum_address, load_signer
from mor_workbench.errors import ConfigurationError

KEY = "0x" + "4c" * 32


def test_signer_address_matches_key() -> None:
    assert Signer(KEY).address == Account.from_key(KEY).address


def test_key_never_in_repr_or_str() -> None:
    signer = Signer(KEY)
    for text in (repr(signer), str(signer), f"{signer}"):
        assert KEY[2:] not in text.lower()
        assert signer.address in text


def test_signer_refuses_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Signer(KEY))


@pytest.mark.parametrize(
    "bad", ["0x1234", "zz" * 32, "0x" + "4c" * 31 + "zz", "", "0x" + "00" * 32]
)
def test_malformed_key_error_does_not_echo_it(bad: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Signer(bad)
    message = str(info.value)
    assert "malformed" in message
    if len(bad) > 6:
        assert bad not in message and bad[2:] not in message


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOR_PRIVATE_KEY", KEY)
    assert load_signer().address == Account.from_key(KEY).address


def test_missing_key_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOR_PRIVATE_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="MOR_PRIVATE_KEY"):
        load_signer()


def test_keystore_round_trip_and_wrong_password(tmp_path, monkeypatch) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(Account.encrypt(KEY, "s3cret", iterations=2)))
    assert load_signer(keystore=path, password="s3cret").address == Account.from_key(KEY).address
    monkeypatch.setenv("MOR_KEYSTORE_PASSWORD", "s3cret")
    assert load_signer(keystore=path).address == Account.from_key(KEY).address
    with pytest.raises(ConfigurationError, match="wrong password") as info:
        load_signer(keystore=path, password="nope")
    assert "nope" not in str(info.value)


def test_signatures_recover_to_the_signer() -> None:
    from eth_account.messages import encode_defunct
    from eth_keys import keys as eth_keys

    signer = Signer(KEY)
    digest = bytes(range(32))
    personal = signer.sign_message_hash(digest)
    assert personal[64] in (27, 28)
    recovered = Account.recover_message(encode_defunct(primitive=digest), signature=personal)
    assert recovered == signer.address
    raw = signer.sign_digest(digest)
    assert raw[64] in (0, 1)
    public = eth_keys.Signature(raw).recover_public_key_from_msg_hash(digest)
    assert public.to_checksum_address() == signer.address
    assert public.to_bytes() == signer.public_key


@pytest.mark.parametrize("bad", ["0x123", "hello", "0x" + "g" * 40, 42])
def test_malformed_address_is_named(bad) -> None:
    with pytest.raises(ConfigurationError, match="not an Ethereum address"):
        checksum_address(bad, what="provider")


def test_checksums_lowercase_address() -> None:
    address = Account.from_key(KEY).address
    assert checksum_address(address.lower()) == address
