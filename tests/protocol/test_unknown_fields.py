"""Signatures are checked over the fields a message carries, in the order received: a newer
peer's extra fields (the v7.4 pong's health report, or any field a later release adds to any
message) never break a signature, and tampering with a signed extra field is caught."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_utils import keccak

from mor_workbench.protocol import (
    PingReq,
    PongRes,
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
from mor_workbench.protocol.errors import RemoteProtocolError
from mor_workbench.protocol.messages import ModelHealth, go_json
from mor_workbench.protocol.signing import sign_digest

KEY = bytes.fromhex("81f44a49c40f206517efbbcca783d808914841200e0ac9a769368e1b2741e227")
PUB = public_key_of(KEY)
PROVIDER = address_of(PUB)
MODEL = bytes.fromhex("ab" * 32)
OTHER_MODEL = bytes.fromhex("cd" * 32)
BID = bytes.fromhex("11" * 32)

# A v7.4+ health report as the PRs describe it (#772/#773/#781/#836), with a float and an
# unknown key in it, so the re-encoding must follow Go for values this version never reads.
REPORT = [
    {
        "modelId": "0x" + MODEL.hex(),
        "bidId": "0x" + BID.hex(),
        "modelName": "llama-3.3-70b <fast> & cheap",
        "status": "unhealthy",
        "errorKind": "bad_response",
        "httpStatus": 402,
        "latencyMs": 0.000015,
        "checkedAt": 1790000000,
    },
    {"modelId": "0x" + OTHER_MODEL.hex(), "status": "healthy"},
]


def go_signed(members: list[tuple[str, Any]], *, empty_signature: str | None) -> dict[str, Any]:
    """What a Go peer whose struct has exactly `members` (in that order) sends: it signs
    keccak256 of json.Marshal(struct) with the signature empty ("0x" where the field has no
    omitempty, left out where it does), then sets the signature in its place."""
    unsigned = [
        (k, empty_signature) if k == "signature" else (k, v)
        for k, v in members
        if k != "signature" or empty_signature is not None
    ]
    text = "{" + ",".join(f"{json.dumps(k)}:{go_json(v)}" for k, v in unsigned) + "}"
    signature = "0x" + sign_digest(keccak(text.encode()), KEY).hex()
    return {k: (signature if k == "signature" else v) for k, v in members}


def parse_pong(obj: dict[str, Any]) -> PongRes:
    """As the consumer parses it: from the bytes on the wire, through the response envelope."""
    wire = json.dumps({"id": "1", "result": obj}, ensure_ascii=False)
    reply = Response.from_json(json.loads(wire), PongRes)
    assert isinstance(reply.result, PongRes)
    return reply.result


def test_a_pong_signed_with_its_health_report_verifies_and_is_read() -> None:
    nonce = "0x0102030405060708"
    members = [("nonce", nonce), ("version", "v7.9.0"), ("models", REPORT), ("signature", "")]
    pong = parse_pong(go_signed(members, empty_signature="0x"))

    assert verify(pong, address=PROVIDER) == frozenset()  # the report is covered too
    entry = pong.health_of(MODEL)
    assert entry == ModelHealth(
        MODEL, "unhealthy", BID, "llama-3.3-70b <fast> & cheap", "bad_response", 402
    )
    assert pong.health_of(OTHER_MODEL).status == "healthy"  # type: ignore[union-attr]


def test_a_pong_whose_report_rides_outside_the_signature_verifies_and_says_so() -> None:
    """A provider that signs nonce and version only (what every consumer up to v7.3 checks)
    and appends the report after signing."""
    signed = go_signed(
        [("nonce", "0x0102"), ("version", "v7.4.0"), ("signature", "")], empty_signature="0x"
    )
    pong = parse_pong({**signed, "models": REPORT})

    assert verify(pong, address=PROVIDER) == frozenset({"models"})
    assert pong.health_of(MODEL).status == "unhealthy"  # type: ignore[union-attr]


def test_a_pong_without_a_report_verifies_as_before() -> None:
    signed = go_signed([("nonce", "0x0102"), ("signature", "")], empty_signature="0x")
    pong = parse_pong(signed)
    assert verify(pong, address=PROVIDER) == frozenset()
    assert pong.models is None and pong.health_of(MODEL) is None


def test_a_tampered_signed_report_is_refused() -> None:
    members = [("nonce", "0x0102"), ("version", "v7.9.0"), ("models", REPORT), ("signature", "")]
    obj = go_signed(members, empty_signature="0x")
    forged = [dict(REPORT[0], status="healthy"), REPORT[1]]
    with pytest.raises(RemoteProtocolError, match="not signed by"):
        verify(parse_pong({**obj, "models": forged}), address=PROVIDER)


def test_our_pong_with_a_report_verifies_and_older_consumers_still_verify_it() -> None:
    report = (ModelHealth(MODEL, "healthy", BID, "m", "", 0),)
    pong = sign(PongRes(b"\x01\x02", "mor-workbench/1 encrypted-prompts", models=report), KEY)
    received = parse_pong(json.loads(pong.encode()))
    assert received.models == report
    assert verify(received, public_key=PUB) == frozenset({"models"})
    # A v7.0-7.3 consumer re-encodes only nonce, version and an empty signature.
    older = PongRes(received.nonce, received.version).encode(signed=False)
    assert keccak(older) == keccak(received.encode(signed=False))


SIGNED_MESSAGES = [
    (PingReq, [("nonce", "0x0a0b"), ("signature", "")], "0x"),
    (
        SessionReq,
        [
            ("signature", ""),
            ("user", PROVIDER.lower()),
            ("key", "0x" + PUB.hex()),
            ("spend", "1000"),
            ("timestamp", 1_700_000_000_000),
            ("bidid", "0x" + BID.hex()),
        ],
        None,
    ),
    (
        SessionRes,
        [
            ("message", "0x" + PUB.hex()),
            ("approval", "0x00"),
            ("approvalSig", "0x01"),
            ("user", PROVIDER.lower()),
            ("timestamp", 5),
            ("signature", ""),
        ],
        None,
    ),
    (
        SessionPromptReq,
        [("signature", ""), ("sessionid", "0x" + "22" * 32), ("message", "{}"), ("timestamp", 5)],
        None,
    ),
    (SessionPromptRes, [("message", "0xab"), ("signature", ""), ("timestamp", 5)], None),
    (SessionReportReq, [("signature", ""), ("message", "0x22"), ("timestamp", 5)], None),
    (
        SessionReportRes,
        [("message", "0x01"), ("signedReport", "0x02"), ("signature", ""), ("timestamp", 5)],
        None,
    ),
]
EXTRA = ("statusCode", {"retry": [1, 2.5, None, True], "note": "<&>"})


@pytest.mark.parametrize(("kind", "members", "empty"), SIGNED_MESSAGES, ids=lambda v: "")
@pytest.mark.parametrize("where", [0, -1], ids=["extra-first", "extra-last"])
def test_every_message_with_an_extra_signed_field_verifies(kind, members, empty, where) -> None:
    with_extra = list(members)
    with_extra.insert(where if where >= 0 else len(with_extra), EXTRA)
    message = kind.from_json(go_signed(with_extra, empty_signature=empty))
    assert verify(message, public_key=PUB) == frozenset()
    # the same message without the field this version does not know still encodes as before
    plain = kind.from_json(go_signed(members, empty_signature=empty))
    assert message.encode(signed=False) == plain.encode(signed=False)


@pytest.mark.parametrize(("kind", "members", "empty"), SIGNED_MESSAGES, ids=lambda v: "")
def test_every_message_with_a_tampered_extra_field_is_refused(kind, members, empty) -> None:
    obj = go_signed([*members, EXTRA], empty_signature=empty)
    obj[EXTRA[0]] = {"retry": [1, 2.5, None, False], "note": "<&>"}
    with pytest.raises(RemoteProtocolError, match="not signed by"):
        verify(kind.from_json(obj), public_key=PUB)


def test_an_error_with_extra_fields_verifies_and_a_tampered_one_does_not() -> None:
    """The live router signs its error struct with data.signature null; a newer one may add
    fields (#781 adds statusCode to consumer-facing errors)."""
    unsigned = {
        "message": "backend failed",
        "code": 400,
        "statusCode": 502,
        "data": {"timestamp": 7, "signature": None, "requestId": "r1"},
    }
    signature = sign_digest(keccak(go_json(unsigned).encode()), KEY)
    received = {**unsigned, "data": {**unsigned["data"], "signature": "0x" + signature.hex()}}
    error = RpcError.from_json(json.loads(json.dumps(received)))
    assert verify(error, public_key=PUB) == frozenset()

    tampered = RpcError.from_json({**received, "statusCode": 200})
    with pytest.raises(RemoteProtocolError):
        verify(tampered, public_key=PUB)
    ours = sign_error(RpcError("x", 400, 1), KEY)
    assert verify(RpcError.from_json(json.loads(ours.encode())), public_key=PUB) == frozenset()
