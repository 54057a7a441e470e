"""The consumer reads a chunk line straight from its bytes (`ChunkLines`) and opens an answer's
boxes with the keys derived once per ephemeral key (`BoxOpener`); the provider seals an answer
under one ephemeral key (`BoxSealer`). Each keeps every check of the generic path: what the
fast path reads is what the generic parse reads, anything else falls back to it, and a
tampered, forged or replayed line is refused."""

from __future__ import annotations

import json

import pytest
from coincurve import PrivateKey
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from test_live_chunks import CONSUMER, CONSUMER_PUB, PROVIDER, PROVIDER_PUB

from mor_workbench.protocol import (
    Decoder,
    RemoteProtocolError,
    Response,
    SessionPromptRes,
    ecies_decrypt,
    ecies_encrypt,
    sign,
)
from mor_workbench.protocol.ecies import PUB_LEN, BoxOpener, BoxSealer
from mor_workbench.protocol.gojson import go_object, go_string
from mor_workbench.protocol.live_chunks import ChunkLines, ChunkSealer, SealedChunk
from mor_workbench.router.peer import ChunkReader

DELTA = {"choices": [{"index": 0, "delta": {"content": " fox & <b>"}}], "id": "c-1"}
LIMIT = 1 << 22


def reader() -> ChunkReader:
    return ChunkReader(CONSUMER.signing_key, PROVIDER_PUB, cap=1 << 20)


def payload_of(item: SealedChunk | Response, chunks: ChunkReader) -> object:
    """What prompt() makes of one item ChunkLines gave."""
    if type(item) is SealedChunk:
        return chunks.read_sealed(item)
    assert isinstance(item, Response) and item.result is not None
    return chunks.read(item.result)


@settings(max_examples=80, deadline=None)
@given(
    box=st.binary(max_size=400),
    request_id=st.text(max_size=10),
    timestamp=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_a_chunk_line_read_from_its_bytes_is_what_the_generic_parse_reads(
    box: bytes, request_id: str, timestamp: int
) -> None:
    line = ChunkSealer(request_id, PROVIDER, CONSUMER_PUB).envelope(box, timestamp).encode()
    (item,) = ChunkLines(request_id, LIMIT).feed(line)
    (generic,) = Decoder().feed(line)
    parsed = Response.from_json(generic, SessionPromptRes).result
    assert isinstance(parsed, SessionPromptRes)
    assert type(item) is SealedChunk
    assert item.box == box
    assert item.signature == parsed.signature
    assert item.signed == parsed.signing_payload()


def line_of(members: list[tuple[str, str]], request_id: str = "r1", spaced: bool = False) -> bytes:
    """A response line with the result's members as given (Go JSON values)."""
    text = go_object([("id", go_string(request_id)), ("result", go_object(members))])
    if spaced:
        text = json.dumps(json.loads(text), indent=1)
    return (text + "\n").encode()


def signed_members(
    message: str, timestamp: int = 7, extra: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The members a provider sends, signed over all but the signature, in this order."""
    unsigned = [("message", go_string(message)), *(extra or []), ("timestamp", str(timestamp))]
    digest_input = go_object(unsigned).encode()
    signature = PROVIDER.sign_recoverable(keccak(digest_input), hasher=None)
    return [unsigned[0], ("signature", go_string("0x" + signature.hex())), *unsigned[1:]]


def test_other_spellings_fall_back_to_the_generic_path_and_read_the_same() -> None:
    """A newer peer's extra member, an indented message, another id: each is left to the
    generic parse (a Response), which reads the same payload. Upper-case hex (signed as sent)
    keeps the fast path: the signed bytes are the line's own."""
    box = "0x" + ecies_encrypt(CONSUMER_PUB, json.dumps(DELTA).encode()).hex()
    for line in (
        line_of(signed_members(box, extra=[("tee", "true")])),
        line_of(signed_members(box), spaced=True),
        line_of(signed_members(box), request_id="another"),
    ):
        (item,) = ChunkLines("r1", LIMIT).feed(line)
        assert isinstance(item, Response), line
        assert payload_of(item, reader()) == DELTA
    for line in (line_of(signed_members(box)), line_of(signed_members("0x" + box[2:].upper()))):
        (item,) = ChunkLines("r1", LIMIT).feed(line)
        assert type(item) is SealedChunk
        assert payload_of(item, reader()) == DELTA


def test_a_tampered_forged_or_replayed_line_is_refused() -> None:
    sealer = ChunkSealer("r1", PROVIDER, CONSUMER_PUB)
    line = sealer.seal(DELTA, 1_764_500_000_000).encode()
    later = line.replace(b'"timestamp":1764500000000', b'"timestamp":1764500000001')
    head = len(b'{"id":"r1","result":{"message":"0x')
    flipped = line[:head] + (b"1" if line[head : head + 1] != b"1" else b"2") + line[head + 1 :]
    forged = ChunkSealer("r1", PrivateKey(), CONSUMER_PUB).seal(DELTA, 1).encode()
    for bad, refusal in ((later, "not signed"), (flipped, "not signed"), (forged, "not signed")):
        (item,) = ChunkLines("r1", LIMIT).feed(bad)
        assert type(item) is SealedChunk
        with pytest.raises(RemoteProtocolError, match=refusal):
            reader().read_sealed(item)
    chunks = reader()
    signature_hex = json.loads(line)["result"]["signature"]
    v = int(signature_hex[-2:], 16)
    rewritten = line.replace(
        signature_hex.encode(), (signature_hex[:-2] + f"{v + 27:02x}").encode()
    )
    assert payload_of(ChunkLines("r1", LIMIT).feed(line)[0], chunks) == DELTA
    for replay in (line, rewritten):
        (item,) = ChunkLines("r1", LIMIT).feed(replay)
        with pytest.raises(RemoteProtocolError, match="replayed"):
            payload_of(item, chunks)


def test_chunks_split_across_reads_and_joined_in_one_read_come_out_whole() -> None:
    sealer = ChunkSealer("r1", PROVIDER, CONSUMER_PUB)
    wire = b"".join(sealer.seal(p, 10 + i).encode() for i, p in enumerate([DELTA, "[DONE]"]))
    lines, chunks = ChunkLines("r1", LIMIT), reader()
    items = [*lines.feed(wire[:100]), *lines.feed(wire[100:-3]), *lines.feed(wire[-3:])]
    assert [type(i) for i in items] == [SealedChunk, SealedChunk]
    assert [payload_of(i, chunks) for i in items] == [DELTA, "[DONE]"]


def test_an_answers_boxes_share_one_ephemeral_key_and_each_is_a_go_ethereum_box() -> None:
    boxes = BoxSealer(CONSUMER_PUB)
    sealed = [boxes.seal(b"chunk %d" % i) for i in range(20)]
    assert len({box[:PUB_LEN] for box in sealed}) == 1
    assert len({box[PUB_LEN : PUB_LEN + 16] for box in sealed}) == 20  # a fresh IV each
    for i, box in enumerate(sealed):  # the generic, per-message decryption opens each
        assert ecies_decrypt(CONSUMER.private_key_bytes(), box) == b"chunk %d" % i
    assert BoxSealer(CONSUMER_PUB).seal(b"x")[:PUB_LEN] != sealed[0][:PUB_LEN]


def test_the_opener_keeps_every_check_across_ephemeral_keys() -> None:
    """Boxes under one key (ours), a key per box (a Go provider's), interleaved; a box that
    reuses the key just derived but was altered, or addressed to someone else, is refused."""
    opener = BoxOpener(CONSUMER.signing_key)
    ours = BoxSealer(CONSUMER_PUB)
    for i in range(6):
        box = ours.seal(b"ours %d" % i) if i % 2 else ecies_encrypt(CONSUMER_PUB, b"go %d" % i)
        assert opener.open(box) == (b"ours %d" % i if i % 2 else b"go %d" % i)
    altered = bytearray(ours.seal(b"ours again"))
    altered[PUB_LEN + 20] ^= 1
    with pytest.raises(RemoteProtocolError, match="authentication"):
        opener.open(bytes(altered))
    assert opener.open(ours.seal(b"still fine")) == b"still fine"
    with pytest.raises(RemoteProtocolError, match="authentication"):
        BoxOpener(PrivateKey()).open(ours.seal(b"not yours"))
    for malformed in (b"", b"\x05" + bytes(200), ours.seal(b"x")[: PUB_LEN + 10]):
        with pytest.raises(RemoteProtocolError, match="malformed"):
            opener.open(malformed)


def test_a_chunk_signed_by_another_key_through_the_generic_path_is_refused_too() -> None:
    box = "0x" + ecies_encrypt(CONSUMER_PUB, b"{}").hex()
    other = sign(SessionPromptRes(box, 3), PrivateKey())
    with pytest.raises(RemoteProtocolError, match="not signed by"):
        reader().read(other)


def test_an_opener_keeping_several_keys_opens_interleaved_senders_and_forgets_the_oldest() -> None:
    """The provider's prompt opener keeps the keys of many sessions' senders (`keep`); boxes
    from senders beyond that still open (their keys derived again), and none opens wrongly."""
    opener = BoxOpener(CONSUMER.signing_key, keep=2)
    senders = [BoxSealer(CONSUMER_PUB) for _ in range(3)]
    for round_ in range(3):
        for i, sender in enumerate(senders):
            assert opener.open(sender.seal(b"%d/%d" % (i, round_))) == b"%d/%d" % (i, round_)
    assert len(opener._keys) == 2
    tampered = bytearray(senders[2].seal(b"kept key"))
    tampered[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="authentication"):
        opener.open(bytes(tampered))
