"""Benchmark: per-chunk cost of the fast channel on each side (issue 16 §2), in µs.

The provider side seals one chunk (`ChannelSender.data`: AES-GCM, transcript hash, framing,
and a signed checkpoint every `CHECKPOINT_EVERY` chunks, so its cost is amortized in); the
consumer side reads the bytes (`Replies.feed`: framing, sequence check, AES-GCM open,
transcript hash, a checkpoint's signature checked against the provider's key). Both run the
real module on a 258-byte OpenAI delta, the chunk the issue measures the live wire with.
"with JSON" adds what each side also does per chunk on either wire: the provider's
`json.dumps` of the backend's chunk and the consumer's `json.loads` of it.

Each figure is the best of `repeat` runs of `chunks` chunks (the least disturbed by other
processes). `bench/per_chunk.py` measures the live wire the same way; the integrator prints
the two side by side.

    .venv/bin/python bench/fast_channel.py [--chunks 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time

from mor_workbench.protocol import Response, SessionPromptReq, SessionPromptRes, sign
from mor_workbench.protocol.fastchannel import Data, Offer, Replies, accept_offer
from mor_workbench.protocol.signing import public_key_of

PROVIDER_KEY = bytes.fromhex("11" * 32)
CONSUMER_KEY = bytes.fromhex("22" * 32)
SESSION = bytes.fromhex("33" * 32)
DELTA = {
    "id": "chatcmpl-5f8a0c1e2b3d4f6a7b8c9d0e1f2a3b4c",
    "object": "chat.completion.chunk",
    "created": 1764460800,
    "model": "llama-3.3-70b",
    "system_fingerprint": "fp_mor",
    "choices": [{"index": 0, "delta": {"content": " channel"}, "finish_reason": None}],
}
CHUNK = json.dumps(DELTA, separators=(",", ":")).encode().ljust(258)  # the 258 bytes


def _pair(chunks: int) -> tuple[object, Replies, bytes]:
    """A provider's sender and a consumer's reader for one prompt (real handshake), and the
    accept line the reader sees first."""
    offer = Offer.new()
    prompt = sign(SessionPromptReq(SESSION, "{}", 1, fast_channel=offer.public_key), CONSUMER_KEY)
    public, sender = accept_offer(
        offer.public_key,
        identity_key=PROVIDER_KEY,
        consumer_key=public_key_of(CONSUMER_KEY),
        session_id=SESSION,
        request_id="bench",
        prompt_signature=prompt.signature,
    )
    accept = sign(SessionPromptRes("", 2, fast_channel=public), PROVIDER_KEY)
    reader = Replies(
        offer,
        SESSION,
        "bench",
        prompt.signature,
        public_key_of(CONSUMER_KEY),
        public_key_of(PROVIDER_KEY),
        max_message=4 << 20,
    )
    return sender, reader, Response("bench", result=accept).encode()


def _run(chunks: int, with_json: bool) -> tuple[float, float]:
    sender, reader, accept = _pair(chunks)
    reader.feed(accept)
    seal = sender.data  # type: ignore[attr-defined]
    frames = []
    start = time.perf_counter_ns()
    if with_json:
        for _ in range(chunks):
            frames.append(seal(json.dumps(DELTA, separators=(",", ":")).encode()))
    else:
        for _ in range(chunks):
            frames.append(seal(CHUNK))
    provider = time.perf_counter_ns() - start
    feed = reader.feed
    received = 0
    start = time.perf_counter_ns()
    if with_json:
        for frame in frames:
            for event in feed(frame):
                if type(event) is Data:
                    json.loads(event.chunk)
                    received += 1
    else:
        for frame in frames:
            for event in feed(frame):
                received += type(event) is Data
    consumer = time.perf_counter_ns() - start
    assert received == chunks
    return provider / chunks / 1000, consumer / chunks / 1000


def handshake_us(prompts: int = 200, repeat: int = 5) -> dict[str, float]:
    """µs per prompt that the handshake adds, best of `repeat` runs of `prompts`: keys
    provider_us (a fresh X25519 key, ECDH, HKDF and the signed accept) and consumer_us (a
    fresh X25519 key, then the accept's signature checked, ECDH and HKDF)."""
    best = {"provider_us": float("inf"), "consumer_us": float("inf")}
    for _ in range(repeat):
        spent = {"provider_us": 0, "consumer_us": 0}
        for _ in range(prompts):
            start = time.perf_counter_ns()
            offer = Offer.new()
            spent["consumer_us"] += time.perf_counter_ns() - start
            prompt = sign(
                SessionPromptReq(SESSION, "{}", 1, fast_channel=offer.public_key), CONSUMER_KEY
            )
            start = time.perf_counter_ns()
            public, _ = accept_offer(
                offer.public_key,
                identity_key=PROVIDER_KEY,
                consumer_key=public_key_of(CONSUMER_KEY),
                session_id=SESSION,
                request_id="bench",
                prompt_signature=prompt.signature,
            )
            accept = sign(SessionPromptRes("", 2, fast_channel=public), PROVIDER_KEY)
            line = Response("bench", result=accept).encode()
            spent["provider_us"] += time.perf_counter_ns() - start
            reader = Replies(
                offer,
                SESSION,
                "bench",
                prompt.signature,
                public_key_of(CONSUMER_KEY),
                public_key_of(PROVIDER_KEY),
                max_message=4 << 20,
            )
            start = time.perf_counter_ns()
            reader.feed(line)
            spent["consumer_us"] += time.perf_counter_ns() - start
        for side, ns in spent.items():
            best[side] = min(best[side], ns / prompts / 1000)
    return best


def per_chunk_us(chunks: int = 20_000, repeat: int = 5) -> dict[str, float]:
    """µs per chunk on each side of the fast channel, best of `repeat` runs of `chunks`:
    keys provider_us, consumer_us (the channel alone) and provider_json_us,
    consumer_json_us (with the chunk's JSON encoding and decoding)."""
    bare = [_run(chunks, with_json=False) for _ in range(repeat)]
    with_json = [_run(chunks, with_json=True) for _ in range(repeat)]
    return {
        "provider_us": min(p for p, _ in bare),
        "consumer_us": min(c for _, c in bare),
        "provider_json_us": min(p for p, _ in with_json),
        "consumer_json_us": min(c for _, c in with_json),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = per_chunk_us(args.chunks, args.repeat)
    handshake = handshake_us(repeat=args.repeat)
    print(f"fast channel, {len(CHUNK)}-byte chunk, best of {args.repeat} x {args.chunks:,}:")
    print(
        f"  provider {result['provider_us']:6.1f} µs/chunk   "
        f"(with json.dumps {result['provider_json_us']:6.1f})"
    )
    print(
        f"  consumer {result['consumer_us']:6.1f} µs/chunk   "
        f"(with json.loads {result['consumer_json_us']:6.1f})"
    )
    print(
        f"  handshake, once per prompt: provider {handshake['provider_us']:.0f} µs, "
        f"consumer {handshake['consumer_us']:.0f} µs"
    )


if __name__ == "__main__":
    main()
