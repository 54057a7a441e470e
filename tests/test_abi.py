"""The ABI codec speaks the live ABIs: selectors, tuples as named dicts, errors and events."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from mor_workbench.chain.abi import load_abi

DIAMOND = load_abi("SessionRouter", "Marketplace", "ProviderRegistry", "ModelRegistry")


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def test_selectors_match_the_canonical_signatures() -> None:
    cases = {
        "openSession": "openSession(address,uint256,bool,bytes,bytes)",
        "closeSession": "closeSession(bytes,bytes)",
        "getBid": "getBid(bytes32)",
        "__SessionRouter_init": "__SessionRouter_init(address,uint128,"
        "(uint256,uint256,uint128,uint128)[])",
        "modelRegister": "modelRegister(address,bytes32,bytes32,uint256,uint256,string,string[])",
    }
    for name, signature in cases.items():
        assert DIAMOND.function(name).selector == selector(signature), name


def test_tuple_results_decode_to_named_dicts() -> None:
    provider = "0x" + "11" * 20
    raw = encode(
        ["(address,bytes32,uint256,uint256,uint128,uint128)"],
        [(provider, b"\x02" * 32, 10**13, 7, 1_700_000_000, 0)],
    )
    bid = DIAMOND.decode("getBid", raw)
    assert bid["provider"].lower() == provider
    assert (bid["modelId"], bid["pricePerSecond"], bid["nonce"]) == (b"\x02" * 32, 10**13, 7)
    assert (bid["createdAt"], bid["deletedAt"]) == (1_700_000_000, 0)


def test_nested_tuples_and_multiple_outputs() -> None:
    raw = encode(
        ["((int64,int64),(int64,int64),uint32,uint32,uint32)"], [((1500, 20), (300, -4), 60, 2, 3)]
    )
    stats = DIAMOND.decode("getProviderModelStats", raw)
    assert stats["tpsScaled1000"] == {"mean": 1500, "sqSum": 20}
    assert stats["ttftMs"]["sqSum"] == -4 and stats["totalCount"] == 3
    ids, total = DIAMOND.decode(
        "getModelActiveBids", encode(["bytes32[]", "uint256"], [[b"\x01" * 32], 9])
    )
    assert ids == [b"\x01" * 32] and total == 9


def test_custom_errors_string_errors_and_panics_decode() -> None:
    assert DIAMOND.decode_error(selector("SessionTooShort()")) == ("SessionTooShort", ())
    owner = "0x" + "ab" * 20
    data = selector("OwnableUnauthorizedAccount(address)") + encode(["address"], [owner])
    name, args = DIAMOND.decode_error(data)
    assert name == "OwnableUnauthorizedAccount" and args[0].lower() == owner
    text = selector("Error(string)") + encode(["string"], ["ECDSA: invalid signature"])
    assert DIAMOND.decode_error(text) == ("Error", ("ECDSA: invalid signature",))
    assert DIAMOND.decode_error(selector("Panic(uint256)") + encode(["uint256"], [0x11])) == (
        "Panic",
        (0x11,),
    )
    assert DIAMOND.decode_error(b"\xde\xad\xbe\xef") is None


def test_event_logs_decode_indexed_and_plain_arguments() -> None:
    user, provider = "0x" + "aa" * 20, "0x" + "bb" * 20
    topic = DIAMOND.event_topic("SessionOpened")
    assert topic == keccak(text="SessionOpened(address,bytes32,address)")
    topics = [
        topic,
        encode(["address"], [user]),
        encode(["bytes32"], [b"\x05" * 32]),
        encode(["address"], [provider]),
    ]
    name, values = DIAMOND.decode_log(topics, b"")
    assert name == "SessionOpened"
    assert values["user"].lower() == user and values["sessionId"] == b"\x05" * 32
