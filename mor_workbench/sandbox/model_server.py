"""A simulated LLM server speaking the OpenAI HTTP API, for the sandbox and benchmarks.

The only stand-in in the project (no weights here): `/v1/models` and `/v1/chat/completions`
(streamed as SSE or not, usage, stop, max_tokens, tool calls, JSON response formats), with
deterministic text and a per-server latency profile (TTFT, tokens per second, jitter, errors,
stalls, dropped connections). Anything that works against it works against vLLM, llama.cpp,
Ollama or OpenAI, because it is driven by the same clients.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["PROFILES", "LatencyProfile", "ModelServer"]

_TEXT = (
    "the market routes each prompt to a provider that answers quickly and fairly while "
    "sessions settle on chain with signed receipts so every token is accounted for and "
    "consumers choose by price speed and reliability across many independent nodes"
)
WORDS = tuple(_TEXT.split())


@dataclass(frozen=True)
class LatencyProfile:
    """How a simulated server behaves: time to first token, speed, and how often it fails."""

    ttft_s: float = 0.05
    tokens_per_second: float = 200.0
    jitter: float = 0.1  # +/- fraction applied to each delay
    error_rate: float = 0.0  # HTTP 500 before any output
    stall_rate: float = 0.0  # pause mid-stream for stall_s
    stall_s: float = 5.0
    disconnect_rate: float = 0.0  # drop the connection mid-stream


PROFILES: dict[str, LatencyProfile] = {
    "fast": LatencyProfile(ttft_s=0.03, tokens_per_second=400.0),
    "balanced": LatencyProfile(ttft_s=0.08, tokens_per_second=150.0),
    "slow": LatencyProfile(ttft_s=0.25, tokens_per_second=50.0),
    "flaky": LatencyProfile(
        ttft_s=0.08,
        tokens_per_second=150.0,
        error_rate=0.2,
        stall_rate=0.1,
        stall_s=3.0,
        disconnect_rate=0.1,
    ),
    "instant": LatencyProfile(ttft_s=0.0, tokens_per_second=1e9, jitter=0.0),
}


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per word or punctuation mark."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _content_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role')}:{content or ''}")
    return "\n".join(parts)


def _value_for(schema: dict[str, Any], seed: int, depth: int = 0) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _value_for(v, seed + i, depth + 1) for i, (k, v) in enumerate(props.items())}
    if kind == "array":
        return [
            _value_for(schema.get("items", {"type": "string"}), seed + i, depth + 1)
            for i in range(max(1, schema.get("minItems", 1)))
        ]
    if kind == "integer":
        low = schema.get("minimum", 0)
        return int(low + seed % 10)
    if kind == "number":
        return float(schema.get("minimum", 0)) + (seed % 100) / 10
    if kind == "boolean":
        return seed % 2 == 0
    return WORDS[seed % len(WORDS)]


class ModelServer:
    """One simulated backend on its own port; `async with` or start()/stop()."""

    def __init__(
        self,
        models: list[str] | tuple[str, ...] = ("llama-3.2",),
        *,
        profile: LatencyProfile | str = "balanced",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self.models = list(models)
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.api_key = api_key
        self.host, self.port = host, port
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._app = app

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> ModelServer:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ModelServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- HTTP -----
    @staticmethod
    def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status)

    def _authorized(self, request: web.Request) -> bool:
        return (
            self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"
        )

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "mor-workbench-sandbox"}
                    for m in self.models
                ],
            }
        )

    def _delay(self, seconds: float) -> float:
        jitter = self.profile.jitter
        return max(0.0, seconds * (1 + self._rng.uniform(-jitter, jitter)))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "The request body is not valid JSON.", "invalid_request_error")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not body["messages"]
        ):
            return self._error(
                400, "'messages' must be a non-empty array.", "invalid_request_error"
            )
        model = body.get("model")
        if model not in self.models:
            return self._error(
                404,
                f"The model `{model}` does not exist.",
                "invalid_request_error",
                "model_not_found",
            )
        if body.get("n", 1) != 1:
            return self._error(400, "Only n=1 is supported.", "invalid_request_error")
        if self._rng.random() < self.profile.error_rate:
            return self._error(500, "The simulated server failed.", "server_error")
        plan = self._answer(body)
        if body.get("stream"):
            return await self._stream(request, body, plan)
        await asyncio.sleep(
            self._delay(self.profile.ttft_s + plan["tokens"] / self.profile.tokens_per_second)
        )
        message: dict[str, Any] = {"role": "assistant", "content": plan["content"]}
        if plan["tool_calls"]:
            message["tool_calls"] = plan["tool_calls"]
        return web.json_response(
            {
                "id": plan["id"],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "mor-sim",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": plan["finish_reason"],
                    }
                ],
                "usage": plan["usage"],
            }
        )

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Decide the whole answer up front: deterministic in (model, messages, seed)."""
        messages = body["messages"]
        key = json.dumps([body.get("model"), _content_text(messages), body.get("seed")])
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        prompt_tokens = count_tokens(_content_text(messages))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        tools = body.get("tools") or []
        choice = body.get("tool_choice", "auto")
        last_is_tool = messages[-1].get("role") == "tool"
        tool_calls = None
        content: str | None
        finish = "stop"
        if tools and choice != "none" and not last_is_tool:
            named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            tool = next((t for t in tools if t.get("function", {}).get("name") == named), tools[0])
            fn = tool.get("function", {})
            args = _value_for(fn.get("parameters", {"type": "object"}), seed)
            tool_calls = [
                {
                    "id": f"call_{seed % 10**12:012d}",
                    "type": "function",
                    "function": {"name": fn.get("name", "tool"), "arguments": json.dumps(args)},
                }
            ]
            content, finish = None, "tool_calls"
        else:
            fmt = body.get("response_format") or {}
            if fmt.get("type") == "json_schema":
                content = json.dumps(_value_for(fmt.get("json_schema", {}).get("schema", {}), seed))
            elif fmt.get("type") == "json_object":
                content = json.dumps(
                    {"answer": " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(6))}
                )
            else:
                length = 12 + seed % 40
                words = [WORDS[(seed >> (i % 32) ^ i * 7) % len(WORDS)] for i in range(length)]
                prefix = "The tool returned: " if last_is_tool else ""
                content = prefix + " ".join(words).capitalize() + "."
            if limit is not None:
                tokens = re.findall(r"\w+|[^\w\s]+|\s+", content)
                kept, count = [], 0
                for t in tokens:
                    if not t.isspace():
                        if count >= int(limit):
                            finish = "length"
                            break
                        count += 1
                    kept.append(t)
                content = "".join(kept).rstrip()
            stops = body.get("stop")
            for stop in [stops] if isinstance(stops, str) else (stops or []):
                if stop and stop in content:
                    content, finish = content[: content.index(stop)], "stop"
        out_tokens = count_tokens(content or "") + (
            count_tokens(tool_calls[0]["function"]["arguments"]) if tool_calls else 0
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "content": content,
            "tool_calls": tool_calls,
            "finish_reason": finish,
            "tokens": out_tokens,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": out_tokens,
                "total_tokens": prompt_tokens + out_tokens,
            },
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        base = {
            "id": plan["id"],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "mor-sim",
        }

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await asyncio.sleep(self._delay(self.profile.ttft_s))
        await send({"role": "assistant", "content": "" if plan["content"] is not None else None})
        if plan["tool_calls"]:
            call = plan["tool_calls"][0]
            await send(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            args = call["function"]["arguments"]
            for i in range(0, len(args), 16):
                await send(
                    {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 16]}}]}
                )
        else:
            pieces = re.findall(r"\s*\S+", plan["content"] or "")
            per_token = 1.0 / self.profile.tokens_per_second
            stall_at = len(pieces) // 2 if self._rng.random() < self.profile.stall_rate else -1
            drop_at = len(pieces) // 2 if self._rng.random() < self.profile.disconnect_rate else -1
            owed = 0.0
            for i, piece in enumerate(pieces):
                if i == drop_at:
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                if i == stall_at:
                    await asyncio.sleep(self.profile.stall_s)
                await send({"content": piece})
                owed += self._delay(per_token)
                if owed >= 0.005:  # sleep in slices of 5 ms or more, not once per token
                    await asyncio.sleep(owed)
                    owed = 0.0
        await send({}, plan["finish_reason"])
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(
                b"data: "
                + json.dumps({**base, "choices": [], "usage": plan["usage"]}).encode()
                + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _serve(args: argparse.Namespace) -> None:
    server = ModelServer(args.model, profile=args.profile, port=args.port, api_key=args.api_key)
    await server.start()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a simulated OpenAI-compatible model server.")
    parser.add_argument("--model", action="append", default=None, help="model name (repeatable)")
    parser.add_argument("--profile", default="balanced", choices=sorted(PROFILES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    args.model = args.model or ["llama-3.2"]
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
