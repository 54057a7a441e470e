"""The streamed payloads' JSON (`protocol.payload_json`): orjson's speed, the standard
library's reading wherever orjson refuses what it accepts."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mor_workbench.protocol.payload_json import compact, parse

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_what_it_writes_reads_back_as_the_standard_library_reads_it(value: object) -> None:
    written = compact(value)
    assert parse(written) == json.loads(written) == json.loads(json.dumps(value))


def test_it_reads_what_only_the_standard_library_takes() -> None:
    assert math.isnan(parse(b"NaN"))
    assert parse(b"[Infinity]") == [math.inf]
    assert parse(b'"\\ud800"') == "\ud800"  # a lone surrogate, as json.loads keeps it


def test_it_writes_what_only_the_standard_library_takes() -> None:
    assert compact({1: "a"}) == b'{"1":"a"}'
    assert compact(2**70) == str(2**70).encode()
    assert compact("\ud800") == b'"\\ud800"'


def test_it_writes_compactly_in_utf8() -> None:
    assert compact({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


def test_what_is_not_json_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse(b'{"a":')
