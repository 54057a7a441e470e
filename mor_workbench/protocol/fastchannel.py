"""The fast channel: how our provider streams an answer to our consumer when both speak it.
Sans-IO, like the rest of the protocol: bytes in, frames or events out, states as data.

Capability. Our provider's pong `version` carries the token `fast-channel/1` (as it carries
`encrypted-prompts`); only then does our consumer put an offer in its session.prompt
(`SessionPromptReq.fast_channel`), and only an offer makes our provider answer on the channel.
A live peer never sees either and keeps the live wire; a provider that ignores the offer
answers on the live wire, which the consumer still reads (`Replies`).

Handshake, riding on the prompt and the first reply (no extra round trip), once per prompt:
- the consumer makes a fresh X25519 key pair and sends its public key `ce` in the prompt,
  which it signs with its session key (the key whose address opened the session on chain;
  the provider recovers it from that signature and checks the session's user, as for any
  prompt, and refuses a replayed prompt signature);
- the provider makes a fresh X25519 key pair and answers with a `SessionPromptRes` carrying
  its public key `pe`, signed by its registered key (the consumer checks it against the key
  the provider approved the session with, whose address is the bid's provider). Our provider
  sends this accept once its model took the prompt (the backend's success status), so an
  accepted prompt is one being answered: a refusal by the model comes instead of the accept,
  as the live wire's signed error, and a consumer may tell its own client at the accept
  (`serve` sends its HTTP status then).
Per prompt rather than per session: no state outlives an answer on either side (concurrent
prompts on one session, a restarted provider and failover need nothing kept), every answer
gets keys of its own, and the cost (one X25519 exchange and HKDF each side, one signature
and its check; `bench/per_chunk.py` measures it) rides inside the prompt's round trip. The
consumer's router makes a session's next key after the current prompt's first chunk (off the
time to first token), still one key per prompt.

Keys. `key = HKDF-SHA256(ikm = X25519(ce, pe), salt = session id, info = context)` where
`context` = "mor-fastchannel/1" ‖ session id ‖ len u32 ‖ request id ‖ the prompt's signature ‖
consumer key (65 bytes) ‖ provider key (65) ‖ ce ‖ pe. Only the provider sends frames (the
prompt already travels signed and ECIES-encrypted), so one key is derived, for the
provider → consumer direction; a second direction would take another HKDF label.

Frames. `length u32 ‖ kind u8 ‖ seq u64 ‖ AES-256-GCM(key, nonce = 0⁴ ‖ seq, data,
aad = kind ‖ seq ‖ session id ‖ request id)`, seq counting every frame from 0. Kinds: DATA (an
answer chunk's JSON), FAILURE (the live wire's signed error response, as sent), CHECKPOINT and
END (each a 65-byte signature). The transcript is SHA-256 over `context`, then for every DATA
and FAILURE frame `kind ‖ seq ‖ len u32 ‖ plaintext`; every `CHECKPOINT_EVERY` DATA frames,
and once at the end, the provider signs (secp256k1, recoverable, its registered key)
SHA-256("mor-fastchannel/1 checkpoint" or "… end" ‖ seq ‖ transcript) and sends it as a
CHECKPOINT, or as the END that closes the answer.

Why a chunk cannot be forged, replayed, dropped, reordered or truncated unnoticed:
- forged or altered: without `key` no frame authenticates (`ChunkForged`). Only the two
  ephemeral private keys give `key`; each ephemeral public key is signed by an identity bound
  on chain (the session's user, the bid's provider), so no one between them can swap one in.
- from another prompt or session: `key` binds the session id, the prompt's signature (unique:
  the provider refuses a replayed one) and both pairs of keys, so a frame sealed for anything
  else fails authentication (`ChunkForged`).
- replayed, dropped or reordered: the receiver takes sequence numbers strictly in order; a
  lower one is a replay (`ChunkReplayed`), a higher one a gap (`ChunkMissing`), and a frame
  whose header was changed to fit fails authentication (the nonce and aad carry seq). A
  nonce never repeats under a key: the key is new for every answer and seq only grows.
- truncated: an answer is complete only at END, a signature over the whole transcript; a
  connection that closes before it raises `StreamTruncated`, and a frame after it is refused.
- repudiated: CHECKPOINT and END signatures are the provider's registered key over the
  transcript of plaintexts, rooted in the prompt's signature: anyone holding the prompt, the
  two ephemeral public keys and the chunks can check what the provider answered to what, for
  receipts and disputes, without any secret key (`channel_context`, `Transcript`,
  `transcript_signer`). A signature by any other key, or over anything but what was
  received, raises `TranscriptForged`; the signed digest names its frame's seq and whether
  it is the END, so a checkpoint cannot pass for the end of the answer.
- downgraded: the capability rides in the pong's signed version, the offer in the consumer's
  signed prompt and the accept in the provider's signed reply, so no one between them can
  strip or add one; without the channel the answer is the live wire's, signed chunk by chunk.
- forward secrecy: the ephemeral private keys live for one answer, so a registered key
  leaked later does not open recorded answers (the live wire's ECIES to the consumer's
  static key does not have this).

Connection reuse (`keep-alive/1`, a second pong token). The live wire takes one request per TCP
connection; a provider that advertises `KEEP_ALIVE` keeps a connection open after the END of
a fast-channel answer, waiting up to `KEEP_ALIVE_IDLE_S` for that consumer's next request,
and never writes on a connection while it waits (it closes it without a word). The consumer
puts a connection back for its next prompt to that provider only when the answer reached END
with no byte after it (`Replies.reusable`), and takes it again only within
`KEEP_ALIVE_REUSE_S` (below the provider's wait, so an idle close rarely meets a request);
a request whose reused connection closes before any reply goes again on a new connection
(the provider answered nothing on it). Nothing above depends on the connection: every prompt
still has its own offer, keys, request id and signature, so reuse only saves the TCP connect
(about half a millisecond on a loopback, a round trip across a network).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from coincurve import PrivateKey, PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mor_workbench.errors import (
    ChunkForged,
    ChunkMissing,
    ChunkReplayed,
    LocalProtocolError,
    RemoteProtocolError,
    StreamTruncated,
    TranscriptForged,
)
from mor_workbench.protocol.framing import Decoder
from mor_workbench.protocol.messages import Response, SessionPromptRes
from mor_workbench.protocol.signing import verify

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_EVERY",
    "DATA",
    "END",
    "FAILURE",
    "FAST_CHANNEL",
    "KEEP_ALIVE",
    "KEEP_ALIVE_IDLE_S",
    "KEEP_ALIVE_REUSE_S",
    "Channel",
    "ChannelSender",
    "Checkpoint",
    "Data",
    "End",
    "Failure",
    "Frames",
    "Offer",
    "Replies",
    "ReplyState",
    "Transcript",
    "accept_offer",
    "channel_context",
    "transcript_signer",
]

FAST_CHANNEL = "fast-channel/1"
"""The pong `version` token of a provider that answers offers on the fast channel."""
CHECKPOINT_EVERY = 128
"""DATA frames between two signed checkpoints: a signature and its check cost 40-170 µs
(idle to loaded machine), under 1.5 µs a chunk on each side; a cut answer stays provable up
to at most this many chunks before the cut."""

KEEP_ALIVE = "keep-alive/1"
"""The pong `version` token of a provider that keeps a connection open after a fast-channel
answer's END for the consumer's next request (see the module docstring)."""
KEEP_ALIVE_IDLE_S = 30.0
"""How long such a provider waits for the next request on an idle connection (s)."""
KEEP_ALIVE_REUSE_S = 20.0
"""How long a consumer keeps an idle connection for its next request (s): well under
`KEEP_ALIVE_IDLE_S`."""

_DOMAIN = b"mor-fastchannel/1"
_HEADER = struct.Struct(">IBQ")  # length of what follows, kind, seq
_HEAD = struct.Struct(">BQ")
_HASHED = struct.Struct(">BQI")  # kind, seq, plaintext length: what the transcript takes
_SIGNED = struct.Struct(">Q")
DATA, FAILURE, CHECKPOINT, END = 1, 2, 3, 4
"""Frame kinds (see the module's docstring)."""
_TAG = 16
_PUBLIC_KEY = 32  # X25519


def channel_context(
    session_id: bytes,
    request_id: str,
    prompt_signature: bytes,
    consumer_key: bytes,
    provider_key: bytes,
    consumer_ephemeral: bytes,
    provider_ephemeral: bytes,
) -> bytes:
    """The bytes one answer's channel is bound to, in order: "mor-fastchannel/1", the session
    id, the request id (length-prefixed), the prompt's signature, the consumer's and the
    provider's secp256k1 keys (65 bytes each) and the consumer's and provider's ephemeral
    X25519 keys: the HKDF info and the transcript's root."""
    rid = request_id.encode()
    return b"".join(
        (
            _DOMAIN,
            session_id,
            len(rid).to_bytes(4, "big"),
            rid,
            prompt_signature,
            consumer_key,
            provider_key,
            consumer_ephemeral,
            provider_ephemeral,
        )
    )


@dataclass(frozen=True)
class Channel:
    """What both ends agree on for one answer: the key, the transcript's root (`context`)
    and the frames' associated data suffix (session id ‖ request id)."""

    key: bytes
    context: bytes
    aad: bytes

    @classmethod
    def derive(
        cls,
        shared: bytes,
        session_id: bytes,
        request_id: str,
        prompt_signature: bytes,
        consumer_key: bytes,
        provider_key: bytes,
        consumer_ephemeral: bytes,
        provider_ephemeral: bytes,
    ) -> Channel:
        """The channel of one prompt from the X25519 secret `shared` and what binds it (see
        the module's docstring); keys are 65-byte uncompressed secp256k1 public keys."""
        context = channel_context(
            session_id,
            request_id,
            prompt_signature,
            consumer_key,
            provider_key,
            consumer_ephemeral,
            provider_ephemeral,
        )
        info = context + b" provider->consumer"
        key = HKDF(hashes.SHA256(), 32, salt=session_id, info=info).derive(shared)
        return cls(key, context, session_id + request_id.encode())


class Transcript:
    """SHA-256 over a channel's context, then `kind ‖ seq ‖ len ‖ plaintext` of every DATA
    and FAILURE frame: what CHECKPOINT and END signatures cover. Both ends keep one, and
    anyone holding the context's parts and the chunks can rebuild it to check a signature
    (`transcript_signer`)."""

    __slots__ = ("_hash",)

    def __init__(self, context: bytes) -> None:
        self._hash = hashlib.sha256(context)

    def add(self, kind: int, seq: int, plaintext: bytes) -> None:
        """Take frame `seq` (DATA or FAILURE) with its plaintext."""
        self._hash.update(_HASHED.pack(kind, seq, len(plaintext)) + plaintext)

    def digest(self) -> bytes:
        return self._hash.digest()


def _signed_digest(final: bool, seq: int, transcript: bytes) -> bytes:
    label = b" end" if final else b" checkpoint"
    return hashlib.sha256(_DOMAIN + label + _SIGNED.pack(seq) + transcript).digest()


def transcript_signer(seq: int, transcript: bytes, signature: bytes, *, final: bool) -> bytes:
    """The 65-byte public key that signed the transcript digest `transcript` in frame `seq`,
    the END frame if `final`, else a CHECKPOINT (as `Checkpoint` and `End` events carry them):
    what a receipt or dispute checks against the provider's registered key.
    `TranscriptForged` when the signature recovers to no key."""
    if len(signature) != 65 or signature[64] not in (0, 1):
        raise TranscriptForged("a transcript signature must be 65 bytes with v in {0, 1}")
    digest = _signed_digest(final, seq, transcript)
    try:
        key = PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except Exception:
        raise TranscriptForged("the transcript signature recovers to no key") from None
    return key.format(compressed=False)


class Frames(bytes):
    """Sealed frames, written to the connection as they are (the provider's transports call
    `encode()` on what the handler sends, as on a `Response`)."""

    __slots__ = ()

    def encode(self) -> bytes:
        return bytes(self)


@dataclass
class ChannelSender:
    """The provider's end: seals chunks into frames, signs the transcript every
    `CHECKPOINT_EVERY` chunks and at the end. `identity` is the provider's registered key."""

    channel: Channel
    identity: PrivateKey
    checkpoint_every: int = CHECKPOINT_EVERY
    seq: int = 0
    since_checkpoint: int = 0
    ended: bool = False
    _aead: AESGCM = field(init=False, repr=False)
    transcript: Transcript = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._aead = AESGCM(self.channel.key)
        self.transcript = Transcript(self.channel.context)

    def _seal(self, kind: int, plaintext: bytes) -> bytes:
        if self.ended:
            raise LocalProtocolError("the fast channel's answer has already ended")
        seq = self.seq
        self.seq = seq + 1
        aad = _HEAD.pack(kind, seq) + self.channel.aad
        sealed = self._aead.encrypt(seq.to_bytes(12, "big"), plaintext, aad)
        return _HEADER.pack(len(sealed) + 9, kind, seq) + sealed

    def _sign(self, kind: int) -> bytes:
        digest = _signed_digest(kind == END, self.seq, self.transcript.digest())
        frame = self._seal(kind, self.identity.sign_recoverable(digest, hasher=None))
        self.since_checkpoint = 0
        return frame

    def _hashed(self, kind: int, plaintext: bytes) -> bytes:
        seq = self.seq
        frame = self._seal(kind, plaintext)
        self.transcript.add(kind, seq, plaintext)
        return frame

    def data(self, chunk: bytes) -> Frames:
        """The frame of one answer chunk (its JSON), followed by a signed CHECKPOINT when one
        is due."""
        frame = self._hashed(DATA, chunk)
        self.since_checkpoint += 1
        if self.since_checkpoint >= self.checkpoint_every:
            frame += self._sign(CHECKPOINT)
        return Frames(frame)

    def failure(self, response: bytes) -> Frames:
        """The frame of a failure after the accept: the live wire's signed error response
        (`Response.encode()`), as it would have gone on the live wire."""
        return Frames(self._hashed(FAILURE, response))

    def end(self) -> Frames:
        """The END frame: the provider's signature over the whole transcript; nothing may
        follow it."""
        frame = self._sign(END)
        self.ended = True
        return Frames(frame)


@dataclass(frozen=True)
class Offer:
    """The consumer's half of the handshake: a fresh X25519 key for one prompt."""

    private: X25519PrivateKey

    @classmethod
    def new(cls) -> Offer:
        return cls(X25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        """The 32 bytes to send in `SessionPromptReq.fast_channel`."""
        return self.private.public_key().public_bytes_raw()


def _peer_key(raw: bytes, who: str) -> X25519PublicKey:
    if len(raw) != _PUBLIC_KEY:
        raise RemoteProtocolError(f"the {who}'s fast-channel key must be {_PUBLIC_KEY} bytes")
    return X25519PublicKey.from_public_bytes(raw)


def _shared(private: X25519PrivateKey, public: X25519PublicKey, who: str) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # a low-order point: the all-zero secret
        raise RemoteProtocolError(f"the {who}'s fast-channel key is not a usable key") from None


def accept_offer(
    offer: bytes,
    *,
    identity_key: PrivateKey | bytes,
    consumer_key: bytes,
    session_id: bytes,
    request_id: str,
    prompt_signature: bytes,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> tuple[bytes, ChannelSender]:
    """The provider's half of the handshake for a verified prompt: (its ephemeral public key,
    to send signed in the accepting `SessionPromptRes`, and the sender of the answer).
    `identity_key` is the provider's private key (a key object or its 32 bytes),
    `consumer_key` the 65-byte key that signed the prompt. `RemoteProtocolError` when the
    offer is not an X25519 public key."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    identity = identity_key if isinstance(identity_key, PrivateKey) else PrivateKey(identity_key)
    channel = Channel.derive(
        _shared(private, _peer_key(offer, "consumer"), "consumer"),
        session_id,
        request_id,
        prompt_signature,
        consumer_key,
        identity.public_key.format(compressed=False),
        offer,
        public,
    )
    return public, ChannelSender(channel, identity, checkpoint_every)


# ----- the consumer's end -----


@dataclass(frozen=True)
class Data:
    """One answer chunk (its JSON bytes)."""

    chunk: bytes


@dataclass(frozen=True)
class Failure:
    """The provider's signed error response (live-wire bytes) sent inside the channel."""

    response: Response


@dataclass(frozen=True)
class Checkpoint:
    """The provider's `signature` over the `transcript` digest so far, at frame `seq` (checked
    already; kept by whoever wants proof of a long answer's part)."""

    seq: int
    transcript: bytes
    signature: bytes


@dataclass(frozen=True)
class End(Checkpoint):
    """The answer is complete: the provider's `signature` over the whole `transcript`."""


Event = Response | Data | Failure | Checkpoint | End


class ReplyState(Enum):
    """Where a consumer's reading of one answer stands."""

    FIRST = "awaiting the first reply"  # the accept, a live-wire reply or an error
    LIVE = "live wire"  # the provider answered without the channel
    CHANNEL = "fast channel"  # frames, until END
    ENDED = "ended"  # END received; nothing may follow


@dataclass
class Replies:
    """The consumer's reader for the replies to a prompt that offered the channel (fed to
    `mor_workbench.router.transport.call` as its `replies`): `feed(bytes)` returns events.

    Until the first reply it reads JSON: a live-wire `Response` (a provider that ignored the
    offer, or an error: the state turns LIVE and every later reply is a `Response`), or the
    accept, which must be signed by `provider_key` (the 65-byte key the session was approved
    with) and switches to frames (state CHANNEL: `Data`, `Failure`, `Checkpoint` and last
    `End`). The accept itself yields no event: the wait for the first chunk stays the wait
    for the first reply (the caller's first-reply timeout, not its idle one); `on_accept`,
    when given, is called as it is read (our provider accepts once its model took the prompt).
    Frames are checked as the module docstring says; call `finish()` once the connection has
    closed. Raises `ChunkForged`, `ChunkReplayed`, `ChunkMissing`, `TranscriptForged`,
    `StreamTruncated` or `RemoteProtocolError`; the reader is unusable afterwards."""

    offer: Offer
    session_id: bytes
    request_id: str
    prompt_signature: bytes
    consumer_key: bytes
    provider_key: bytes
    max_message: int
    on_accept: Callable[[], None] | None = None
    state: ReplyState = ReplyState.FIRST
    seq: int = 0
    _json: Decoder = field(init=False, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _aead: AESGCM | None = field(default=None, repr=False)
    _aad: bytes = field(default=b"", repr=False)
    _transcript: Transcript | None = field(default=None, repr=False)
    _failed: Exception | None = field(default=None, repr=False)
    _newline_due: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._json = Decoder(self.max_message)

    @property
    def reusable(self) -> bool:
        """Whether the answer reached its END with nothing after it, so that its connection
        may carry the next request (to a provider that keeps connections alive)."""
        return (
            self.state is ReplyState.ENDED
            and not self._buffer
            and not self._newline_due
            and self._failed is None
        )

    def feed(self, data: bytes) -> list[Event]:
        if self._failed is not None:
            raise self._failed
        try:
            return self._feed(data)
        except RemoteProtocolError as exc:
            self._failed = exc
            raise

    def _feed(self, data: bytes) -> list[Event]:
        if self.state is ReplyState.LIVE:
            return [self._response(obj) for obj in self._json.feed(data)]
        if self.state is not ReplyState.FIRST:
            return self._frames(data)
        # The first reply is one JSON line; frames may follow it in the same bytes.
        line_end = data.find(b"\n")
        head, rest = (data, b"") if line_end < 0 else (data[: line_end + 1], data[line_end + 1 :])
        objects = self._json.feed(head)
        if not objects:
            return []
        first = self._response(objects[0])
        result = first.result
        if not isinstance(result, SessionPromptRes) or not result.fast_channel:
            self.state = ReplyState.LIVE
            return [first, *(self._response(o) for o in objects[1:] + self._json.feed(rest))]
        verify(result, public_key=self.provider_key)
        self._open(result.fast_channel)
        if self.on_accept is not None:
            self.on_accept()
        # the accept's line ends with a newline; when the bytes broke just before it, the
        # newline opens the next bytes, ahead of the first frame
        self._newline_due = line_end < 0
        return self._frames(rest)

    def _response(self, obj: Any) -> Response:
        return Response.from_json(obj, SessionPromptRes)

    def _open(self, provider_ephemeral: bytes) -> None:
        peer = _peer_key(provider_ephemeral, "provider")
        channel = Channel.derive(
            _shared(self.offer.private, peer, "provider"),
            self.session_id,
            self.request_id,
            self.prompt_signature,
            self.consumer_key,
            self.provider_key,
            self.offer.public_key,
            provider_ephemeral,
        )
        self._aead = AESGCM(channel.key)
        self._aad = channel.aad
        self._transcript = Transcript(channel.context)
        self.state = ReplyState.CHANNEL

    def _frames(self, data: bytes) -> list[Event]:
        if self._newline_due and data:
            self._newline_due = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._buffer:  # the start of a frame came with the bytes before
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        events: list[Event] = []
        pos, size = 0, len(data)
        while size - pos >= 13:
            length, kind, seq = _HEADER.unpack_from(data, pos)
            if length > self.max_message:
                raise RemoteProtocolError(f"fast-channel frame longer than {self.max_message} B")
            end = pos + 4 + length
            if end > size:
                break
            if length < 9 + _TAG:
                raise ChunkForged("a fast-channel frame too short to be sealed")
            events.append(self._open_frame(kind, seq, data[pos + 13 : end]))
            pos = end
        if pos < size:
            self._buffer += data[pos:]
        return events

    def _open_frame(self, kind: int, seq: int, sealed: bytes) -> Event:
        if self.state is ReplyState.ENDED:
            raise RemoteProtocolError("the provider sent a fast-channel frame after the end")
        if seq != self.seq:
            if seq < self.seq:
                raise ChunkReplayed(f"fast-channel frame {seq} arrived again")
            raise ChunkMissing(
                f"fast-channel frame {seq} arrived where {self.seq} was due: "
                "a frame was dropped or the frames were reordered"
            )
        assert self._aead is not None
        try:
            aad = _HEAD.pack(kind, seq) + self._aad
            plaintext = self._aead.decrypt(seq.to_bytes(12, "big"), sealed, aad)
        except InvalidTag:
            raise ChunkForged(
                f"fast-channel frame {seq} failed authentication: altered in transit, or "
                "sealed for another session or request"
            ) from None
        self.seq = seq + 1
        assert self._transcript is not None
        if kind in (DATA, FAILURE):
            self._transcript.add(kind, seq, plaintext)
            if kind == DATA:
                return Data(plaintext)
            return Failure(self._failure(plaintext))
        if kind in (CHECKPOINT, END):
            transcript = self._transcript.digest()
            signer = transcript_signer(seq, transcript, plaintext, final=kind == END)
            if signer != self.provider_key:
                raise TranscriptForged(
                    f"fast-channel frame {seq}: the transcript is not signed by the provider's "
                    "key (or not over what was received)"
                )
            if kind == CHECKPOINT:
                return Checkpoint(seq, transcript, plaintext)
            self.state = ReplyState.ENDED
            return End(seq, transcript, plaintext)
        raise RemoteProtocolError(f"fast-channel frame {seq} is of unknown kind {kind}")

    def _failure(self, plaintext: bytes) -> Response:
        objects = Decoder(self.max_message).feed(plaintext)
        if len(objects) != 1:
            raise RemoteProtocolError("a fast-channel failure must carry one error response")
        response = self._response(objects[0])
        if response.error is None:
            raise RemoteProtocolError("a fast-channel failure must carry an error")
        return response

    def finish(self) -> None:
        """The connection has closed: raise `StreamTruncated` unless the answer ended (or
        came on the live wire, whose end the caller judges)."""
        if self.state is ReplyState.CHANNEL:
            raise StreamTruncated(
                "the provider's fast-channel answer ended without its signed transcript "
                "(the connection closed early or the answer was cut off)"
            )
