"""The live wire's chunk path, made fast, keeps every byte and every check: a chunk sealed in one
pass is byte for byte the generic encoder's; a consumer reading chunks against the provider's
bound key refuses forgeries, malformed signatures and replays (v rewritten included); the
decoder's one-line path and go_string's fast path agree with the slow ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mor_workbench.chain.keys import Signer
from mor_workbench.protocol import (
    Decoder,
    RemoteProtocolError,
    ReplayGuard,
    Response,
    SessionPromptReq,
    SessionPromptRes,
    ecies_decrypt,
    ecies_encrypt,
    sign,
)
from mor_workbench.protocol.gojson import go_string
from mor_workbench.protocol.live_chunks import ChunkSealer
from mor_workbench.protocol.payload_json import compact
from mor_workbench.protocol.signing import recover_public_key
from mor_workbench.router import peer
from mor_workbench.router.peer import ChunkReader
from mor_workbench.router.transport import MockTransport

PROVIDER = PrivateKey(
    bytes.fromhex("81f44a49c40f206517efbbcca783d808914841200e0ac9a769368e1b2741e227")
)
PROVIDER_PUB = PROVIDER.public_key.format(compressed=False)
CONSUMER = Signer("0x" + "4b50fa71f5c3eeb8fdc452224b2395af2fcc3d125e06c32c82e048c0559db03f")
CONSUMER_PUB = CONSUMER.public_key_65
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1's order
DELTA = {
    "id": "chatcmpl-8a4f2c1e9b7d",
    "object": "chat.completion.chunk",
    "created": 1764500000,
    "model": "llama-3.3-70b",
    "choices": [{"index": 0, "delta": {"content": " <b>fox</b> & \u2028 ✓"}, "logprobs": None}],
}


@settings(max_examples=60, deadline=None)
@given(
    box=st.binary(max_size=600),
    request_id=st.text(max_size=12),
    timestamp=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_a_sealed_chunk_is_byte_for_byte_the_generic_encoding(
    box: bytes, request_id: str, timestamp: int
) -> None:
    sealed = ChunkSealer(request_id, PROVIDER, CONSUMER_PUB).envelope(box, timestamp)
    generic = Response(
        request_id, result=sign(SessionPromptRes("0x" + box.hex(), timestamp), PROVIDER)
    )
    assert sealed.encode() == generic.encode()
    assert sealed == generic


def read_all(wire: bytes, reader: ChunkReader) -> list[object]:
    """What a consumer gets from `wire`: framed, parsed and read as prompt() reads chunks."""
    out = []
    for obj in Decoder().feed(wire):
        response = Response.from_json(obj, SessionPromptRes)
        assert response.result is not None
        out.append(reader.read(response.result))
    return out


def test_sealed_chunks_open_to_their_payloads() -> None:
    sealer = ChunkSealer("a1b2c3d4", PROVIDER, CONSUMER_PUB)
    wire = b"".join(
        sealer.seal(p, 1_700_000_000_000 + i).encode() for i, p in enumerate([DELTA, "[DONE]"])
    )
    reader = ChunkReader(CONSUMER.signing_key, PROVIDER_PUB, cap=1 << 20)
    assert read_all(wire, reader) == [DELTA, "[DONE]"]
    # the plaintext is the payload's compact JSON
    (first, _) = Decoder().feed(wire)
    box = bytes.fromhex(first["result"]["message"][2:])
    plaintext = ecies_decrypt(CONSUMER.private_key_bytes(), box)
    assert plaintext == compact(DELTA)
    assert json.loads(plaintext) == DELTA


def chunk(payload: object, key: PrivateKey = PROVIDER, timestamp: int = 1) -> SessionPromptRes:
    box = ecies_encrypt(CONSUMER_PUB, json.dumps(payload).encode())
    return sign(SessionPromptRes("0x" + box.hex(), timestamp), key)


def with_signature(message: SessionPromptRes, signature: bytes) -> SessionPromptRes:
    return SessionPromptRes(message.message, message.timestamp, signature)


def test_a_chunk_signed_by_another_key_is_refused() -> None:
    reader = ChunkReader(CONSUMER.signing_key, PROVIDER_PUB, cap=1 << 20)
    with pytest.raises(RemoteProtocolError, match="not signed by"):
        reader.read(chunk(DELTA, key=PrivateKey()))


def test_malformed_and_malleated_signatures_are_refused() -> None:
    good = chunk(DELTA)
    r, s, v = good.signature[:32], int.from_bytes(good.signature[32:64], "big"), good.signature[64]
    twin = r + (N - s).to_bytes(32, "big") + bytes([v ^ 1])  # the same point, high s
    for bad in (
        twin,  # a valid ECDSA signature in its malleable form: refused as it is in Go
        good.signature[:64] + b"\x02",  # no such recovery id
        good.signature[:64],  # too short
        bytes(32) + good.signature[32:],  # r = 0
        b"\xff" * 32 + good.signature[32:],  # r beyond the order
        good.signature[:40] + bytes([good.signature[40] ^ 1]) + good.signature[41:],  # s altered
    ):
        reader = ChunkReader(CONSUMER.signing_key, PROVIDER_PUB, cap=1 << 20)
        with pytest.raises(RemoteProtocolError):
            reader.read(with_signature(good, bad))


def test_the_on_chain_form_of_v_verifies() -> None:
    good = chunk(DELTA)
    reader = ChunkReader(CONSUMER.signing_key, PROVIDER_PUB, cap=1 << 20)
    on_chain_v = good.signature[:64] + bytes([good.signature[64] + 27])
    assert reader.read(with_signature(good, on_chain_v)) == DELTA


async def test_a_chunk_replayed_with_v_rewritten_is_refused_as_a_replay() -> None:
    """Through the consumer's prompt(), over the in-memory transport: a provider (or anyone on
    the path) sends a chunk, then the same chunk with v as 27 + v. Both recover to the
    provider's key; the second is a replay, not a new chunk."""
    first = chunk(DELTA, timestamp=5)
    replay = with_signature(first, first.signature[:64] + bytes([first.signature[64] + 27]))

    async def provider(request: bytes) -> AsyncIterator[bytes]:
        request_id = json.loads(request)["id"]
        for message in (first, replay, chunk("[DONE]", timestamp=6)):
            yield Response(request_id, result=message).encode()

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    answer = peer.prompt(
        "memory:1",
        CONSUMER,
        bytes(32),
        PROVIDER_PUB,
        body,
        encrypt=False,
        transport=MockTransport({"memory:1": provider}),
    )
    received = []
    with pytest.raises(RemoteProtocolError, match="replayed"):
        async for payload in answer:
            received.append(payload)
    assert received == [DELTA]


def test_the_providers_replay_guard_knows_a_request_with_v_rewritten() -> None:
    """The same fault on the provider's side: a session.prompt (or request, or report)
    replayed with v as 27 + v recovers to the same user and is the same request."""
    request = sign(SessionPromptReq(bytes(32), '{"messages":[]}', 10_000), CONSUMER.signing_key)
    rewritten = request.signature[:64] + bytes([request.signature[64] + 27])
    assert recover_public_key(request) == recover_public_key(
        SessionPromptReq(bytes(32), '{"messages":[]}', 10_000, rewritten)
    )
    guard = ReplayGuard(window_ms=1000)
    guard.check(request.signature, 10_000, 10_000)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        guard.check(rewritten, 10_000, 10_100)


def test_the_signing_key_object_signs_as_the_raw_key_does() -> None:
    message = SessionPromptRes("0x04aa", 8)
    assert (
        sign(message, CONSUMER.signing_key).signature
        == sign(message, CONSUMER.private_key_bytes()).signature
    )
    assert CONSUMER.signing_key.public_key.format(compressed=False) == CONSUMER_PUB


def test_one_line_messages_nested_too_deep_are_still_refused() -> None:
    deep = b'{"a":' * 100 + b"1" + b"}" * 100 + b"\n"
    with pytest.raises(RemoteProtocolError, match="deeply"):
        Decoder().feed(deep)
    shallow = b'{"a":' * 30 + b"1" + b"}" * 30 + b"\n"
    (value,) = Decoder().feed(shallow)
    for _ in range(30):
        value = value["a"]
    assert value == 1


def test_a_line_holding_more_than_one_message_splits_as_scanned() -> None:
    decoder = Decoder()
    assert decoder.feed(b'{"a":"x\\ny"} {"b":[1,{"c":2}]}\n{"d":3}\n{"e":') == [
        {"a": "x\ny"},
        {"b": [1, {"c": 2}]},
        {"d": 3},
    ]
    assert decoder.feed(b"4}\n") == [{"e": 4}]


def go_reference(text: str) -> str:
    """Go's json.Marshal of a string, from Python's encoder and Go's documented extra escapes
    (HTML-safe < > &, U+2028/U+2029, invalid UTF-8 as U+FFFD)."""
    out = json.dumps(text, ensure_ascii=False)  # leaves lone surrogates as they are
    out = re.sub("[\ud800-\udfff]", lambda _: "\\ufffd", out)
    for char in "<>&\u2028\u2029":
        out = out.replace(char, f"\\u{ord(char):04x}")
    return out


@settings(max_examples=300)
@given(
    st.text(alphabet=st.characters(max_codepoint=0x7F))
    | st.text()
    | st.text(alphabet='0123456789abcdefx<>&"\\\n\x7f')
)
def test_go_strings_fast_path_agrees_with_gos_rules(text: str) -> None:
    assert go_string(text) == go_reference(text)


def test_the_per_chunk_bench_runs_and_every_wire_round_trips() -> None:
    """bench/per_chunk.py (the figures of issue 16 §1) measures each wire on chunks the consumer
    must get back intact; a wire that changed the payload would fail it."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "bench/per_chunk.py", "--iterations", "60", "--json"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    assert report["payload_bytes"] == 258
    live = report["rows"]["live wire, ours"]
    # a 258-byte payload: 113 bytes of ECIES around it, hex, and the signed envelope
    assert live["wire_bytes"] == len(
        ChunkSealer("a1b2c3d4", PROVIDER, CONSUMER_PUB).envelope(bytes(258 + 113), 10**12).encode()
    )
    assert set(report["rows"]) >= {
        "live wire, ours",
        "floor, a key per answer",
        "live wire, Go provider",
        "floor, a key per chunk",
        "fast channel (our peers)",
    }
    assert report["fast_channel_handshake_us"] > 0
