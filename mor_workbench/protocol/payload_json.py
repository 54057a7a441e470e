"""The JSON of streamed payloads (a backend's chunks: parsed by the provider, sealed, opened
and parsed again by the consumer, once per chunk on either wire).

orjson reads a 258-byte OpenAI delta in about 0.9 µs and writes it in 0.3, against 3.7 and 4.6
for the standard library. What orjson refuses and the standard library accepts (NaN and
Infinity, lone surrogates, keys that are not strings, integers beyond 64 bits on writing) goes
through the standard library. The differences left: the text is written as UTF-8 rather than
ASCII escapes (which every JSON reader, Go's included, takes alike), NaN and Infinity are
written as null (no JSON reader but Python's takes them), and an integer beyond 64 bits reads
as a float (OpenAI payloads carry none: ids are strings, counts and timestamps fit).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["compact", "parse"]


def parse(data: bytes | str) -> Any:
    """The value of the JSON text `data`; `ValueError` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def compact(value: Any) -> bytes:
    """`value` as compact JSON (no spaces), UTF-8; `TypeError` or `ValueError` when it is not
    a JSON value."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()
