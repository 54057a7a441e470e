"""`ChatMorpheus`: the Morpheus marketplace as a LangChain chat model, for chains and agents.

A thin class over a workbench: the workbench's router picks the provider, opens and renews the
session and fails over; this class maps LangChain messages, tools, structured output and
callbacks to OpenAI request bodies and the answers back to `AIMessage`s, with token usage and
how the call went (provider, session, bid, cost) in `response_metadata["morpheus"]`.

    from mor_workbench.langchain import ChatMorpheus

    llm = ChatMorpheus(model="llama-3.3-70b")                 # connects to the sandbox on first use
    llm = ChatMorpheus(model="llama-3.3-70b", workbench=wb)   # or reuses a workbench of yours

Models that connect themselves share one workbench per connection settings in the process
(and so one session per marketplace model), however many are built.

`MorpheusEmbeddings` does the same for embedding models, as LangChain `Embeddings` for vector
stores and retrievers:

    emb = MorpheusEmbeddings(model="text-embedding-bge-m3", workbench=wb)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    UsageMetadata,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
    make_invalid_tool_call,
    parse_tool_call,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)

from mor_workbench._portal import portal
from mor_workbench._redact import redact_url
from mor_workbench.errors import ConfigurationError
from mor_workbench.session import CallRecord, chat_body
from mor_workbench.workbench import API_KEY_ENV, AsyncWorkbench, Workbench, connect

__all__ = ["ChatMorpheus", "MorpheusEmbeddings", "close_shared_workbenches"]

# Settings that only matter when ChatMorpheus connects itself; with `workbench=` they belong
# on the mor.connect(...) call that made it, so passing them too is refused, not ignored.
_CONNECTION_FIELDS = frozenset(
    {
        "network",
        "rpc_url",
        "sandbox_dir",
        "base_url",
        "api_key",
        "connect_options",
        "timeout",
        "max_retries",
    }
)
# `connect_options` that hold a secret: masked in every serialization, left out of pickles.
_SECRET_OPTIONS = frozenset({"password", "key", "api_key", "rpc_url"})
_MASK = "**********"  # what pydantic shows for a SecretStr


class _Hold:
    """What marks one ChatMorpheus (and its copies) as holding a shared workbench: models are
    not hashable, and a model that is garbage-collected stops holding without closing."""


class ChatMorpheus(BaseChatModel):
    """A LangChain chat model answered by providers of the Morpheus marketplace.

    Give it a `workbench` (a `Workbench` from `mor.connect`, usable sync and async, or an
    `AsyncWorkbench` from `mor.aconnect`, async only), or connection settings (`network`,
    `rpc_url`, `sandbox_dir`, `api_key`, `base_url`, `connect_options`) and it connects on
    first use, sharing the workbench (and its sessions) of every other model in the process
    with the same settings; `close()` or `close_shared_workbenches()` settle them, and so
    does interpreter exit. `timeout` and `max_retries` are the connection's provider timeout
    and failovers.
    Tools, structured output (function calling, JSON schema, JSON mode), streaming with usage
    and per-token callbacks all pass through to the provider as OpenAI parameters.
    A reasoning model's thinking comes back in `additional_kwargs["reasoning_content"]` and
    as the first of the message's `content_blocks` ({"type": "reasoning"}); `content` is the
    answer alone.
    """

    model: str
    """The marketplace model to use, e.g. "llama-3.3-70b" (a per-call `model=` overrides it)."""
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | str | None = None
    """Stop sequences for every call (a per-call `stop` replaces them)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other OpenAI parameters for every call (seed, top_p, …), passed through untouched."""
    streaming: bool = False
    """Stream under `invoke` too, so per-token callbacks fire as the answer arrives."""

    workbench: Workbench | AsyncWorkbench | None = Field(default=None, exclude=True, repr=False)
    """A workbench to reuse; it stays the caller's to close."""
    network: str = "sandbox"
    """Network to connect to when no workbench is given: "sandbox", "base", "gateway", …"""
    rpc_url: str | list[str] | None = Field(default=None, repr=False)
    sandbox_dir: Path | None = None
    base_url: str | None = None
    """The gateway's URL (gateway mode)."""
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("api_key", "key"), repr=False
    )
    """The gateway's API key (default $MOR_API_KEY), or on a chain network the wallet's private
    key (default: the sandbox's consumer, or $MOR_PRIVATE_KEY). Never shown."""
    connect_options: dict[str, Any] = Field(default_factory=dict, repr=False)
    """Other `mor.connect` options: strategy, keystore, password, require_encrypted_prompts."""
    timeout: float | None = None
    """Seconds to wait for a provider's first reply and between chunks before failing over
    (the connection's timeout; default 60)."""
    max_retries: int | None = None
    """How many other providers a failed call may move to (the connection's max_failovers;
    default 2)."""

    _owned: Workbench | None = PrivateAttr(default=None)
    _hold: _Hold = PrivateAttr(default_factory=_Hold)
    _withheld: tuple[str, ...] = PrivateAttr(default=())
    """The secrets a pickle of this model left out (it refuses to connect without them)."""

    # ----- secrets: never in a serialization, a log or a pickle -----

    @field_serializer("rpc_url")
    def _rpc_url_redacted(self, rpc_url: str | list[str] | None) -> str | list[str] | None:
        """`model_dump*` show the RPC URLs as `scheme://host[:port]/…`: their credentials,
        path and query often are the API key."""
        if rpc_url is None:
            return None
        if isinstance(rpc_url, str):
            return redact_url(rpc_url)
        return [redact_url(url) for url in rpc_url]

    @field_serializer("connect_options")
    def _connect_options_masked(self, options: dict[str, Any]) -> dict[str, Any]:
        """`model_dump*` mask the secret options (keystore password, key, RPC URL)."""
        return {k: _MASK if k in _SECRET_OPTIONS else v for k, v in options.items()}

    def __getstate__(self) -> dict[str, Any]:
        """A pickle without the secrets (API key or private key, RPC URL, secret options)
        nor the connection (a workbench given or connected, which no pickle can carry): an
        unpickled model refuses to connect until built again with them, rather than
        connecting with another account or node."""
        state = super().__getstate__()
        fields = dict(state["__dict__"])
        dropped = ("workbench", "api_key", "rpc_url")
        withheld = [name for name in dropped if fields.get(name) is not None]
        fields.update(dict.fromkeys(dropped))
        options = fields.get("connect_options") or {}
        withheld += sorted(options.keys() & _SECRET_OPTIONS)
        fields["connect_options"] = {k: v for k, v in options.items() if k not in _SECRET_OPTIONS}
        private = {"_owned": None, "_hold": _Hold(), "_withheld": (*self._withheld, *withheld)}
        return {**state, "__dict__": fields, "__pydantic_private__": private}

    @model_validator(mode="before")
    @classmethod
    def _gateway_key_from_env(cls, values: Any) -> Any:
        """Gateway mode reads its key from $MOR_API_KEY when none is given, as connect does."""
        if (
            isinstance(values, dict)
            and values.get("network") == "gateway"
            and values.get("api_key", values.get("key")) is None
            and os.environ.get(API_KEY_ENV)
        ):
            return {**values, "api_key": os.environ[API_KEY_ENV]}
        return values

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> ChatMorpheus:
        """Connection settings next to a workbench would be silently ignored: refuse them."""
        if self.workbench is not None:
            clash = sorted(self.model_fields_set & _CONNECTION_FIELDS)
            if clash:
                raise ConfigurationError(
                    f"{clash[0]!r} is a connection setting, but a workbench was given: "
                    "pass it to mor.connect(...) instead"
                )
        return self

    @property
    def _llm_type(self) -> str:
        return "morpheus"

    @property
    def _default_params(self) -> dict[str, Any]:
        """The OpenAI parameters every call sends (unset ones are left out)."""
        params = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop or None,
            **self.model_kwargs,
        }
        return {k: v for k, v in params.items() if v is not None}

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What tracing and caching see: the model, network and parameters, never the key."""
        network = self.workbench.network if self.workbench is not None else self.network
        return {"model": self.model, "network": network, **self._default_params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="morpheus",
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = [stops] if isinstance(stops, str) else list(stops)
        return params

    # ----- the connection -----

    def _connected(self) -> Workbench | AsyncWorkbench:
        """The workbench given, or the shared one for this model's connection settings
        (connected on first use by whichever model needs it first)."""
        if self.workbench is not None:
            return self.workbench
        if self._withheld:
            raise ConfigurationError(
                f"this ChatMorpheus was unpickled, and pickles leave out its connection and "
                f"secrets ({', '.join(self._withheld)}): build a new ChatMorpheus with them"
            )
        self._owned = _SHARED.acquire(self._hold, self.network, self._connect_arguments())
        return self._owned

    def _connect_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "rpc_url": self.rpc_url,
            "sandbox_dir": self.sandbox_dir,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_failovers": self.max_retries,
            **self.connect_options,
        }
        if self.api_key is not None:
            name = "api_key" if self.network == "gateway" else "key"
            arguments[name] = self.api_key.get_secret_value()
        return {k: v for k, v in arguments.items() if v is not None}

    def close(self) -> None:
        """Let go of the shared workbench this model connected with; once no model holding it
        is left, it closes (its sessions settle on chain). A workbench passed in is left open
        for its owner."""
        self._owned = None
        _SHARED.release(self._hold)

    def _payloads(self, body: dict[str, Any], record: CallRecord) -> Iterator[dict[str, Any]]:
        """The answer's payloads, for the sync API (on the workbench's portal loop)."""
        workbench = self._connected()
        if isinstance(workbench, AsyncWorkbench):
            raise ConfigurationError(
                "this ChatMorpheus wraps an AsyncWorkbench, which lives on your event loop: "
                "call ainvoke/astream, or pass a Workbench (mor.connect) to call it both ways"
            )
        return portal().iterate(workbench.aio.payloads(body, record))

    async def _apayloads(
        self, body: dict[str, Any], record: CallRecord
    ) -> AsyncIterator[dict[str, Any]]:
        """The answer's payloads, for the async API: an AsyncWorkbench runs on the caller's
        loop, a Workbench on its portal loop, reached from the caller's."""
        workbench = self.workbench
        if workbench is None:  # connecting may block for seconds: not on the caller's loop
            workbench = await asyncio.to_thread(self._connected)
        if isinstance(workbench, AsyncWorkbench):
            payloads = workbench.payloads(body, record)
            try:
                async for payload in payloads:
                    yield payload
            finally:
                await payloads.aclose()
        else:
            async for payload in portal().aiterate(workbench.aio.payloads(body, record)):
                yield payload

    # ----- requests and answers -----

    def _body(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """The OpenAI request body: messages, this model's parameters, then the call's."""
        params = {**self._default_params, **kwargs}  # a per-call None unsets a default
        params.pop("stream", None)  # how to call is decided by which method runs, not a flag
        if stop:
            params["stop"] = stop
        model = params.pop("model", None) or self.model
        sent = {k: v for k, v in params.items() if v is not None}
        return chat_body(model, convert_to_openai_messages(messages), None, sent)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        body = self._body(messages, stop, kwargs)
        record = CallRecord(body["model"], surface="langchain")
        payloads = list(self._payloads(body, record))
        return _result(payloads[-1], record)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        body = self._body(messages, stop, kwargs)
        record = CallRecord(body["model"], surface="langchain")
        payloads = [p async for p in self._apayloads(body, record)]
        return _result(payloads[-1], record)

    def _stream_body(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        body = self._body(messages, stop, kwargs)
        options = {"include_usage": True, **(body.get("stream_options") or {})}
        return {**body, "stream": True, "stream_options": options}

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # Per-token callbacks are fired by BaseChatModel for each chunk yielded here.
        body = self._stream_body(messages, stop, kwargs)
        record = CallRecord(body["model"], surface="langchain")
        chunks = _Chunks()
        for payload in self._payloads(body, record):
            yield from chunks.feed(payload)
        yield chunks.last(record)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        body = self._stream_body(messages, stop, kwargs)
        record = CallRecord(body["model"], surface="langchain")
        chunks = _Chunks()
        async for payload in self._apayloads(body, record):
            for chunk in chunks.feed(payload):
                yield chunk
        yield chunks.last(record)

    # ----- tools and structured output -----

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with `tools` offered on every call, as OpenAI tools.

        `tool_choice`: "auto", "none", "required" or "any" (a call is required), a tool's name
        (that tool is called), True (the only tool is called), an OpenAI tool_choice dict, or
        None/False (the provider's default).
        `strict` asks the provider to hold the arguments to the schema exactly.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """This model answering with an instance of `schema` (a Pydantic class) or a dict.

        `method`: "function_calling" (the schema as a tool the model must call; the most widely
        supported by OpenAI-compatible backends), "json_schema" (response_format with the
        schema), or "json_mode" (response_format json_object: the prompt must describe the
        keys; `schema` may be None). `include_raw` returns {"raw", "parsed", "parsing_error"}
        instead of raising when the answer does not parse.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(
                f"method {method!r} is not one of 'function_calling', 'json_schema', 'json_mode'"
            )
        if schema is None and method != "json_mode":
            raise ValueError(f"method {method!r} needs a schema")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=trace
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            response_format: dict[str, Any] = {"type": "json_object"}
            if method == "json_schema":
                function = convert_to_openai_function(schema, strict=strict)
                spec = {"name": function["name"], "schema": function["parameters"]}
                if function.get("description"):
                    spec["description"] = function["description"]
                if strict is not None:
                    spec["strict"] = strict
                response_format = {"type": "json_schema", "json_schema": spec}
            llm = self.bind(response_format=response_format, ls_structured_output_format=trace)
            parser = (
                PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
            )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


class MorpheusEmbeddings(Embeddings):
    """A LangChain embeddings model answered by providers of the Morpheus marketplace, for
    vector stores and retrievers: `embed_documents`/`embed_query` and their async twins return
    lists of floats, one vector per text, from `wb.embed` (its batching under the providers'
    message limit, sessions and failover included).

    `model` is a marketplace embedding model (type EMBEDDING in `wb.models()`, e.g.
    "text-embedding-bge-m3"). `dimensions` asks for shorter vectors (OpenAI's parameter, for
    backends that support it); `batch_size` caps the texts a request (default `wb.embed`'s).
    The connection is a ChatMorpheus's: give `workbench=`, or the same connection settings
    (`network`, `rpc_url`, `sandbox_dir`, `base_url`, `api_key`/`key`, `connect_options`,
    `timeout`, `max_retries`), checked, kept secret and shared the same way, so embeddings and
    chat models built with equal settings use one workbench; `close()` lets go of it.

    Raises `ConfigurationError`: at construction for a setting it does not take (or a
    connection setting next to `workbench=`); on a call, before any transaction, for a model
    that does not embed or an empty text (`wb.embed`'s rules), and for a sync call over an
    `AsyncWorkbench`.
    """

    def __init__(
        self,
        *,
        model: str,
        dimensions: int | None = None,
        batch_size: int | None = None,
        **connection: Any,
    ) -> None:
        unknown = sorted(connection.keys() - _CONNECTION_FIELDS - {"workbench", "key"})
        if unknown:
            raise ConfigurationError(
                f"MorpheusEmbeddings takes no {unknown[0]!r}: it takes model, dimensions, "
                "batch_size, and workbench or the connection settings "
                + ", ".join(sorted(_CONNECTION_FIELDS))
            )
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        try:
            self._connection = ChatMorpheus(model=model, **connection)
        except ValidationError as invalid:  # one line naming the setting, as ChatMorpheus's
            error = invalid.errors()[0]
            reason = error.get("ctx", {}).get("error") or error["msg"]
            where = f"{error['loc'][0]}: " if error["loc"] else ""
            raise ConfigurationError(f"{where}{reason}") from None

    def __getattr__(self, name: str) -> Any:
        """The connection settings (`workbench`, `network`, `api_key`, …) read as ChatMorpheus
        keeps them: secrets as `SecretStr`."""
        if name in _CONNECTION_FIELDS or name == "workbench":
            return getattr(self.__dict__["_connection"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        network = self.workbench.network if self.workbench is not None else self.network
        return f"MorpheusEmbeddings(model={self.model!r}, network={network!r})"

    def close(self) -> None:
        """Let go of the shared workbench this model connected with (see `ChatMorpheus.close`);
        a workbench passed in is left open for its owner."""
        self._connection.close()

    def _options(self) -> dict[str, Any]:
        options = {"dimensions": self.dimensions, "batch_size": self.batch_size}
        return {k: v for k, v in options.items() if v is not None}

    def _vectors(self, texts: str | list[str]) -> np.ndarray:
        workbench = self._connection._connected()
        if isinstance(workbench, AsyncWorkbench):
            raise ConfigurationError(
                "this MorpheusEmbeddings wraps an AsyncWorkbench, which lives on your event "
                "loop: call aembed_documents/aembed_query, or pass a Workbench (mor.connect)"
            )
        return workbench.embed(texts, model=self.model, **self._options())

    async def _avectors(self, texts: str | list[str]) -> np.ndarray:
        workbench = self.workbench
        if workbench is None:  # connecting may block for seconds: not on the caller's loop
            workbench = await asyncio.to_thread(self._connection._connected)
        if isinstance(workbench, AsyncWorkbench):
            return await workbench.embed(texts, model=self.model, **self._options())
        return await portal().arun(workbench.aio.embed(texts, model=self.model, **self._options()))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order ([] for no texts)."""
        return self._vectors(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return self._vectors(text)[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order ([] for no texts)."""
        return (await self._avectors(list(texts))).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return (await self._avectors(text))[0].tolist()


class _SharedWorkbenches:
    """The workbenches ChatMorpheus models connect themselves: one per distinct connection
    settings in this process, so models built per call share one workbench and hence one
    session per model (issue 9: each connected on its own and opened its own session).

    Settings are keyed by a SHA-256 of them, so secrets (the key, connect options) are never
    kept as plain dict keys. A workbench closes when the last model holding it is closed,
    by `close_shared_workbenches()`, or at interpreter exit (as every `connect()` does).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workbenches: dict[str, Workbench] = {}
        self._holders: dict[str, weakref.WeakSet[_Hold]] = {}

    def acquire(self, holder: _Hold, network: str, arguments: dict[str, Any]) -> Workbench:
        """The shared workbench for these settings, connected now if there is none (or it
        was closed); `holder` holds it from now on."""
        key = _settings_key(network, arguments)
        with self._lock:
            workbench = self._workbenches.get(key)
            if workbench is None or workbench.aio._closed:
                workbench = connect(network, **arguments)
                self._workbenches[key] = workbench
                self._holders[key] = weakref.WeakSet()
            self._holders[key].add(holder)
            return workbench

    def release(self, holder: _Hold) -> None:
        """`holder` lets go; a workbench nobody else holds is closed."""
        with self._lock:
            emptied = []
            for key, holders in self._holders.items():
                if holder in holders:
                    holders.discard(holder)
                    if not holders:
                        emptied.append(key)
            closing = [self._workbenches.pop(key) for key in emptied]
            for key in emptied:
                del self._holders[key]
        for workbench in closing:
            workbench.close()

    def close(self) -> None:
        """Close every shared workbench (their sessions settle on chain)."""
        with self._lock:
            closing = list(self._workbenches.values())
            self._workbenches.clear()
            self._holders.clear()
        for workbench in closing:
            workbench.close()


def _settings_key(network: str, arguments: dict[str, Any]) -> str:
    """A SHA-256 of connection settings: equal settings, equal key; the secrets in them
    cannot be read back from it."""
    settings = json.dumps([network, arguments], sort_keys=True, default=repr)
    return hashlib.sha256(settings.encode()).hexdigest()


_SHARED = _SharedWorkbenches()


def close_shared_workbenches() -> None:
    """Close the workbenches `ChatMorpheus` models connected themselves (without
    `workbench=`), settling their sessions on chain; a model used afterwards connects
    again. Interpreter exit does this too."""
    _SHARED.close()


def _tool_choice(
    choice: str | bool | dict[str, Any], tools: list[dict[str, Any]]
) -> str | dict[str, Any]:
    """LangChain's tool_choice spellings in OpenAI's."""
    names = [t["function"]["name"] for t in tools]
    if choice is True:
        if len(names) != 1:
            raise ValueError("tool_choice=True needs exactly one tool: name the one to call")
        choice = names[0]
    if isinstance(choice, dict):
        return choice
    if choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return choice
    if choice not in names:
        raise ValueError(f"tool_choice {choice!r} is not among the tools: {', '.join(names)}")
    return {"type": "function", "function": {"name": choice}}


def _usage(usage: Any) -> UsageMetadata | None:
    """OpenAI usage as LangChain's usage metadata (None when the provider sent none)."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def _metadata(
    payload: dict[str, Any], finish_reason: str | None, record: CallRecord
) -> dict[str, Any]:
    """Response metadata: OpenAI's, and how the call went on the marketplace under "morpheus"
    (provider, session, bid, TTFT, tokens/s, cost in MOR, failovers)."""
    metadata = {
        "model_name": payload.get("model") or record.model,
        "finish_reason": finish_reason,
        "id": payload.get("id"),
        "system_fingerprint": payload.get("system_fingerprint"),
    }
    return {
        **{k: v for k, v in metadata.items() if v is not None},
        "morpheus": record.to_dict(),
    }


def _reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """A reasoning model's thinking where LangChain looks for it: `additional_kwargs`
    ["reasoning_content"], as DeepSeek's, Ollama's and Groq's integrations put it, from which
    `AIMessage.content_blocks` derives a standard {"type": "reasoning"} block ahead of the
    text. Streamed pieces concatenate when chunks are added up. Empty for other models; the
    thinking is never sent back with the history (DeepSeek refuses it there)."""
    thought = message.get("reasoning_content")
    return {"reasoning_content": thought} if isinstance(thought, str) and thought else {}


def _result(payload: dict[str, Any], record: CallRecord) -> ChatResult:
    """A ChatResult from an OpenAI chat completion."""
    generations = []
    for choice in payload.get("choices") or ():
        message = choice.get("message") or {}
        tool_calls: list[ToolCall] = []
        invalid: list[InvalidToolCall] = []
        for raw in message.get("tool_calls") or ():
            try:
                call = parse_tool_call(raw, return_id=True)
            except OutputParserException as exc:
                invalid.append(make_invalid_tool_call(raw, str(exc)))
                continue
            if call is not None:
                tool_calls.append(ToolCall(**call))
        ai = AIMessage(
            content=message.get("content") or "",
            additional_kwargs=_reasoning(message),
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(payload.get("usage")),
            response_metadata=_metadata(payload, choice.get("finish_reason"), record),
        )
        generations.append(ChatGeneration(message=ai))
    return ChatResult(generations=generations)


class _Chunks:
    """Streamed OpenAI chunks as LangChain chunks: thinking, text and tool-call fragments as
    they come, then one last chunk with the usage and the response metadata."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.usage: UsageMetadata | None = None
        self.finish_reason: str | None = None

    def feed(self, payload: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
        self.head = payload
        self.usage = _usage(payload.get("usage")) or self.usage
        for choice in payload.get("choices") or ():
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            delta = choice.get("delta") or {}
            fragments: list[ToolCallChunk] = [
                tool_call_chunk(
                    name=(call.get("function") or {}).get("name"),
                    args=(call.get("function") or {}).get("arguments"),
                    id=call.get("id"),
                    index=call.get("index"),
                )
                for call in delta.get("tool_calls") or ()
            ]
            thought = _reasoning(delta)
            if delta.get("content") or fragments or thought:
                message = AIMessageChunk(
                    content=delta.get("content") or "",
                    additional_kwargs=thought,
                    tool_call_chunks=fragments,
                )
                yield ChatGenerationChunk(message=message)

    def last(self, record: CallRecord) -> ChatGenerationChunk:
        message = AIMessageChunk(
            content="",
            usage_metadata=self.usage,
            response_metadata=_metadata(self.head, self.finish_reason, record),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)
