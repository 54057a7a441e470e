"""ABI codec: encode calls, decode results, custom errors and events from ABI JSON.

A thin layer over eth-abi that keys functions by name and turns tuple results into dicts named
after the ABI components, so callers read `bid["pricePerSecond"]` instead of positions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

__all__ = ["Abi", "canonical_type", "load_abi", "load_artifact"]


def canonical_type(entry: Mapping[str, Any]) -> str:
    """The canonical ABI type string, expanding tuples to `(t1,t2)[]`."""
    typ = entry["type"]
    if typ.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in entry["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


def _named(entry: Mapping[str, Any], value: Any) -> Any:
    """Decoded values made friendly: tuples as dicts keyed by component, checksummed addresses."""
    typ = entry["type"]
    if typ.endswith("]"):  # an array: convert each element as its element type
        element = {**entry, "type": typ[: typ.rindex("[")]}
        return [_named(element, item) for item in value]
    if typ == "address":
        return to_checksum_address(value)
    if typ == "tuple":
        return {c["name"]: _named(c, v) for c, v in zip(entry["components"], value, strict=True)}
    return value


class _Function:
    __slots__ = ("inputs", "name", "outputs", "selector")

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = entry["name"]
        self.inputs = [canonical_type(i) for i in entry.get("inputs", [])]
        self.outputs = list(entry.get("outputs", []))
        self.selector = keccak(text=f"{self.name}({','.join(self.inputs)})")[:4]


class Abi:
    """Functions, events and custom errors of one contract (or a diamond's union of facets)."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self.functions: dict[str, _Function] = {}
        self.events: dict[bytes, tuple[str, list[Mapping[str, Any]]]] = {}
        self.errors: dict[bytes, tuple[str, list[str]]] = {}
        for entry in entries:
            kind = entry.get("type")
            if kind == "function":
                self.functions.setdefault(entry["name"], _Function(entry))
            elif kind == "event":
                types = ",".join(canonical_type(i) for i in entry["inputs"])
                topic = keccak(text=f"{entry['name']}({types})")
                self.events[topic] = (entry["name"], list(entry["inputs"]))
            elif kind == "error":
                types = [canonical_type(i) for i in entry["inputs"]]
                selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
                self.errors[selector] = (entry["name"], types)

    def __add__(self, other: Abi) -> Abi:
        merged = Abi(())
        for part in (self, other):
            for name, fn in part.functions.items():
                merged.functions.setdefault(name, fn)
            merged.events.update(part.events)
            merged.errors.update(part.errors)
        return merged

    def function(self, name: str) -> _Function:
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"the ABI has no function {name!r}") from None

    def encode(self, name: str, *args: Any) -> bytes:
        """Calldata for `name(args)`: selector followed by the encoded arguments."""
        fn = self.function(name)
        return fn.selector + abi_encode(fn.inputs, args)

    def decode(self, name: str, data: bytes) -> Any:
        """Decode a call's return data; a single output is returned bare, several as a tuple."""
        fn = self.function(name)
        values = abi_decode([canonical_type(o) for o in fn.outputs], data)
        named = [_named(o, v) for o, v in zip(fn.outputs, values, strict=True)]
        return named[0] if len(named) == 1 else tuple(named)

    def decode_error(self, data: bytes) -> tuple[str, tuple] | None:
        """Name and arguments of a custom error (or Error(string)/Panic), None if unknown."""
        if len(data) < 4:
            return None
        selector, body = data[:4], data[4:]
        if selector == _ERROR_STRING:
            return "Error", tuple(abi_decode(["string"], body))
        if selector == _PANIC:
            return "Panic", tuple(abi_decode(["uint256"], body))
        known = self.errors.get(selector)
        if known is None:
            return None
        name, types = known
        try:
            return name, tuple(abi_decode(types, body))
        except Exception:
            return name, ()

    def decode_log(self, topics: Sequence[bytes], data: bytes) -> tuple[str, dict[str, Any]] | None:
        """Name and arguments of an event log, None if the event is not in this ABI."""
        if not topics or topics[0] not in self.events:
            return None
        name, inputs = self.events[topics[0]]
        indexed = [i for i in inputs if i.get("indexed")]
        plain = [i for i in inputs if not i.get("indexed")]
        values: dict[str, Any] = {}
        for entry, topic in zip(indexed, topics[1:], strict=False):
            values[entry["name"]] = _named(entry, abi_decode([canonical_type(entry)], topic)[0])
        for entry, value in zip(
            plain, abi_decode([canonical_type(i) for i in plain], data), strict=True
        ):
            values[entry["name"]] = _named(entry, value)
        return name, values

    def event_topic(self, name: str) -> bytes:
        for topic, (event_name, _) in self.events.items():
            if event_name == name:
                return topic
        raise KeyError(f"the ABI has no event {name!r}")


_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


def _entries(document: Any) -> list[Mapping[str, Any]]:
    return document["abi"] if isinstance(document, dict) else document


@cache
def load_abi(*names: str) -> Abi:
    """The live network's ABI for these contracts (shipped in `chain/abi/`), merged."""
    merged = Abi(())
    for name in names:
        text = resources.files(__package__).joinpath("abi", f"{name}.json").read_text()
        merged = merged + Abi(_entries(json.loads(text)))
    return merged


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """A compiled contract of ours (ABI and bytecode) from `chain/artifacts/`."""
    path = resources.files(__package__).joinpath("artifacts", f"{name}.json")
    if not path.is_file():
        raise FileNotFoundError(
            f"compiled contract {name!r} is missing from the package; run `make artifacts`"
        )
    return json.loads(path.read_text())
