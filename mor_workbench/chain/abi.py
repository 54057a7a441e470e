"""ABI codec: encode calls, decode results, custom errors and events from ABI JSON.

A thin layer over eth-abi that keys functions by name and turns tuple results into dicts named
after the ABI components, so callers read `bid["pricePerSecond"]` instead of positions.

Call results are decoded by readers built once per function (`_reader`): eth-abi's generic
decoder, then `_named`, cost ~0.5 ms per `getBid`, which made a 10,000-bid snapshot take
seconds; the readers give the same values (tests/test_abi_readers.py checks them against
eth-abi) ~20x faster and raise eth-abi's own `DecodingError`s on short or malformed data.
Arguments are encoded the same way (`_writer`) when each is of the plain Python type eth-abi
takes for it; anything else is handed to eth-abi, which encodes it or raises its own error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import InsufficientDataBytes, NonEmptyPaddingBytes
from eth_utils import is_checksum_address, keccak, to_checksum_address

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


# A reader decodes the value that starts at byte `start` of `data`, in `_named`'s form.
_Reader = Callable[[bytes, int], Any]


def _word(data: bytes, start: int) -> int:
    word = data[start : start + 32]
    if len(word) != 32 or start < 0:
        raise InsufficientDataBytes(f"ABI data ends before byte {start + 32} ({len(data)} bytes)")
    return int.from_bytes(word, "big")


@lru_cache(maxsize=1 << 16)
def _checksummed(raw: bytes) -> str:
    return to_checksum_address(raw)


def _uint(bits: int) -> _Reader:
    def read(data: bytes, start: int) -> int:
        word = data[start : start + 32]  # _word, inlined: the hottest reader
        if len(word) != 32 or start < 0:
            raise InsufficientDataBytes(f"ABI data ends before byte {start + 32}")
        value = int.from_bytes(word, "big")
        if value >> bits:
            raise NonEmptyPaddingBytes(f"uint{bits} out of range at byte {start}")
        return value

    return read


def _int(bits: int) -> _Reader:
    def read(data: bytes, start: int) -> int:
        value = _word(data, start)
        value = value - (1 << 256) if value >> 255 else value
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise NonEmptyPaddingBytes(f"int{bits} out of range at byte {start}")
        return value

    return read


def _address(data: bytes, start: int) -> str:
    if _word(data, start) >> 160:
        raise NonEmptyPaddingBytes(f"address with padding bytes at byte {start}")
    return _checksummed(data[start + 12 : start + 32])


def _bool(data: bytes, start: int) -> bool:
    value = _word(data, start)
    if value > 1:
        raise NonEmptyPaddingBytes(f"bool out of range at byte {start}")
    return value == 1


def _fixed_bytes(size: int) -> _Reader:
    def read(data: bytes, start: int) -> bytes:
        if _word(data, start) & ((1 << (256 - 8 * size)) - 1):
            raise NonEmptyPaddingBytes(f"bytes{size} with padding bytes at byte {start}")
        return data[start : start + size]

    return read


def _bytes(data: bytes, start: int) -> bytes:
    size = _word(data, start)
    end = start + 32 + size
    padded = start + 32 + -(-size // 32) * 32
    if padded > len(data):
        raise InsufficientDataBytes(f"bytes of {size} past the end of the data at byte {start}")
    if data[end:padded].strip(b"\0"):
        raise NonEmptyPaddingBytes(f"bytes of {size} with padding bytes at byte {start}")
    return data[start + 32 : end]


def _string(data: bytes, start: int) -> str:
    return _bytes(data, start).decode("utf-8")


def _sequence(parts: list[tuple[bool, int, _Reader]]) -> _Reader:
    """Reader of a tuple's (or a static array's) values in order: each part (is dynamic, head
    size, reader) has its head at the next head slot; a dynamic part's head is its offset
    from the sequence's start."""

    def read(data: bytes, start: int) -> list[Any]:
        values, head = [], start
        for dynamic, size, reader in parts:
            values.append(reader(data, start + _word(data, head) if dynamic else head))
            head += size
        return values

    return read


def _reader(entry: Mapping[str, Any]) -> tuple[bool, int, _Reader]:
    """(is dynamic, head size in bytes, reader) of one ABI type entry (with its components)."""
    typ = entry["type"]
    if typ.endswith("]"):
        element = {**entry, "type": typ[: typ.rindex("[")]}
        dynamic, size, read_one = _reader(element)
        count = typ[typ.rindex("[") + 1 : -1]
        if count:  # T[k]: k values of T in a row, static when T is
            sequence = _sequence([(dynamic, size, read_one)] * int(count))
            return dynamic, 32 if dynamic else size * int(count), sequence

        def read_array(data: bytes, start: int) -> list[Any]:
            length = _word(data, start)
            if start + 32 + length * size > len(data):
                raise InsufficientDataBytes(f"array of {length} past the end at byte {start}")
            return _sequence([(dynamic, size, read_one)] * length)(data, start + 32)

        return True, 32, read_array
    if typ == "tuple":
        parts = [_reader(c) for c in entry["components"]]
        fields = []  # (name, is dynamic, offset of its head, reader)
        head = 0
        for component, (dynamic, size, reader) in zip(entry["components"], parts, strict=True):
            fields.append((component["name"], dynamic, head, reader))
            head += size

        def read_tuple(data: bytes, start: int) -> dict[str, Any]:
            return {
                name: reader(data, start + _word(data, start + at) if dynamic else start + at)
                for name, dynamic, at, reader in fields
            }

        dynamic = any(d for d, _, _ in parts)
        return dynamic, 32 if dynamic else sum(s for _, s, _ in parts), read_tuple
    if typ in ("bytes", "string"):
        return True, 32, _bytes if typ == "bytes" else _string
    if typ == "address":
        return False, 32, _address
    if typ == "bool":
        return False, 32, _bool
    if typ.startswith("uint"):
        return False, 32, _uint(int(typ[4:] or 256))
    if typ.startswith("int"):
        return False, 32, _int(int(typ[3:] or 256))
    if typ.startswith("bytes"):
        return False, 32, _fixed_bytes(int(typ[5:]))
    raise ValueError(f"no reader for ABI type {typ!r}")


class _Unusual(Exception):
    """A value the writers leave to eth-abi (to encode, or to refuse with its own error)."""


# A writer encodes one value: its head when static, its tail (the part the head points to)
# when dynamic.
_Writer = Callable[[Any], bytes]


@lru_cache(maxsize=1 << 16)
def _address_bytes(value: str) -> bytes:
    if len(value) != 42 or value[:2] != "0x":
        raise _Unusual
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise _Unusual
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise _Unusual from None


def _write_address(value: Any) -> bytes:
    if type(value) is str:
        return bytes(12) + _address_bytes(value)
    if type(value) is bytes and len(value) == 20:
        return bytes(12) + value
    raise _Unusual


def _write_uint(bits: int) -> _Writer:
    def write(value: Any) -> bytes:
        if type(value) is not int or value < 0 or value >> bits:
            raise _Unusual
        return value.to_bytes(32, "big")

    return write


def _write_int(bits: int) -> _Writer:
    def write(value: Any) -> bytes:
        if type(value) is not int or not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise _Unusual
        return value.to_bytes(32, "big", signed=True)

    return write


def _write_bool(value: Any) -> bytes:
    if type(value) is not bool:
        raise _Unusual
    return (31 * b"\0") + (b"\1" if value else b"\0")


def _write_fixed_bytes(size: int) -> _Writer:
    def write(value: Any) -> bytes:
        if type(value) not in (bytes, bytearray) or len(value) > size:
            raise _Unusual
        return bytes(value).ljust(32, b"\0")

    return write


def _write_bytes(value: Any) -> bytes:
    if type(value) not in (bytes, bytearray):
        raise _Unusual
    padded = -(-len(value) // 32) * 32
    return len(value).to_bytes(32, "big") + bytes(value).ljust(padded, b"\0")


def _write_string(value: Any) -> bytes:
    if type(value) is not str:
        raise _Unusual
    return _write_bytes(value.encode("utf-8"))


def _write_sequence(parts: Sequence[tuple[bool, _Writer]], values: Sequence[Any]) -> bytes:
    """Heads then tails of values in a row (a tuple's, an array's or a call's arguments)."""
    if len(parts) != len(values):
        raise _Unusual
    if not any(dynamic for dynamic, _ in parts):
        return b"".join([write(value) for (_, write), value in zip(parts, values, strict=True)])
    encoded = [
        (dynamic, write(value)) for (dynamic, write), value in zip(parts, values, strict=True)
    ]
    offset = sum(32 if dynamic else len(body) for dynamic, body in encoded)
    heads, tails = [], []
    for dynamic, body in encoded:
        if dynamic:
            heads.append(offset.to_bytes(32, "big"))
            tails.append(body)
            offset += len(body)
        else:
            heads.append(body)
    return b"".join(heads + tails)


def _write_items(element: tuple[bool, _Writer], values: Sequence[Any]) -> bytes:
    """Heads then tails of an array's items, all of one type (`_write_sequence`, unrolled)."""
    dynamic, write = element
    bodies = [write(value) for value in values]
    if not dynamic:
        return b"".join(bodies)
    heads, offset = [], 32 * len(bodies)
    for body in bodies:
        heads.append(offset.to_bytes(32, "big"))
        offset += len(body)
    return b"".join(heads) + b"".join(bodies)


def _writer(entry: Mapping[str, Any]) -> tuple[bool, _Writer]:
    """(is dynamic, writer) of one ABI type entry (with its components)."""
    typ = entry["type"]
    if typ.endswith("]"):
        element = _writer({**entry, "type": typ[: typ.rindex("[")]})
        count = typ[typ.rindex("[") + 1 : -1]

        def write_array(value: Any) -> bytes:
            if type(value) not in (list, tuple) or (count and len(value) != int(count)):
                raise _Unusual
            body = _write_items(element, value)
            return body if count else len(value).to_bytes(32, "big") + body

        return (element[0] or not count), write_array
    if typ == "tuple":
        parts = [_writer(c) for c in entry["components"]]

        def write_tuple(value: Any) -> bytes:
            if type(value) not in (list, tuple):
                raise _Unusual
            return _write_sequence(parts, value)

        return any(dynamic for dynamic, _ in parts), write_tuple
    if typ in ("bytes", "string"):
        return True, _write_bytes if typ == "bytes" else _write_string
    if typ == "address":
        return False, _write_address
    if typ == "bool":
        return False, _write_bool
    if typ.startswith("uint"):
        return False, _write_uint(int(typ[4:] or 256))
    if typ.startswith("int"):
        return False, _write_int(int(typ[3:] or 256))
    if typ.startswith("bytes"):
        return False, _write_fixed_bytes(int(typ[5:]))
    raise ValueError(f"no writer for ABI type {typ!r}")


class _Function:
    __slots__ = ("inputs", "name", "outputs", "read_outputs", "selector", "write_inputs")

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = entry["name"]
        self.inputs = [canonical_type(i) for i in entry.get("inputs", [])]
        self.outputs = list(entry.get("outputs", []))
        self.selector = keccak(text=f"{self.name}({','.join(self.inputs)})")[:4]
        self.read_outputs = _sequence([_reader(o) for o in self.outputs])
        self.write_inputs = [_writer(i) for i in entry.get("inputs", [])]


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
        try:
            return fn.selector + _write_sequence(fn.write_inputs, args)
        except _Unusual:
            return fn.selector + abi_encode(fn.inputs, args)

    def decode(self, name: str, data: bytes) -> Any:
        """Decode a call's return data; a single output is returned bare, several as a tuple."""
        named = self.function(name).read_outputs(data, 0)
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
