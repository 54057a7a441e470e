"""Messages encode to the bytes a Go peer writes, parse back, and sign/verify like go-ethereum."""

from __future__ import annotations

import json

import pytest
from coincurve import PrivateKey
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from mor_workbench.protocol import (
    PingReq,
    PongRes,
    Request,
    Response,
    RpcError,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
    address_of,
    public_key_of,
    sign,
    sign_error,
    verify,
)
from mor_workbench.protocol.errors import ProtocolError, RemoteProtocolError
from mor_workbench.protocol.gojson import go_string

# The key and its compressed public key from the live router's own tests (mor_rpc_test.go).
KEY = bytes.fromhex("81f44a49c40f206517efbbcca783d808914841200e0ac9a769368e1b2741e227")
PUB = public_key_of(KEY)
USER = "0x" + "Ab" * 20
BID = bytes.fromhex("11" * 32)
SESSION = bytes.fromhex("22" * 32)


def test_key_matches_the_live_routers_test_fixture() -> None:
    compressed = PrivateKey(KEY).public_key.format(compressed=True)
    assert compressed.hex() == "033e5e77f12aa67e52484ce64b64737d397098e78d54beba15a0bf6dcfdd5ae7e2"


@pytest.mark.parametrize(
    ("text", "go"),
    [
        ("plain", '"plain"'),
        ('<b>"Tom & Jerry"</b>', '"\\u003cb\\u003e\\"Tom \\u0026 Jerry\\"\\u003c/b\\u003e"'),
        ("line\nfeed\ttab\r\x08\x0c", '"line\\nfeed\\ttab\\r\\b\\f"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"'),
        ("sep\u2028par\u2029", '"sep\\u2028par\\u2029"'),
        ("héllo ✓ 🚀", '"héllo ✓ 🚀"'),
        ("lone \ud800", '"lone \\ufffd"'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_strings_are_escaped_like_go(text: str, go: str) -> None:
    assert go_string(text) == go
    assert json.loads(go) == text.replace("\ud800", "\ufffd")


GOLDEN = [
    (
        SessionReq(USER, PUB, 10**18, 1_700_000_000_123, BID),
        '{"user":"0x' + "ab" * 20 + '","key":"0x' + PUB.hex() + '","spend":"1000000000000000000",'
        '"timestamp":1700000000123,"bidid":"0x' + "11" * 32 + '"}',
    ),
    (
        SessionRes(PUB, b"\x01\x02", b"\x03", USER, 1_700_000_000_456),
        '{"message":"0x' + PUB.hex() + '","approval":"0x0102","approvalSig":"0x03",'
        '"user":"0x' + "ab" * 20 + '","timestamp":1700000000456}',
    ),
    (
        SessionPromptReq(SESSION, '{"messages":[{"role":"user","content":"<hi> & bye"}]}', 7),
        '{"sessionid":"0x' + "22" * 32 + '","message":"{\\"messages\\":[{\\"role\\":\\"user\\",'
        '\\"content\\":\\"\\u003chi\\u003e \\u0026 bye\\"}]}","timestamp":7}',
    ),
    (SessionPromptRes("0x04aa", 8), '{"message":"0x04aa","timestamp":8}'),
    (
        SessionReportReq("0x" + "22" * 32, 9),
        '{"message":"0x' + "22" * 32 + '","timestamp":9}',
    ),
    (
        SessionReportRes(b"\xaa", b"\xbb", 10),
        '{"message":"0xaa","signedReport":"0xbb","timestamp":10}',
    ),
    (PingReq(bytes(range(8))), '{"nonce":"0x0001020304050607","signature":"0x"}'),
    (PongRes(bytes(range(8))), '{"nonce":"0x0001020304050607","signature":"0x"}'),
    (
        PongRes(b"\x01", "mor-workbench/0.1 encrypted-prompts"),
        '{"nonce":"0x01","version":"mor-workbench/0.1 encrypted-prompts","signature":"0x"}',
    ),
]


@pytest.mark.parametrize(("message", "unsigned"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_hash_and_signature(message, unsigned: str) -> None:
    assert message.encode(signed=False) == unsigned.encode()
    signed = sign(message, KEY)
    # go-ethereum signs keccak256 of exactly those bytes, r ‖ s ‖ v with v in {0, 1}
    assert len(signed.signature) == 65 and signed.signature[64] in (0, 1)
    assert signed.encode(signed=False) == unsigned.encode()
    assert sign(message, KEY).signature == signed.signature  # RFC 6979: deterministic, as geth
    digest = keccak(unsigned.encode())
    recovered = PrivateKey(KEY).public_key.from_signature_and_message(
        signed.signature, digest, hasher=None
    )
    assert recovered.format(compressed=False) == PUB
    verify(signed, public_key=PUB)
    verify(signed, address=address_of(PUB))
    wire = signed.encode()
    assert json.loads(wire)["signature"] == "0x" + signed.signature.hex()
    assert type(message).from_json(json.loads(wire)) == signed


def test_error_envelopes_as_the_live_router_writes_them() -> None:
    error = RpcError("Provider at capacity", 400, 1_700_000_000_000)
    assert error.encode() == (
        b'{"message":"Provider at capacity","code":400,'
        b'"data":{"timestamp":1700000000000,"signature":null}}'
    )
    signed = sign_error(error, KEY)
    verify(signed, public_key=PUB)
    response = Response("a1b2c3d4", error=signed)
    parsed = Response.from_json(json.loads(response.encode()), SessionRes)
    assert parsed.error == signed and parsed.result is None
    assert response.encode().startswith(b'{"id":"a1b2c3d4","result":null,"error":{')
    assert response.encode().endswith(b"}\n")


def test_request_envelope_round_trip() -> None:
    request = Request("0badc0de", sign(SessionReportReq("0x" + "22" * 32, 5), KEY))
    wire = request.encode()
    assert wire.startswith(b'{"id":"0badc0de","method":"session.report","params":{"signature":')
    assert Request.from_json(json.loads(wire)) == request
    with pytest.raises(RemoteProtocolError, match="unknown method"):
        Request.from_json({"id": "1", "method": "session.drop", "params": {}})


@pytest.mark.parametrize(
    "params",
    [
        {"user": "0x12", "key": "0x04", "spend": "1", "timestamp": 1, "bidid": "0x" + "11" * 32},
        {"user": USER, "key": "04", "spend": "1", "timestamp": 1, "bidid": "0x" + "11" * 32},
        {"user": USER, "key": "0x04", "spend": "-1", "timestamp": 1, "bidid": "0x" + "11" * 32},
        {"user": USER, "key": "0x04", "spend": "1", "timestamp": "1", "bidid": "0x" + "11" * 32},
        {"user": USER, "key": "0x04", "spend": "1", "timestamp": 1, "bidid": "0x11"},
        {"user": USER, "key": "0x04", "spend": "1", "timestamp": 1},
        ["not", "an", "object"],
    ],
)
def test_wrong_types_are_named(params) -> None:
    with pytest.raises(RemoteProtocolError):
        Request.from_json({"id": "1", "method": "session.request", "params": params})


def test_unsigned_and_foreign_signatures_are_refused() -> None:
    message = SessionPromptReq(SESSION, "{}", 1)
    with pytest.raises(RemoteProtocolError, match="not signed"):
        verify(message, public_key=PUB)
    other = bytes.fromhex("42" * 32)
    with pytest.raises(RemoteProtocolError, match="expected key"):
        verify(sign(message, other), public_key=PUB)


hexes = st.binary(min_size=0, max_size=80)
texts = st.text(max_size=200)
ints = st.integers(min_value=0, max_value=2**64 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
hashes = st.binary(min_size=32, max_size=32)
MESSAGES = st.one_of(
    st.builds(SessionReq, addresses, hexes, st.integers(0, 2**256), ints, hashes),
    st.builds(SessionRes, hexes, hexes, hexes, addresses, ints),
    st.builds(SessionPromptReq, hashes, texts, ints),
    st.builds(SessionPromptRes, texts, ints),
    st.builds(SessionReportReq, texts, ints),
    st.builds(SessionReportRes, hexes, hexes, ints),
    st.builds(PingReq, hexes),
    st.builds(PongRes, hexes, texts),
)


@settings(max_examples=150, deadline=None)
@given(MESSAGES)
def test_decode_of_encode_is_identity(message) -> None:
    signed = sign(message, KEY)
    assert type(message).from_json(json.loads(signed.encode())) == signed


@settings(max_examples=150, deadline=None)
@given(MESSAGES, st.data())
def test_one_flipped_bit_breaks_verification(message, data) -> None:
    signed = sign(message, KEY)
    wire = bytearray(signed.encode())
    index = data.draw(st.integers(0, len(wire) * 8 - 1))
    wire[index // 8] ^= 1 << (index % 8)
    try:
        tampered = type(message).from_json(json.loads(bytes(wire)))
    except (ProtocolError, ValueError, UnicodeDecodeError):
        return  # no longer parses: refused
    if tampered == signed:
        return  # the flip hit insignificant bytes (e.g. hex letter case)
    with pytest.raises(ProtocolError):
        verify(tampered, public_key=PUB)
