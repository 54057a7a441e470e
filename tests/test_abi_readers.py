"""The ABI readers (`chain.abi`) decode every output of the ABIs we ship exactly as eth-abi
does (then `_named`), and refuse short or malformed data with eth-abi's own errors."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError

from mor_workbench.chain.abi import Abi, _named, canonical_type, load_abi
from mor_workbench.chain.client import Chain

ABIS = {
    "diamond": Chain.diamond_abi,
    "token": Chain.token_abi,
    "multicall": Chain.multicall_abi,
    "all shipped": load_abi("Delegation", "LumerinToken", "ProviderRegistry", "SessionRouter"),
}


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
