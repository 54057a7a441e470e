"""`mor-workbench serve`: a local OpenAI-compatible endpoint over a workbench's router, so any
OpenAI client or tool can use the Morpheus marketplace by pointing its base URL here.

Every chat request is logged as one INFO line on the `mor_workbench.serve` logger (model,
provider, session, tokens, MOR cost, seconds, outcome). How each call went travels with the
answer: response headers `x-morpheus-*` (a whole completion: provider, session id, bid id, cost
in MOR, failovers; a stream: provider, session id and bid id, what is known when its headers go
out) and a top-level `morpheus` object (the same fields as `ChatCompletion.morpheus` from
`wb.complete`), which the openai client keeps (`completion.morpheus`, and on the last chunk of
a stream).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from mor_workbench.errors import (
    ConfigurationError,
    InsufficientFunds,
    MorError,
    NoProviderAvailable,
    ProviderError,
    RequestError,
)
from mor_workbench.market.tables import short
from mor_workbench.session import CallRecord
from mor_workbench.workbench import AsyncWorkbench

__all__ = ["make_app", "morpheus_headers", "serve"]

log = logging.getLogger(__name__)

WORKBENCH_KEY = web.AppKey("workbench", AsyncWorkbench)
API_KEY = web.AppKey("api_key", str)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    """A request answered with an OpenAI error JSON at `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _refusal(exc: BaseException) -> _Refused:
    """The HTTP status and OpenAI error JSON for an error from the workbench, by its type
    (mor_workbench.errors): a request fault answers with its own status and fields (the
    backend's, unchanged, when a model refused it); provider faults are 5xx, since the router
    raises them only once every provider it tried has failed."""
    if isinstance(exc, _Refused):
        return exc
    if isinstance(exc, RequestError):
        error = exc.openai_error()["error"]
        return _Refused(exc.status, error["message"], error["type"], error["param"], error["code"])
    if isinstance(exc, InsufficientFunds):
        return _Refused(402, str(exc), "insufficient_quota", code="insufficient_funds")
    if isinstance(exc, NoProviderAvailable):
        return _Refused(503, str(exc), "server_error", code="no_provider_available")
    if isinstance(exc, MorError):
        return _Refused(502, str(exc), "server_error", code="provider_error")
    log.error("serve: unexpected error", exc_info=exc)
    return _Refused(500, f"internal error ({type(exc).__name__})", "server_error")


@web.middleware
async def _guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Checks the Bearer key (when one is set) and answers every error in OpenAI's shape."""
    try:
        expected = request.app.get(API_KEY)
        if expected is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
                raise _Refused(
                    401,
                    "missing or incorrect API key: send Authorization: Bearer <key>",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refused = _Refused(
            exc.status, f"{exc.reason} ({request.method} {request.path})", "invalid_request_error"
        )
    except Exception as exc:
        refused = _refusal(exc)
    return web.json_response(refused.body, status=refused.status)


async def _list_models(request: web.Request) -> web.Response:
    """OpenAI's model list (GET /v1/models)."""
    cards = await request.app[WORKBENCH_KEY].model_cards()
    return web.json_response({"object": "list", "data": cards})


async def _retrieve_model(request: web.Request) -> web.Response:
    """OpenAI's model object (GET /v1/models/{id}); a 404 `model_not_found` error when no
    served model has that id."""
    wanted = request.match_info["model"]
    for card in await request.app[WORKBENCH_KEY].model_cards():
        if card.get("id") == wanted:
            return web.json_response(card)
    raise _Refused(
        404,
        f"the model {wanted!r} does not exist: GET /v1/models lists the served models",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def morpheus_headers(details: dict[str, Any], *, finished: bool) -> dict[str, str]:
    """The `x-morpheus-*` response headers for a call's `morpheus` details: provider, session
    id and bid id (0x hex), and once the call has `finished`, its cost in MOR and failovers
    (a count)."""
    headers = {
        "x-morpheus-provider": details.get("provider"),
        "x-morpheus-session-id": details.get("session_id"),
        "x-morpheus-bid-id": details.get("bid_id"),
    }
    if finished:
        headers["x-morpheus-cost-mor"] = repr(float(details["cost_mor"]))
        headers["x-morpheus-failovers"] = str(len(details.get("failovers") or ()))
    return {name: str(value) for name, value in headers.items() if value}


def _log_call(record: CallRecord, streamed: bool, outcome: str) -> None:
    """The one line each chat request leaves on the `mor_workbench.serve` logger."""
    usage = record.usage or {}
    provider = record.provider if record.provider == "gateway" else short(record.provider)
    log.info(
        "%s %s: provider %s, session %s, %d + %d tokens, %.8f MOR, %.2f s: %s",
        "stream" if streamed else "completion",
        record.model,
        provider or "-",
        short(record.session_id) or "-",
        usage.get("prompt_tokens", 0),
        record.completion_tokens,
        record.cost_mor,
        record.e2e_s,
        outcome,
    )


def _is_last(payload: dict[str, Any]) -> bool:
    """Whether a chunk ends the answer (it has usage, or a finish_reason): nothing more comes
    but possibly the usage chunk, so holding it back to add `morpheus` delays no text."""
    choices = payload.get("choices") or ()
    return bool(payload.get("usage")) or any(c.get("finish_reason") for c in choices)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; a 400 in OpenAI's shape for anything else."""
    try:
        body = json.loads(await request.read())
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        raise _Refused(400, "the request body is not valid JSON", "invalid_request_error") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the request body must be a JSON object", "invalid_request_error")
    return body


async def _embeddings(request: web.Request) -> web.Response:
    """POST /v1/embeddings: the body goes to the workbench untouched (the openai client's
    default base64 vectors included), the `CreateEmbeddingResponse` comes back with how the
    call went in `x-morpheus-*` headers and a `morpheus` object; one log line each."""
    body = await _json_body(request)
    record = CallRecord(str(body.get("model")), surface="serve")
    outcome = "failed"
    try:
        answer = await request.app[WORKBENCH_KEY].embedding_payload(body, record)
        outcome = "ok"
    except BaseException as exc:
        outcome = f"failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        raise
    finally:
        log.info(
            "embeddings %s: provider %s, session %s, %d tokens, %.8f MOR, %.2f s: %s",
            record.model,
            record.provider if record.provider == "gateway" else short(record.provider) or "-",
            short(record.session_id) or "-",
            (record.usage or {}).get("prompt_tokens", 0),
            record.cost_mor,
            record.e2e_s,
            outcome,
        )
    details = record.to_dict()
    headers = morpheus_headers(details, finished=True)
    return web.json_response({**answer, "morpheus": details}, headers=headers)


async def _chat(request: web.Request) -> web.StreamResponse:
    """The body goes to the router untouched; the answer comes back as JSON or as SSE, with
    how the call went in `x-morpheus-*` headers and a `morpheus` object; one log line each."""
    body = await _json_body(request)
    record = CallRecord(str(body.get("model")), surface="serve")
    streamed = bool(body.get("stream"))
    outcome = "failed"
    try:
        if streamed:
            response, outcome = await _stream(request, body, record)
            return response
        response = await _complete(request, body, record)
        outcome = "ok"
        return response
    except BaseException as exc:
        outcome = f"failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        raise
    finally:
        _log_call(record, streamed, outcome)


async def _complete(request: web.Request, body: dict[str, Any], record: CallRecord) -> web.Response:
    payloads = request.app[WORKBENCH_KEY].payloads(body, record)
    try:
        answer = [p async for p in payloads]
    finally:
        await payloads.aclose()
    if not answer:
        raise ProviderError("the provider sent no completion")
    record.finished = record.finished or time.monotonic()
    details = record.to_dict()
    headers = morpheus_headers(details, finished=True)
    return web.json_response({**answer[-1], "morpheus": details}, headers=headers)


async def _stream(
    request: web.Request, body: dict[str, Any], record: CallRecord
) -> tuple[web.StreamResponse, str]:
    """The answer as SSE; the last chunk carries `morpheus`. The outcome for the log.

    The headers wait until the request can no longer be refused (so a refusal still gets its
    HTTP status, and the headers can name the provider and session): until the provider
    accepts it on the fast channel (its model took the prompt; the client then reads the
    headers while the model works on the first token, as from OpenAI), else until the first
    payload."""
    payloads = request.app[WORKBENCH_KEY].payloads(body, record)
    accepted = asyncio.Event()
    record.on_accept = accepted.set
    first_payload = asyncio.ensure_future(anext(payloads, None))
    try:
        acceptance = asyncio.ensure_future(accepted.wait())
        try:
            await asyncio.wait([first_payload, acceptance], return_when=asyncio.FIRST_COMPLETED)
        finally:
            acceptance.cancel()
        if first_payload.done():
            first_payload.result()  # a refusal raises here, before the headers
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **morpheus_headers(record.to_dict(), finished=False),
            }
        )
        outcome = "ok"
        try:
            await response.prepare(request)
            held: dict[str, Any] | None = None  # a last-looking chunk, kept for `morpheus`
            try:
                first = await first_payload
                if first is not None:
                    async for payload in _chain(first, payloads):
                        if held is not None:
                            await response.write(_sse(held))
                            held = None
                        if _is_last(payload):
                            held = payload
                        else:
                            await response.write(_sse(payload))
                record.finished = record.finished or time.monotonic()
                details = record.to_dict()
                if held is None:  # no chunk looked like the last: add one for the details
                    held = _empty_chunk(first or {}, record.model)
                await response.write(_sse({**held, "morpheus": details}))
                await response.write(b"data: [DONE]\n\n")
            except ConnectionError:
                raise
            except Exception as exc:  # after the headers an error can only be an event
                if held is not None:
                    await response.write(_sse(held))
                outcome = f"failed mid-stream ({type(exc).__name__}: {' '.join(str(exc).split())})"
                await response.write(_sse(_refusal(exc).body))
            await response.write_eof()
        except ConnectionError:
            outcome = "the client went away"  # nobody is left to tell
        return response, outcome
    finally:
        first_payload.cancel()
        await asyncio.gather(first_payload, return_exceptions=True)
        await payloads.aclose()


def _empty_chunk(like: dict[str, Any], model: str) -> dict[str, Any]:
    """A chunk with no choices (as OpenAI sends usage), with the stream's id and model."""
    chunk = {"id": "", "object": "chat.completion.chunk", "created": int(time.time())}
    chunk |= {k: like[k] for k in ("id", "created", "model", "system_fingerprint") if k in like}
    return {"model": model, **chunk, "choices": []}


async def _chain(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for payload in rest:
        yield payload


def make_app(workbench: AsyncWorkbench, *, api_key: str | None = None) -> web.Application:
    """The OpenAI-compatible app (GET /v1/models, GET /v1/models/{id},
    POST /v1/chat/completions, POST /v1/embeddings) over `workbench`;
    it owns the workbench and closes it (and the sessions it opened) on cleanup."""
    app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[_guard])
    app[WORKBENCH_KEY] = workbench
    if api_key is not None:
        app[API_KEY] = api_key
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _retrieve_model)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/embeddings", _embeddings)

    async def close_workbench(_: web.Application) -> None:
        await workbench.close()

    app.on_cleanup.append(close_workbench)
    return app


async def serve(
    workbench: AsyncWorkbench,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `workbench` at http://host:port/v1 until cancelled, then close it; `ready` gets
    that base URL once bound (port 0 picks a free port)."""
    runner = web.AppRunner(make_app(workbench, api_key=api_key), shutdown_timeout=5.0)
    try:
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        if ready is not None:
            ready(f"http://{shown}:{bound}/v1")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await workbench.close()  # already closed by the app's cleanup unless setup failed
