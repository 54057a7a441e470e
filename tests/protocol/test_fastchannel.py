"""The fast channel's guarantees, at the protocol level: what a provider seals, our consumer
reads back exactly; a flipped bit, a replayed, dropped or reordered frame, a cut-off answer, a
transcript signed by another key and a frame sealed for another session are each refused
with their own typed error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mor_workbench.errors import (
    ChunkForged,
    ChunkMissing,
    ChunkReplayed,
    LocalProtocolError,
    RemoteProtocolError,
    StreamTruncated,
    TranscriptForged,
)
from mor_workbench.protocol import (
    Response,
    RpcError,
    SessionPromptReq,
    SessionPromptRes,
    public_key_of,
    sign,
    sign_error,
)
from mor_workbench.protocol.fastchannel import (
    CHECKPOINT_EVERY,
    DATA,
    Checkpoint,
    Data,
    End,
    Failure,
    Offer,
    Replies,
    ReplyState,
    Transcript,
    accept_offer,
    channel_context,
    transcript_signer,
)

PROVIDER_KEY = bytes.fromhex("11" * 32)
CONSUMER_KEY = bytes.fromhex("22" * 32)
SESSION = bytes.fromhex("33" * 32)


def _frames(blob: bytes) -> list[bytes]:
    """Split sealed frames at their length prefixes (as an attacker on the wire can)."""
    out = []
    while blob:
        end = 4 + int.from_bytes(blob[:4], "big")
        out.append(blob[:end])
        blob = blob[end:]
    return out


def handshake(
    *, session: bytes = SESSION, provider_key: bytes = PROVIDER_KEY, every: int = CHECKPOINT_EVERY
) -> tuple[Replies, bytes, object]:
    """A consumer's reader and a provider's sender for one prompt, as the real peers make
    them: (reader, the accept line the provider sends first, sender)."""
    offer = Offer.new()
    prompt = sign(SessionPromptReq(session, "{}", 1, fast_channel=offer.public_key), CONSUMER_KEY)
    public, sender = accept_offer(
        offer.public_key,
        identity_key=provider_key,
        consumer_key=public_key_of(CONSUMER_KEY),
        session_id=session,
        request_id="r1",
        prompt_signature=prompt.signature,
        checkpoint_every=every,
    )
    accept = sign(SessionPromptRes("", 2, fast_channel=public), provider_key)
    reader = Replies(
        offer,
        SESSION,
        "r1",
        prompt.signature,
        public_key_of(CONSUMER_KEY),
        public_key_of(PROVIDER_KEY),
        max_message=1 << 20,
    )
    return reader, Response("r1", result=accept).encode(), sender


def stream(
    chunks: list[bytes], every: int = CHECKPOINT_EVERY
) -> tuple[Replies, bytes, list[bytes]]:
    """The accept line and each chunk's frames (checkpoints ride with their chunk), END last."""
    reader, accept, sender = handshake(every=every)
    frames = [sender.data(c) for c in chunks] + [sender.end()]
    return reader, accept, frames


def chunks_of(events: list) -> list[bytes]:
    return [e.chunk for e in events if isinstance(e, Data)]


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=600), max_size=40),
    every=st.integers(1, 8),
    cut=st.integers(0, 10_000),
)
def test_round_trip_whatever_the_chunks_and_however_the_bytes_are_split(
    chunks: list[bytes], every: int, cut: int
) -> None:
    reader, accept, frames = stream(chunks, every)
    wire = accept + b"".join(frames)
    cut %= len(wire) + 1
    events = reader.feed(wire[:cut]) + reader.feed(wire[cut:])
    assert all(not isinstance(e, Response) for e in events)  # the accept yields no event
    assert chunks_of(events) == chunks
    assert isinstance(events[-1], End) and reader.state is ReplyState.ENDED
    assert sum(type(e) is Checkpoint for e in events) == len(chunks) // every
    reader.finish()


@pytest.mark.parametrize("chunks", [[], [b'{"a":1}']])
def test_an_accept_whose_newline_comes_in_the_next_read_still_opens_the_channel(
    chunks: list[bytes],
) -> None:
    """The bytes break right before the accept line's newline (found by the property above:
    the newline was read as the start of the first frame, a frame 'longer than 1 MiB')."""
    reader, accept, frames = stream(chunks)
    assert accept.endswith(b"\n")
    events = reader.feed(accept[:-1]) + reader.feed(b"\n" + b"".join(frames))
    assert chunks_of(events) == chunks
    assert isinstance(events[-1], End) and reader.state is ReplyState.ENDED


def test_the_final_signature_is_the_providers_over_the_transcript() -> None:
    reader, accept, frames = stream([b'{"a":1}', b'{"b":2}'])
    end = reader.feed(accept + b"".join(frames))[-1]
    signer = transcript_signer(end.seq, end.transcript, end.signature, final=True)
    assert signer == public_key_of(PROVIDER_KEY)
    # the same signature does not pass for a checkpoint: END cannot be moved earlier
    assert transcript_signer(end.seq, end.transcript, end.signature, final=False) != signer


def test_anyone_can_check_what_the_provider_answered_without_a_secret() -> None:
    """A dispute: from the prompt's signature, both ephemeral keys and the chunks alone (no
    channel key), the END signature recovers to the provider's registered key, and to no
    other key once a chunk is changed."""
    reader, accept, sender = handshake(every=2)
    chunks = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    events = reader.feed(accept + b"".join(sender.data(c) for c in chunks) + sender.end())
    end = events[-1]
    provider_ephemeral = SessionPromptRes.from_json(json.loads(accept)["result"]).fast_channel
    context = channel_context(
        SESSION,
        "r1",
        reader.prompt_signature,
        public_key_of(CONSUMER_KEY),
        public_key_of(PROVIDER_KEY),
        reader.offer.public_key,
        provider_ephemeral,
    )
    assert chunks_of(events) == chunks
    for changed in (None, 1):
        transcript = Transcript(context)
        seq = 0
        for index, chunk in enumerate(chunks):
            transcript.add(DATA, seq, b'{"n":9}' if index == changed else chunk)
            seq += 2 if index % 2 else 1  # a checkpoint follows every second chunk
        signer = transcript_signer(end.seq, transcript.digest(), end.signature, final=True)
        assert (signer == public_key_of(PROVIDER_KEY)) is (changed is None)


@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
@settings(max_examples=60, deadline=None)
def test_a_flipped_bit_in_any_frame_is_refused(position: int, bit: int) -> None:
    reader, accept, frames = stream([b'{"content":"hello"}', b'{"content":"world"}'])
    wire = bytearray(b"".join(frames))
    # past the length prefix of the first frame: a changed length only splits differently
    position = 4 + position % (len(wire) - 4)
    wire[position] ^= 1 << bit
    reader.feed(accept)
    with pytest.raises((ChunkForged, ChunkMissing, ChunkReplayed, RemoteProtocolError)):
        reader.feed(bytes(wire))
        reader.finish()


def test_a_flipped_bit_in_a_chunk_is_a_forgery() -> None:
    reader, accept, frames = stream([b'{"content":"hello"}'])
    tampered = bytearray(frames[0])
    tampered[20] ^= 0x01
    reader.feed(accept)
    with pytest.raises(ChunkForged):
        reader.feed(bytes(tampered))


def test_a_replayed_chunk_is_refused() -> None:
    reader, accept, frames = stream([b'{"n":1}', b'{"n":2}'])
    reader.feed(accept + frames[0])
    with pytest.raises(ChunkReplayed):
        reader.feed(frames[0])


def test_a_dropped_chunk_is_refused() -> None:
    reader, accept, frames = stream([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    reader.feed(accept + frames[0])
    with pytest.raises(ChunkMissing):
        reader.feed(frames[2])


def test_reordered_chunks_are_refused() -> None:
    reader, accept, frames = stream([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    reader.feed(accept)
    with pytest.raises(ChunkMissing):
        reader.feed(frames[1] + frames[0])


def test_renumbering_a_frame_to_fit_is_a_forgery() -> None:
    """Dropping frame 1 and relabelling frame 2 as 1 fails: the nonce and aad carry seq."""
    reader, accept, frames = stream([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    relabelled = bytearray(frames[2])
    relabelled[5:13] = (1).to_bytes(8, "big")
    reader.feed(accept + frames[0])
    with pytest.raises(ChunkForged):
        reader.feed(bytes(relabelled))


def test_an_answer_cut_before_its_signed_end_is_truncated() -> None:
    reader, accept, frames = stream([b'{"n":1}', b'{"n":2}'])
    reader.feed(accept + b"".join(frames[:-1]))
    with pytest.raises(StreamTruncated):
        reader.finish()


def test_an_answer_cut_inside_a_frame_is_truncated() -> None:
    reader, accept, frames = stream([b'{"n":1}'])
    reader.feed(accept + frames[0] + frames[1][:-3])
    with pytest.raises(StreamTruncated):
        reader.finish()


def test_nothing_may_follow_the_end() -> None:
    reader, accept, sender = handshake()
    reader.feed(accept + sender.data(b"{}") + sender.end())
    with pytest.raises(LocalProtocolError):
        sender.data(b"{}")  # our sender refuses to go on past END
    sender.ended = False  # a provider that goes on regardless
    with pytest.raises(RemoteProtocolError, match="after the end"):
        reader.feed(sender.data(b"{}"))


def test_a_transcript_signed_by_another_key_is_refused() -> None:
    """A provider whose channel signs with a key other than the approved one: the accept is
    the approved key's, the transcript signature is not."""
    reader, accept, sender = handshake()
    from coincurve import PrivateKey

    sender.identity = PrivateKey(bytes.fromhex("44" * 32))
    reader.feed(accept + sender.data(b"{}"))
    with pytest.raises(TranscriptForged):
        reader.feed(sender.end())


def test_a_checkpoint_over_other_chunks_is_refused() -> None:
    """The provider signs a transcript that is not what the consumer received."""
    reader, accept, sender = handshake(every=2)
    first = sender.data(b'{"n":1}')
    sender.transcript.add(DATA, 99, b"a chunk the consumer never got")
    reader.feed(accept + first)
    with pytest.raises(TranscriptForged):
        reader.feed(sender.data(b'{"n":2}'))


def test_an_accept_signed_by_another_key_is_refused() -> None:
    """Someone else's key swapped in for the provider's: refused before any frame is read."""
    reader, accept, _ = handshake(provider_key=bytes.fromhex("44" * 32))
    with pytest.raises(RemoteProtocolError, match="not signed by"):
        reader.feed(accept)


def test_a_frame_sealed_for_another_session_is_a_forgery() -> None:
    reader, accept, _ = handshake()
    _, _, other = handshake(session=bytes.fromhex("55" * 32))
    reader.feed(accept)
    with pytest.raises(ChunkForged):
        reader.feed(other.data(b'{"n":1}'))


def test_a_failure_travels_as_the_live_wires_signed_error() -> None:
    reader, accept, sender = handshake()
    error = Response("r1", error=sign_error(RpcError("backend down", 502, 3), PROVIDER_KEY))
    events = reader.feed(accept + sender.failure(error.encode()) + sender.end())
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.response.error.message == "backend down"
    assert isinstance(events[-1], End)


def test_a_provider_that_ignores_the_offer_is_read_on_the_live_wire() -> None:
    reader, _, _ = handshake()
    chunk = sign(SessionPromptRes("0xabcd", 2), PROVIDER_KEY)
    wire = Response("r1", result=chunk).encode() * 2
    events = reader.feed(wire)
    assert [e.result.message for e in events] == ["0xabcd", "0xabcd"]
    assert reader.state is ReplyState.LIVE
    reader.finish()  # the live wire's end is the caller's to judge


def test_an_offer_is_encoded_only_when_made() -> None:
    """Live peers never see the new field: without an offer the bytes are the live wire's."""
    plain = SessionPromptReq(SESSION, "{}", 1)
    assert b"fastChannel" not in plain.encode()
    offered = SessionPromptReq(SESSION, "{}", 1, fast_channel=b"\1" * 32)
    parsed = SessionPromptReq.from_json(json.loads(offered.encode()))
    assert parsed.fast_channel == b"\1" * 32


@pytest.mark.parametrize("offer", [b"\1" * 31, bytes(32)], ids=["not-32-bytes", "low-order-point"])
def test_an_offer_that_is_no_usable_key_is_refused_before_anything_is_sent(offer: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="consumer's fast-channel key"):
        accept_offer(
            offer,
            identity_key=PROVIDER_KEY,
            consumer_key=public_key_of(CONSUMER_KEY),
            session_id=SESSION,
            request_id="r1",
            prompt_signature=b"\0" * 65,
        )
