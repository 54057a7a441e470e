"""The simulated server itself: aiohttp routes, OpenAI's JSON and SSE, paced by a profile."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mor_workbench.sandbox.model_server.embeddings import (
    embeddings_response,
    is_embedding_model,
    validate_embeddings,
)
from mor_workbench.sandbox.model_server.profiles import PROFILES, LatencyProfile
from mor_workbench.sandbox.model_server.request import (
    Invalid,
    Plan,
    error_body,
    is_reasoning_model,
    plan,
    validate,
)

__all__ = ["ModelServer"]

SYSTEM_FINGERPRINT = "fp_mor_sandbox"
OWNED_BY = "mor-workbench-sandbox"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Fate:
    """What the profile decided for one request, drawn before anything is sent."""

    error: bool
    ttft_s: float
    stall_at: int  # the token that comes stall_s late; -1 for none
    drop_at: int  # the token before which the connection drops; -1 for none
    rng: random.Random  # per-token jitter


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class _Chunks:
    """One stream's `chat.completion.chunk` events with the constant parts encoded once: a
    token then costs one tiny `json.dumps` of its text, keeping per-chunk CPU low."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self._base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self._head = b"data: " + _dumps(self._base)[:-1] + b',"choices":[{"index":0,"delta":'
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        self._usage = b',"usage":null' if include_usage else b""
        self._tail = b',"logprobs":null,"finish_reason":null}]' + self._usage + b"}\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        tail = b',"logprobs":null,"finish_reason":' + _dumps(finish_reason) + b"}]"
        return self._head + _dumps(delta) + tail + self._usage + b"}\n\n"

    def content(self, text: str) -> bytes:
        return self._head + b'{"content":' + _dumps(text) + b"}" + self._tail

    def reasoning(self, text: str) -> bytes:
        """A thinking token as DeepSeek streams it: no content yet, the reasoning_content."""
        delta = b'{"content":null,"reasoning_content":' + _dumps(text) + b"}"
        return self._head + delta + self._tail

    def arguments(self, text: str) -> bytes:
        fragment = b'{"tool_calls":[{"index":0,"function":{"arguments":' + _dumps(text) + b"}}]}"
        return self._head + fragment + self._tail

    def usage(self, usage: dict[str, int]) -> bytes:
        return b"data: " + _dumps({**self._base, "choices": [], "usage": usage}) + b"\n\n"


class ModelServer:
    """One simulated OpenAI-compatible backend on its own port; `async with` or start()/stop().

    `models` are the ids it serves, `profile` a `LatencyProfile` or a name in `PROFILES`,
    `api_key` (when set) the Bearer token it requires, `seed` the seed of its fault and jitter
    RNG. Answers are deterministic in (model, messages, seed of the request).
    `reasoning_models` are the ids that think before answering and send `reasoning_content`
    (default: those whose names say so, e.g. gpt-oss-120b; see `is_reasoning_model`).
    `embedding_models` are the ids that answer `POST /v1/embeddings` and only that (default:
    those whose names say so, e.g. text-embedding-bge-m3; see `is_embedding_model`); as on a
    real server, a chat request to one, or an embeddings request to a chat model, is a 400.
    """

    def __init__(
        self,
        models: Sequence[str] = ("llama-3.3-70b",),
        *,
        profile: LatencyProfile | str = "balanced",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        reasoning_models: Sequence[str] | None = None,
        embedding_models: Sequence[str] | None = None,
    ) -> None:
        if isinstance(models, str):
            models = [models]
        if not models:
            raise ValueError("a ModelServer needs at least one model")
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"unknown profile {profile!r}: use one of {sorted(PROFILES)}")
            profile = PROFILES[profile]
        self.models: list[str] = list(models)
        if reasoning_models is None:
            reasoning_models = [m for m in self.models if is_reasoning_model(m)]
        self.reasoning_models: frozenset[str] = frozenset(reasoning_models)
        if embedding_models is None:
            embedding_models = [m for m in self.models if is_embedding_model(m)]
        self.embedding_models: frozenset[str] = frozenset(embedding_models)
        self._embedding_requests = 0  # numbers each embeddings request's fate
        self.profile: LatencyProfile = profile
        self.api_key = api_key
        self.host = host
        self.port = port
        self.seed = seed
        self._requests = 0  # chat requests received: numbers each one's fate
        self._active = 0  # streams in flight: widens the pacing quantum under load
        self._in_flight: set[asyncio.Task[Any]] = set()  # chat handlers, cancelled by stop()
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[self._errors])
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model:.+}", self._get_model)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._app = app

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, http://HOST:PORT/v1: pass it to a client as `base_url`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def request_count(self) -> int:
        """How many chat completion requests this server has received."""
        return self._requests

    @property
    def embedding_request_count(self) -> int:
        """How many embeddings requests this server has received."""
        return self._embedding_requests

    async def start(self) -> ModelServer:
        """Bind and serve; with port 0 a free port is picked and `port` then holds it."""
        if self._runner is not None:
            raise RuntimeError("this ModelServer is already running")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop serving; requests still in flight are cut off (their clients see the connection
        drop) rather than waited for, since a stalled stream could take any time."""
        runner, self._runner = self._runner, None
        if runner is not None:
            for task in list(self._in_flight):
                task.cancel()
            await runner.cleanup()

    async def __aenter__(self) -> ModelServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- routes -----

    @web.middleware
    async def _errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Unknown paths and methods answer in OpenAI's error shape too."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"Invalid URL ({request.method} {request.path})"
            if exc.status == 405:
                message = f"Method {request.method} is not allowed on {request.path}"
            body = error_body(message, "invalid_request_error")
            return web.json_response(body, status=exc.status)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """A 401 unless `api_key` is unset or the Bearer token matches it."""
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {self.api_key}":
            return None
        if not header:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            body = error_body(message, "invalid_request_error")
        else:
            given = header.removeprefix("Bearer ").strip()
            shown = f"{given[:3]}***{given[-2:]}" if len(given) > 8 else "***"
            message = f"Incorrect API key provided: {shown}."
            body = error_body(message, "invalid_request_error", code="invalid_api_key")
        return web.json_response(body, status=401)

    def _card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self._created, "owned_by": OWNED_BY}

    @staticmethod
    def _unknown_model(model: str) -> web.Response:
        message = f"The model `{model}` does not exist or you do not have access to it."
        body = error_body(message, "invalid_request_error", code="model_not_found")
        return web.json_response(body, status=404)

    async def _list_models(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        return web.json_response({"object": "list", "data": [self._card(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        model = request.match_info["model"]
        if model not in self.models:
            return self._unknown_model(model)
        return web.json_response(self._card(model))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            return await self._chat_completion(request)
        finally:
            self._in_flight.discard(task)

    async def _chat_completion(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
            validate(body)
        except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
            return self._unparsable()
        except Invalid as exc:
            return web.json_response(exc.body(), status=400)
        if body["model"] not in self.models:
            return self._unknown_model(body["model"])
        if body["model"] in self.embedding_models:
            return self._wrong_endpoint(body["model"], "an embedding model", "/v1/embeddings")
        answer = plan(body, reasoning=body["model"] in self.reasoning_models)
        fate = self._fate(answer.tokens)
        if fate.error:
            message = "The server had an error while processing your request. Sorry about that!"
            return web.json_response(error_body(message, "server_error"), status=500)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        if body.get("stream"):
            return await self._stream(request, body, answer, fate, completion_id)
        return await self._complete(request, body, answer, fate, completion_id)

    @staticmethod
    def _wrong_endpoint(model: str, what: str, route: str) -> web.Response:
        message = f"The model `{model}` is {what}: send its requests to {route}."
        body = error_body(message, "invalid_request_error", "model", "model_not_supported")
        return web.json_response(body, status=400)

    @staticmethod
    def _unparsable() -> web.Response:
        message = (
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON.)"
        )
        return web.json_response(error_body(message, "invalid_request_error"), status=400)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            return await self._embed(request)
        finally:
            self._in_flight.discard(task)

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's `POST /v1/embeddings` (see `embeddings`), after the profile's embedding
        latency: `embedding_base_s` + input tokens / `embedding_tokens_per_second`, jittered;
        its error rate applies as to chat."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
            validate_embeddings(body)
        except ValueError:
            return self._unparsable()
        except Invalid as exc:
            return web.json_response(exc.body(), status=400)
        if body["model"] not in self.models:
            return self._unknown_model(body["model"])
        if body["model"] not in self.embedding_models:
            return self._wrong_endpoint(body["model"], "a chat model", "/v1/chat/completions")
        self._embedding_requests += 1
        rng = random.Random(f"{self.seed}:embeddings:{self._embedding_requests}")
        p = self.profile
        answer, tokens = embeddings_response(body)
        if rng.random() < p.error_rate:
            message = "The server had an error while processing your request. Sorry about that!"
            return web.json_response(error_body(message, "server_error"), status=500)
        delay = p.embedding_base_s + tokens / p.embedding_tokens_per_second
        await asyncio.sleep(delay * (1 + p.jitter * (2 * rng.random() - 1)))
        return web.json_response(answer)

    # ----- pacing -----

    def _fate(self, tokens: int) -> _Fate:
        """Draw the next request's fate: the same draws in the same order every time, so the
        n-th request to a server with a given seed meets the same fate, whatever else runs."""
        self._requests += 1
        rng = random.Random(f"{self.seed}:{self._requests}")
        p = self.profile
        error = rng.random() < p.error_rate
        stall = rng.random() < p.stall_rate
        drop = rng.random() < p.disconnect_rate
        stall_at = 1 + int(rng.random() * max(tokens - 1, 1))
        drop_at = 1 + int(rng.random() * max(tokens - 1, 1))
        ttft = p.ttft_s * (1 + p.jitter * (2 * rng.random() - 1))
        return _Fate(error, ttft, stall_at if stall else -1, drop_at if drop else -1, rng)

    def _quantum(self) -> float:
        """Shortest sleep between writes: 10 ms, widening to 50 ms with many streams in flight,
        so a fast profile costs one timer per batch of tokens rather than one per token."""
        return min(0.05, max(0.01, self._active * 0.0002))

    @staticmethod
    def _drop(request: web.Request) -> None:
        """Close the connection under the client once what was written is flushed; aiohttp
        then ignores the failed write of the rest (a ConnectionError it expects)."""
        if request.transport is not None:
            request.transport.close()

    async def _complete(
        self,
        request: web.Request,
        body: dict[str, Any],
        answer: Plan,
        fate: _Fate,
        completion_id: str,
    ) -> web.StreamResponse:
        """A whole completion after TTFT + tokens / tps (+ a stall); a drop sends nothing."""
        p = self.profile
        generation = answer.tokens / p.tokens_per_second
        delay = fate.ttft_s + generation * (1 + p.jitter * (2 * fate.rng.random() - 1))
        if fate.stall_at >= 0:
            delay += p.stall_s
        if fate.drop_at >= 0:
            await asyncio.sleep(delay * fate.drop_at / max(answer.tokens, 1))
            self._drop(request)
            return web.Response(status=500)  # never reaches the client
        await asyncio.sleep(delay)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
        if answer.reasoning is not None:
            message["reasoning_content"] = answer.reasoning
        if answer.tool_call is not None:
            message["tool_calls"] = [answer.tool_call]
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": answer.usage,
        }
        return web.json_response(completion, headers={"x-request-id": completion_id})

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        answer: Plan,
        fate: _Fate,
        completion_id: str,
    ) -> web.StreamResponse:
        """Server-sent events as OpenAI sends them: the role (with the tool call's id and name)
        and first token at TTFT (a reasoning model's thinking tokens first, as
        `reasoning_content`), one event per token due every 1/tps (jittered), the
        finish_reason, the usage chunk when asked for, then [DONE]. Tokens already due are
        written together; stalls and drops happen as the fate says."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = _Chunks(completion_id, body["model"], include_usage)
        if answer.tool_call is not None:
            call = answer.tool_call
            header = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            start: dict[str, Any] = {"content": None, "tool_calls": [header]}
            encode = chunks.arguments
        else:
            start, encode = {"content": ""}, chunks.content
        thought, pieces = answer.reasoning_pieces, answer.pieces
        opening = chunks.delta({"role": "assistant", **start, "refusal": None})
        answer_head = b""  # what comes before the answer's first token
        if thought:  # the role first; a tool call's header once the thinking is done
            opening = chunks.delta({"role": "assistant", "content": None, "refusal": None})
            if answer.tool_call is not None:
                answer_head = chunks.delta(start)

        def token(i: int) -> bytes:
            """The i-th generated token's event: thinking first, then the answer."""
            if i < len(thought):
                return chunks.reasoning(thought[i])
            event = encode(pieces[i - len(thought)])
            return answer_head + event if i == len(thought) else event

        closing = chunks.delta({}, answer.finish_reason)
        if include_usage:
            closing += chunks.usage(answer.usage)
        closing += b"data: [DONE]\n\n"

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": completion_id,
            }
        )
        loop = asyncio.get_running_loop()
        p, rng = self.profile, fate.rng
        per_token = 1.0 / p.tokens_per_second
        count = answer.tokens
        self._active += 1
        try:
            await response.prepare(request)
            due = loop.time() + fate.ttft_s  # when token(i) is due
            await asyncio.sleep(fate.ttft_s)
            batch, i = [opening], 0
            while True:
                now = loop.time() + 0.001  # timers may fire a hair early
                while i < count and due <= now:
                    if i == fate.drop_at:
                        await response.write(b"".join(batch))
                        self._drop(request)
                        return response
                    batch.append(token(i))
                    i += 1
                    due += (
                        per_token * (1 + p.jitter * (2 * rng.random() - 1))
                        if p.jitter
                        else per_token
                    )
                    if i == fate.stall_at:
                        due += p.stall_s
                if i >= count:
                    break
                await response.write(b"".join(batch))
                batch.clear()
                await asyncio.sleep(max(due - loop.time(), self._quantum()))
            if fate.drop_at >= count:  # a one-token answer drops before its finish chunk
                await response.write(b"".join(batch))
                self._drop(request)
                return response
            batch.append(closing)
            await response.write(b"".join(batch))
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away: nobody is left to tell
        finally:
            self._active -= 1
        return response
