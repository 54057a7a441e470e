"""The ABI readers and writers (`chain.abi`) decode every output and encode every input of
the ABIs we ship exactly as eth-abi does (outputs then made friendly by `_named`); short or
malformed data, and values of unusual types, meet eth-abi's own errors."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError

from mor_workbench.chain.abi import Abi, _named, canonical_type, load_abi
from mor_workbench.chain.client import Chain

SHIPPED = sorted(p.stem for p in resources.files("mor_workbench.chain").joinpath("abi").iterdir())
ABIS = {name: load_abi(name) for name in SHIPPED}


def entries(name: str) -> list[Mapping[str, Any]]:
    """The functions of a shipped ABI, as its JSON gives them."""
    text = resources.files("mor_workbench.chain").joinpath("abi", f"{name}.json").read_text()
    document = json.loads(text)
    found = document["abi"] if isinstance(document, dict) else document
    return [e for e in found if e.get("type") == "function"]


def random_value(entry: Mapping[str, Any], rng: random.Random) -> Any:
    """A random value of an ABI type, in the form eth-abi encodes."""
    typ = entry["type"]
    if typ.endswith("]"):
        element = {**entry, "type": typ[: typ.rindex("[")]}
        count = typ[typ.rindex("[") + 1 : -1]
        length = int(count) if count else rng.randrange(4)
        return [random_value(element, rng) for _ in range(length)]
    if typ == "tuple":
        return tuple(random_value(c, rng) for c in entry["components"])
    if typ == "address":
        return "0x" + rng.randbytes(20).hex()
    if typ == "bool":
        return rng.random() < 0.5
    if typ == "bytes":
        return rng.randbytes(rng.randrange(70))
    if typ == "string":
        return "".join(rng.choice("aé€🙂 :/.0") for _ in range(rng.randrange(40)))
    if typ.startswith("uint"):
        return rng.getrandbits(int(typ[4:] or 256))
    if typ.startswith("int"):
        bits = int(typ[3:] or 256)
        return rng.getrandbits(bits) - (1 << (bits - 1))
    if typ.startswith("bytes"):
        return rng.randbytes(int(typ[5:]))
    raise AssertionError(f"no generator for {typ}")


def functions(abi: Abi):
    return [(name, fn) for name, fn in sorted(abi.functions.items()) if fn.outputs]


@pytest.mark.parametrize("abi_name", ABIS)
def test_every_output_decodes_as_eth_abi_decodes_it(abi_name: str) -> None:
    abi = ABIS[abi_name]
    rng = random.Random(16)
    for name, fn in functions(abi):
        types = [canonical_type(o) for o in fn.outputs]
        for _ in range(12):
            data = abi_encode(types, [random_value(o, rng) for o in fn.outputs])
            expected = [
                _named(o, v) for o, v in zip(fn.outputs, abi_decode(types, data), strict=True)
            ]
            got = abi.decode(name, data)
            assert (got if len(expected) > 1 else (got,)) == tuple(expected), name


@pytest.mark.parametrize("name", ["getBid", "getProvider", "getModelActiveBids", "getModel"])
def test_short_data_is_refused_as_eth_abi_refuses_it(name: str) -> None:
    abi = Chain.diamond_abi
    fn = abi.function(name)
    rng = random.Random(3)
    data = abi_encode(
        [canonical_type(o) for o in fn.outputs], [random_value(o, rng) for o in fn.outputs]
    )
    for cut in (0, 31, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodingError):
            abi.decode(name, data[:cut])


def test_out_of_range_values_are_refused() -> None:
    abi = Chain.diamond_abi
    word = (1 << 200).to_bytes(32, "big")  # an "address" with padding bytes set
    with pytest.raises(DecodingError):
        abi.decode("owner", word)
    huge = (32).to_bytes(32, "big") + (2**64).to_bytes(32, "big")  # an array of 2**64 ids
    with pytest.raises(DecodingError):
        abi.decode("getActiveModelIds", huge + bytes(32))


@pytest.mark.parametrize("abi_name", ABIS)
def test_every_input_encodes_as_eth_abi_encodes_it(abi_name: str) -> None:
    abi = ABIS[abi_name]
    rng = random.Random(61)
    for entry in entries(abi_name):
        fn = abi.function(entry["name"])
        for _ in range(12):
            args = [random_value(i, rng) for i in entry["inputs"]]
            assert abi.encode(fn.name, *args) == fn.selector + abi_encode(fn.inputs, args)


@pytest.mark.parametrize(
    "value",
    [
        "0x52908400098527886E0F7030069857D2E4169EE7".lower()[:-1] + "X",  # not hex
        b"\x01" * 19,
        None,
    ],
)
def test_an_unusual_address_meets_eth_abis_own_error(value: Any) -> None:
    with pytest.raises(EncodingError):
        Chain.diamond_abi.encode("getProvider", value)


def test_values_of_other_types_are_left_to_eth_abi() -> None:
    abi = Chain.diamond_abi
    fn = abi.function("getProviderModelStats")
    model_id = bytearray(32)
    provider = "0x52908400098527886e0f7030069857D2E4169EE7"  # mixed case, not the checksum
    expected = fn.selector + abi_encode(fn.inputs, [bytes(model_id), provider])
    assert abi.encode("getProviderModelStats", model_id, provider) == expected
    with pytest.raises(EncodingError):
        abi.encode("getBid", 2**256)  # an int where bytes32 goes
    with pytest.raises(EncodingError):
        abi.encode("getActiveModelIds", -1, 10)  # out of uint256
