"""The stream decoder splits concatenated JSON anywhere, limits size, and fails cleanly."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mor_workbench.protocol import Decoder, RemoteProtocolError

VALUES = [
    {"id": "1", "result": {"message": "0x04ab", "timestamp": 1}},
    {"id": "2", "result": {"message": 'tricky } { " \\" \\\\ ] [', "n": [1, [2, {"x": 3}]]}},
    {"id": "3", "result": None, "error": {"message": "Provider at capacity", "code": 400}},
]
STREAM = b"".join(
    json.dumps(v).encode() + sep for v, sep in zip(VALUES, [b"\n", b"", b" \r\n"], strict=True)
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_stream_yields_the_same_objects(cuts) -> None:
    decoder = Decoder()
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    out = [obj for piece in pieces for obj in decoder.feed(piece)]
    assert out == VALUES


def test_one_byte_at_a_time() -> None:
    decoder = Decoder()
    assert [o for i in range(len(STREAM)) for o in decoder.feed(STREAM[i : i + 1])] == VALUES


def test_size_limit_applies_before_the_message_completes() -> None:
    decoder = Decoder(max_message=100)
    with pytest.raises(RemoteProtocolError, match="longer than 100 bytes"):
        decoder.feed(b'{"message": "' + b"x" * 200)
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"}")  # the decoder stays failed


@pytest.mark.parametrize("bad", [b"[1,2]", b'"str"', b"42 ", b'{"a": }', b"}", b'{"a":1}}'])
def test_malformed_input_is_refused(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Decoder().feed(bad + b" {}")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="deeply"):
        Decoder().feed(b'{"a":' * 100)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_end_in_objects_or_a_clean_error(chunks) -> None:
    decoder = Decoder(max_message=512)
    started = time.monotonic()
    try:
        for chunk in chunks:
            for obj in decoder.feed(chunk):
                assert isinstance(obj, dict)
    except RemoteProtocolError:
        pass
    assert time.monotonic() - started < 1.0
