"""Benchmark: CPU µs per streamed chunk on each side of a wire, beside the floor of its primitives.

Provider side: a backend's chunk (a 258-byte OpenAI delta, as the backend yields it) to the
bytes written on the socket; consumer side: those bytes, as one read, to the verified,
decrypted payload. Each runs the code the live path runs: the provider handler's
`ChunkSealer`, the consumer's `ChunkLines` (what `prompt()` gives the transport to read the
replies) and `ChunkReader` (what `prompt()` does per chunk), without sockets or an event loop.
Our provider seals an answer under one ephemeral ECIES key; the Go router draws one per chunk,
so that wire is measured too (what our consumer reads from a live provider). The floors are the
primitives alone, in the same order: provider = [ephemeral key, ECDH, KDF,] AES-CTR, HMAC,
keccak, signature; consumer = [ECDH, KDF,] HMAC, AES-CTR, keccak, verification.

Times are this thread's CPU time (time.thread_time_ns), the median over --iterations chunks
of one stream, the rows measured in interleaved batches, so other processes on a shared
machine count less than in wall time and touch every row alike; compare rows of one run.

    .venv/bin/python bench/per_chunk.py [--iterations 3000] [--json]

The fast channel (`protocol.fastchannel`, our own peers) is measured the same way, its chunk
JSON-encoded and decoded as the live wire's is (`payload_json`), with its once-per-prompt
handshake beside it.

Another wire is one more entry in `WIRES`: a name and a function that opens one stream of it,
returning its (encode, decode) pair (decode may keep state, as replay checks do);
`provider_side(encode, n)` and `consumer_side(decode, sent)` time one side of any pair.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact
from coincurve.utils import get_valid_secret
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mor_workbench.protocol import (
    Response,
    SessionPromptReq,
    SessionPromptRes,
    ecies_encrypt,
    sign,
)
from mor_workbench.protocol.fastchannel import Data, Offer, Replies, accept_offer
from mor_workbench.protocol.live_chunks import ChunkLines, ChunkSealer, SealedChunk
from mor_workbench.protocol.payload_json import compact
from mor_workbench.protocol.signing import keccak
from mor_workbench.router.peer import OUTPUT_BYTES_UNBOUNDED, ChunkReader, parse_chunk
from mor_workbench.router.transport import CONSUMER_MESSAGE_LIMIT

Encode = Callable[[Any], bytes]
"""Provider side: a backend's payload (a JSON value) to the bytes sent for it."""
Decode = Callable[[bytes], Any]
"""Consumer side: the bytes of one chunk to its checked payload."""
OpenStream = Callable[[], tuple[Encode, Decode]]

DELTA: dict[str, Any] = {
    "id": "chatcmpl-8a4f2c1e9b7d",
    "object": "chat.completion.chunk",
    "created": 1764500000,
    "model": "llama-3.3-70b",
    "system_fingerprint": "fp_0123456789",
    "choices": [
        {
            "index": 0,
            "delta": {"content": " the quick brown fox jumps up"},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
"""A streamed OpenAI delta, 258 bytes as compact JSON."""


def live_wire(per_chunk_ephemeral: bool = False) -> tuple[Encode, Decode]:
    """One stream of the live-compatible MOR-RPC wire: fresh provider and consumer keys. Our
    provider seals an answer's chunks under one ephemeral ECIES key; with
    `per_chunk_ephemeral`, each chunk draws its own, as the Go reference router does (what our
    consumer reads from a live provider)."""
    provider, consumer = PrivateKey(), PrivateKey()
    consumer_key = consumer.public_key.format(compressed=False)
    sealer = ChunkSealer("a1b2c3d4", provider, consumer_key)
    lines = ChunkLines("a1b2c3d4", CONSUMER_MESSAGE_LIMIT)
    reader = ChunkReader(
        consumer, provider.public_key.format(compressed=False), OUTPUT_BYTES_UNBOUNDED
    )

    def encode(payload: Any) -> bytes:
        now = time.time_ns() // 1_000_000
        if per_chunk_ephemeral:
            box = ecies_encrypt(consumer_key, json.dumps(payload, separators=(",", ":")).encode())
            return sealer.envelope(box, now).encode()
        return sealer.seal(payload, now).encode()

    def decode(data: bytes) -> Any:
        (item,) = lines.feed(data)
        assert type(item) is SealedChunk, "the chunk left the one-line path"
        return reader.read_sealed(item)

    return encode, decode


def go_provider_wire() -> tuple[Encode, Decode]:
    """The live wire from a provider that draws an ephemeral key per chunk (the Go router)."""
    return live_wire(per_chunk_ephemeral=True)


def fast_channel_wire() -> tuple[Encode, Decode]:
    """One answer on the fast channel between our own peers (`protocol.fastchannel`): a real
    handshake, then each payload JSON-encoded and sealed (AES-GCM, transcript hash, a signed
    checkpoint every `CHECKPOINT_EVERY` chunks, amortized in), read back and JSON-decoded."""
    provider, consumer = PrivateKey(), PrivateKey()
    sender, reader = _fast_channel_handshake(provider, consumer, os.urandom(32), "a1b2c3d4")

    def encode(payload: Any) -> bytes:
        return sender.data(compact(payload))

    def decode(data: bytes) -> Any:
        (chunk,) = [e.chunk for e in reader.feed(data) if type(e) is Data]
        return parse_chunk(chunk)

    return encode, decode


def _fast_channel_handshake(
    provider: PrivateKey, consumer: PrivateKey, session: bytes, request: str
) -> tuple[Any, Replies]:
    """The provider's sender and the consumer's reader of one prompt, after the handshake
    (the consumer has read the signed accept)."""
    offer = Offer.new()
    prompt = sign(SessionPromptReq(session, "{}", 1, fast_channel=offer.public_key), consumer)
    consumer_key = consumer.public_key.format(compressed=False)
    public, sender = accept_offer(
        offer.public_key,
        identity_key=provider,
        consumer_key=consumer_key,
        session_id=session,
        request_id=request,
        prompt_signature=prompt.signature,
    )
    accept = sign(SessionPromptRes("", 2, fast_channel=public), provider)
    reader = Replies(
        offer,
        session,
        request,
        prompt.signature,
        consumer_key,
        provider.public_key.format(compressed=False),
        max_message=4 << 20,
    )
    reader.feed(Response(request, result=accept).encode())
    return sender, reader


def handshake_us(prompts: int = 200) -> float:
    """Wall µs per prompt that the fast channel's handshake adds, both sides together (fresh
    X25519 keys, the signed accept, ECDH and HKDF on each side), mean of `prompts`."""
    provider, consumer = PrivateKey(), PrivateKey()
    started = time.perf_counter_ns()
    for _ in range(prompts):
        _fast_channel_handshake(provider, consumer, os.urandom(32), "a1b2c3d4")
    return (time.perf_counter_ns() - started) / prompts / 1000


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(data)


def floor_wire(per_chunk_ephemeral: bool = True) -> tuple[Encode, Decode]:
    """The live wire's primitives alone, in its order, on a chunk of the same size: no
    framing, JSON or Python around them beyond the calls (decode gives DELTA back when the box
    opened to its bytes and the signature verified). With `per_chunk_ephemeral` each chunk
    costs an ephemeral key and an ECDH on each side (the Go router's way); without, the
    answer's one ephemeral key is drawn and agreed on once, outside the timing (ours)."""
    provider, consumer = PrivateKey(), PrivateKey()
    consumer_key = PublicKey(consumer.public_key.format(compressed=False))
    provider_key = PublicKey(provider.public_key.format(compressed=False))
    plaintext = json.dumps(DELTA, separators=(",", ":")).encode()
    unsigned = b'{"message":"0x' + b"ab" * (len(plaintext) + 113) + b'","timestamp":1}'
    answer_secret = get_valid_secret()
    answer_ephemeral = PublicKey.from_valid_secret(answer_secret).format(compressed=False)

    def agree(ephemeral_secret: bytes) -> bytes:
        z = consumer_key.multiply(ephemeral_secret).format(compressed=False)[1:33]
        return hashlib.sha256(b"\0\0\0\1" + z).digest()

    answer_k = agree(answer_secret)

    def encode(_: Any) -> bytes:
        if per_chunk_ephemeral:
            secret = get_valid_secret()
            ephemeral = PublicKey.from_valid_secret(secret).format(compressed=False)
            k = agree(secret)
        else:
            ephemeral, k = answer_ephemeral, answer_k
        iv = os.urandom(16)
        em = iv + _aes_ctr(k[:16], iv, plaintext)
        box = ephemeral + em + hmac.digest(hashlib.sha256(k[16:]).digest(), em, "sha256")
        return box + provider.sign_recoverable(keccak(unsigned), hasher=None)

    def decode(data: bytes) -> Any:
        box, signature = data[:-65], data[-65:]
        if per_chunk_ephemeral:
            z = PublicKey(box[:65]).multiply(consumer.secret).format(compressed=False)[1:33]
            k = hashlib.sha256(b"\0\0\0\1" + z).digest()
        else:
            k = answer_k
        em, tag = box[65:-32], box[-32:]
        mac = hmac.digest(hashlib.sha256(k[16:]).digest(), em, "sha256")
        der = cdata_to_der(deserialize_compact(signature[:64]))
        verified = provider_key.verify(der, keccak(unsigned), hasher=None)
        opened = _aes_ctr(k[:16], em[:16], em[16:])
        return DELTA if hmac.compare_digest(mac, tag) and verified and opened == plaintext else None

    return encode, decode


def answer_key_floor_wire() -> tuple[Encode, Decode]:
    """The floor with one ephemeral key per answer (see `floor_wire`)."""
    return floor_wire(per_chunk_ephemeral=False)


def provider_side(encode: Encode, chunks: int) -> tuple[list[int], list[bytes]]:
    """CPU ns of each of `chunks` calls of `encode` on DELTA, and the bytes each sent."""
    times, sent = [], []
    for _ in range(chunks):
        started = time.thread_time_ns()
        data = encode(DELTA)
        times.append(time.thread_time_ns() - started)
        sent.append(data)
    return times, sent


def consumer_side(decode: Decode, sent: list[bytes]) -> list[int]:
    """CPU ns of `decode` on each of `sent`, in order; AssertionError when one does not give
    DELTA back."""
    times = []
    for data in sent:
        started = time.thread_time_ns()
        payload = decode(data)
        times.append(time.thread_time_ns() - started)
        assert payload == DELTA, "the consumer did not get the payload back"
    return times


def measure(streams: dict[str, OpenStream], iterations: int, batch: int = 50) -> dict[str, Any]:
    """Median CPU µs per chunk on each side, by stream name: one stream each of
    `iterations` chunks, measured in interleaved batches (so a shift in the machine's load
    touches every row alike)."""
    opened = {name: open_stream() for name, open_stream in streams.items()}
    sent: dict[str, list[bytes]] = {name: [] for name in opened}
    provider: dict[str, list[int]] = {name: [] for name in opened}
    consumer: dict[str, list[int]] = {name: [] for name in opened}
    for first in range(0, iterations, batch):
        for name, (encode, _) in opened.items():
            times, data = provider_side(encode, min(batch, iterations - first))
            provider[name] += times
            sent[name] += data
    for first in range(0, iterations, batch):
        for name, (_, decode) in opened.items():
            consumer[name] += consumer_side(decode, sent[name][first : first + batch])
    return {
        name: {
            "provider_us": statistics.median(provider[name]) / 1000,
            "consumer_us": statistics.median(consumer[name]) / 1000,
            "wire_bytes": len(sent[name][0]),
        }
        for name in opened
    }


WIRES: dict[str, OpenStream] = {
    "live wire, ours": live_wire,
    "floor, a key per answer": answer_key_floor_wire,
    "live wire, Go provider": go_provider_wire,
    "floor, a key per chunk": floor_wire,
    "fast channel (our peers)": fast_channel_wire,
}
"""The streams measured, by name (another wire is one more entry)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="chunks per side")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    measure(WIRES, 100)  # warm up: imports, caches, allocator
    rows = measure(WIRES, args.iterations)
    handshake = handshake_us()
    payload_bytes = len(json.dumps(DELTA, separators=(",", ":")))
    if args.json:
        print(
            json.dumps(
                {
                    "payload_bytes": payload_bytes,
                    "iterations": args.iterations,
                    "rows": rows,
                    "fast_channel_handshake_us": handshake,
                }
            )
        )
        return
    print(f"per chunk ({payload_bytes}-byte delta), CPU µs, median of {args.iterations}")
    print(f"{'':32s}{'provider':>10s}{'consumer':>10s}")
    for name, row in rows.items():
        print(f"{name:32s}{row['provider_us']:10.1f}{row['consumer_us']:10.1f}")
    print(f"fast channel handshake, once per prompt, both sides: {handshake:.0f} µs")


if __name__ == "__main__":
    main()
