"""`ChatMorpheus`: langchain-tests' standard unit and integration suites (the latter on the
sandbox), then what the suites do not pin down: the key stays hidden, metadata names the
session and its cost, stop and max_tokens reach the provider, the three structured-output
methods, the connection it makes itself, an AsyncWorkbench, and a LangGraph agent loop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field, SecretStr

import mor_workbench as mor
from mor_workbench import langchain
from mor_workbench.chain.keys import Signer
from mor_workbench.langchain import ChatMorpheus, close_shared_workbenches
from mor_workbench.sandbox.paths import SandboxPaths
from mor_workbench.serve import make_app

MODEL = "llama-3.3-70b"


@pytest.fixture(scope="module")
def workbench(sandbox_info: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One workbench for the module (its own journal), so sessions are opened once per model;
    on the sandbox's fast provider, to keep the suite quick."""
    fast = sandbox_info.signer("provider:fast").address
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(tmp_path_factory.mktemp("langchain-home")))
        wb = mor.connect("sandbox", sandbox_dir=sandbox_info.directory, strategy={"allow": [fast]})
        yield wb
        wb.close()


class TestChatMorpheusUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatMorpheus]:
        return ChatMorpheus

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "qwen3-235b"

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"MOR_API_KEY": "sk-from-the-environment"},
            {"model": MODEL, "network": "gateway"},
            {"api_key": "sk-from-the-environment"},
        )


class TestChatMorpheusIntegration(ChatModelIntegrationTests):
    shared: ClassVar[Any] = None

    @pytest.fixture(autouse=True)
    def _shared_workbench(self, workbench: Any) -> None:
        type(self).shared = workbench

    @property
    def chat_model_class(self) -> type[ChatMorpheus]:
        return ChatMorpheus

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL, "workbench": self.shared}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "qwen3-235b"


# ----- what the suites leave open -----

KEY = "0x" + "ab" * 32


class Recorder(BaseCallbackHandler):
    """Everything callbacks see: serialized model, invocation params, tokens."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.tokens: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen.append(json.dumps([serialized, kwargs], default=repr))

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_the_key_is_a_secret_shown_nowhere() -> None:
    llm = ChatMorpheus(model=MODEL, network="base", rpc_url="https://rpc.example/KEY", key=KEY)
    assert isinstance(llm.api_key, SecretStr)
    assert llm.api_key.get_secret_value() == KEY
    shown = [repr(llm), str(llm), str(llm.asdict()), json.dumps(dumpd(llm))]
    shown += [str(llm._get_ls_params()), str(llm._get_invocation_params())]
    for text in shown:
        assert KEY not in text and "ab" * 32 not in text
        assert "rpc.example/KEY" not in text  # RPC URLs often carry an API key too
    assert llm._connect_arguments()["key"] == KEY  # what connect gets, and only it


def test_gateway_key_maps_to_api_key_and_wallet_key_to_key() -> None:
    gateway = ChatMorpheus(model=MODEL, network="gateway", api_key="sk-abc")
    assert gateway._connect_arguments() == {"api_key": "sk-abc"}
    chain = ChatMorpheus(model=MODEL, network="base", api_key=KEY, timeout=5, max_retries=0)
    assert chain._connect_arguments() == {"key": KEY, "timeout": 5, "max_failovers": 0}


def test_connection_settings_next_to_a_workbench_are_refused(workbench) -> None:
    for setting in ({"timeout": 5}, {"max_retries": 1}, {"network": "base"}, {"api_key": KEY}):
        with pytest.raises(ValueError, match="connection setting"):
            ChatMorpheus(model=MODEL, workbench=workbench, **setting)


def test_tool_choice_spellings() -> None:
    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    llm = ChatMorpheus(model=MODEL)
    cases = {
        "any": "required",
        "auto": "auto",
        "none": "none",
        "lookup": {"type": "function", "function": {"name": "lookup"}},
        True: {"type": "function", "function": {"name": "lookup"}},
    }
    for given, sent in cases.items():
        assert llm.bind_tools([lookup], tool_choice=given).kwargs["tool_choice"] == sent
    assert "tool_choice" not in llm.bind_tools([lookup]).kwargs
    with pytest.raises(ValueError, match="not among the tools"):
        llm.bind_tools([lookup], tool_choice="elsewhere")


def test_metadata_names_the_session_bid_and_cost(workbench) -> None:
    llm = ChatMorpheus(model=MODEL, workbench=workbench)
    answer = llm.invoke("What does a provider do?")
    info = answer.response_metadata["morpheus"]
    assert info["provider"].startswith("0x") and info["cost_mor"] > 0
    row = workbench.sessions().set_index("id").loc[info["session_id"]]
    assert row["is_active"] and row["bid_id"] == info["bid_id"]
    assert answer.usage_metadata["output_tokens"] == info["completion_tokens"] > 0
    assert answer.usage_metadata["total_tokens"] == (
        answer.usage_metadata["input_tokens"] + answer.usage_metadata["output_tokens"]
    )


def test_metadata_reports_only_what_was_measured(workbench) -> None:
    """invoke gets one completion: no TTFT, tokens/s over the whole call; a stream has a
    TTFT and tokens/s over the generation. Each says which it is."""
    llm = ChatMorpheus(model=MODEL, workbench=workbench, max_tokens=12)
    whole = llm.invoke("Tell me about rivers.").response_metadata["morpheus"]
    assert whole["streamed"] is False and whole["ttft_s"] is None
    assert whole["tokens_per_s_basis"] == "end_to_end"
    assert whole["tokens_per_s"] == pytest.approx(whole["completion_tokens"] / whole["e2e_s"])
    last = list(llm.stream("Tell me about rivers."))[-1]
    streamed = last.response_metadata["morpheus"]
    assert streamed["streamed"] is True and 0 < streamed["ttft_s"] < streamed["e2e_s"]
    assert streamed["tokens_per_s_basis"] == "generation"
    generation_s = streamed["e2e_s"] - streamed["ttft_s"]
    assert streamed["tokens_per_s"] == pytest.approx(streamed["completion_tokens"] / generation_s)


def test_streaming_fires_one_callback_per_chunk_and_ends_with_usage(workbench) -> None:
    recorder = Recorder()
    llm = ChatMorpheus(model=MODEL, workbench=workbench, max_tokens=12)
    chunks = list(llm.stream("Tell me about rivers.", config={"callbacks": [recorder]}))
    assert len(recorder.tokens) == len(chunks)  # no token reported twice
    assert [c.content for c in chunks] == recorder.tokens
    assert len([c for c in chunks if c.content]) == 12  # one chunk per simulated token
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["output_tokens"] == 12
    assert last.response_metadata["finish_reason"] == "length"
    assert last.response_metadata["morpheus"]["session_id"].startswith("0x")
    # streaming=True streams under invoke as well, with the same callbacks
    recorder = Recorder()
    streamed = ChatMorpheus(model=MODEL, workbench=workbench, max_tokens=12, streaming=True)
    whole = streamed.invoke("Tell me about rivers.", config={"callbacks": [recorder]})
    assert "".join(recorder.tokens) == whole.content == "".join(c.content for c in chunks)


def test_stop_max_tokens_and_model_kwargs_reach_the_provider(workbench) -> None:
    llm = ChatMorpheus(model=MODEL, workbench=workbench)
    full = llm.invoke("Describe a harbor.").content
    word = full.split()[3]
    cut = llm.invoke("Describe a harbor.", stop=[word]).content
    assert cut == full[: full.index(word)]
    stopping = ChatMorpheus(model=MODEL, workbench=workbench, stop=word)
    assert stopping.invoke("Describe a harbor.").content == cut
    short = llm.invoke("Describe a harbor.", max_tokens=3)
    assert short.usage_metadata["output_tokens"] == 3
    assert short.response_metadata["finish_reason"] == "length"
    seeded = ChatMorpheus(model=MODEL, workbench=workbench, model_kwargs={"seed": 7})
    assert seeded.invoke("Describe a harbor.").content != full  # the simulator draws by seed
    assert seeded.invoke("Describe a harbor.", seed=None).content == full  # per call wins


def test_a_per_call_model_goes_to_that_models_session(workbench) -> None:
    answer = ChatMorpheus(model=MODEL, workbench=workbench).invoke("Hi", model="mistral-31-24b")
    assert answer.response_metadata["model_name"] == "mistral-31-24b"
    assert answer.response_metadata["morpheus"]["model"] == "mistral-31-24b"


class Pick(BaseModel):
    """A model picked for a job."""

    model: str = Field(description="the model's name")
    reason: str = Field(description="why this one")
    stars: int = Field(ge=1, le=5)


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output_methods_return_the_schema(workbench, method: str) -> None:
    llm = ChatMorpheus(model=MODEL, workbench=workbench)
    pick = llm.with_structured_output(Pick, method=method).invoke("Pick a model for code.")
    assert isinstance(pick, Pick) and 1 <= pick.stars <= 5
    raw = llm.with_structured_output(Pick, method=method, include_raw=True).invoke("Again.")
    assert isinstance(raw["parsed"], Pick) and raw["parsing_error"] is None
    assert isinstance(raw["raw"], AIMessage)


def test_json_mode_returns_whatever_json_the_model_wrote(workbench) -> None:
    llm = ChatMorpheus(model=MODEL, workbench=workbench)
    answer = llm.with_structured_output(None, method="json_mode").invoke("Answer in JSON.")
    assert set(answer) == {"answer", "confidence"}  # the simulator's JSON object
    failed = llm.with_structured_output(Pick, method="json_mode", include_raw=True).invoke("JSON")
    assert failed["parsed"] is None and failed["parsing_error"] is not None


def test_a_model_that_connects_itself_pays_with_its_key_and_never_shows_it(
    sandbox_dir: Path, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    owner = json.loads(SandboxPaths(sandbox_dir).accounts.read_text())["owner"]
    recorder = Recorder()
    llm = ChatMorpheus(model=MODEL, sandbox_dir=sandbox_dir, key=owner, timeout=30, max_retries=1)
    answer = llm.invoke("Hello", config={"callbacks": [recorder]})
    owned = llm._owned
    assert owned is not None and owned.address == Signer(owner).address  # the key pays
    assert owned.aio.timeout == 30 and owned.aio.max_failovers == 1
    secret = owner.removeprefix("0x").lower()
    shared_keys = list(langchain._SHARED._workbenches)  # settings are keyed by a hash
    for shown in [*recorder.seen, repr(llm), repr(answer), str(answer.response_metadata)]:
        assert secret not in shown.lower()
    assert shared_keys and all(secret not in key.lower() for key in shared_keys)
    session_id = answer.response_metadata["morpheus"]["session_id"]
    llm.close()  # settles the sessions it opened
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as wb:
        row = wb.sessions(owned.address).set_index("id").loc[session_id]
        assert not row["is_active"]


def _sessions_on_chain(sandbox_dir: Path, home: Path) -> Any:
    """The consumer's sessions on chain, read through a workbench with its own journal (so
    reading cannot settle what the models under test left open)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(home))
        with mor.connect("sandbox", sandbox_dir=sandbox_dir) as checker:
            return checker.sessions().set_index("id")


def test_models_built_per_call_share_one_workbench_and_one_session(
    sandbox_dir: Path, tmp_path, monkeypatch
) -> None:
    """An agent that builds a ChatMorpheus per call: ten models with the same connection
    settings open one session between them (each used to connect and open its own), and
    closing the shared workbenches leaves none open."""
    known = set(_sessions_on_chain(sandbox_dir, tmp_path / "checker").index)
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "models"))
    try:
        models = [ChatMorpheus(model=MODEL, sandbox_dir=sandbox_dir) for _ in range(10)]
        answers = [llm.invoke("Hello", max_tokens=3) for llm in models]
        assert len({id(llm._owned) for llm in models}) == 1
        sessions = _sessions_on_chain(sandbox_dir, tmp_path / "checker")
        opened = set(sessions.index) - known
        assert len(opened) == 1 and sessions.loc[list(opened), "is_active"].all()
        assert {a.response_metadata["morpheus"]["session_id"] for a in answers} == opened
        other = ChatMorpheus(model=MODEL, sandbox_dir=sandbox_dir, timeout=30)
        assert other._connected() is not models[0]._owned  # other settings, another workbench
    finally:
        close_shared_workbenches()
    sessions = _sessions_on_chain(sandbox_dir, tmp_path / "checker")
    assert not sessions.loc[list(opened), "is_active"].any()


def test_a_shared_workbench_closes_with_the_last_model_holding_it(
    sandbox_dir: Path, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    first, second = (ChatMorpheus(model=MODEL, sandbox_dir=sandbox_dir) for _ in range(2))
    try:
        session_id = first.invoke("Hi", max_tokens=2).response_metadata["morpheus"]["session_id"]
        shared = first._owned
        assert second.invoke("Hi", max_tokens=2).response_metadata["morpheus"]["session_id"] == (
            session_id
        )
        first.close()  # the second still holds it: still open, same session
        assert not shared.aio._closed
        again = second.invoke("Hi", max_tokens=2).response_metadata["morpheus"]["session_id"]
        assert again == session_id
        second.close()  # the last holder: closed, its session settled
        assert shared.aio._closed
    finally:
        close_shared_workbenches()
    sessions = _sessions_on_chain(sandbox_dir, tmp_path / "checker")
    assert not sessions.loc[session_id, "is_active"]


def test_shared_sessions_are_closed_at_interpreter_exit(sandbox_dir: Path, tmp_path) -> None:
    script = (
        "from mor_workbench.langchain import ChatMorpheus\n"
        "for _ in range(3):\n"
        f"    llm = ChatMorpheus(model={MODEL!r}, sandbox_dir={str(sandbox_dir)!r})\n"
        "    answer = llm.invoke('Hi', max_tokens=2)\n"
        "print(answer.response_metadata['morpheus']['session_id'])\n"  # exit without close
    )
    env = {**os.environ, "MOR_WORKBENCH_HOME": str(tmp_path / "child")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    sessions = _sessions_on_chain(sandbox_dir, tmp_path / "checker")
    assert not sessions.loc[done.stdout.strip(), "is_active"]


async def test_gateway_mode_sends_the_api_key_as_bearer(
    sandbox_dir: Path, tmp_path, monkeypatch
) -> None:
    """Gateway mode end to end, against `mor-workbench serve` standing in for the gateway."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    app = make_app(await mor.aconnect("sandbox", sandbox_dir=sandbox_dir), api_key="sk-right")
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        llm = ChatMorpheus(model=MODEL, network="gateway", base_url=base_url, key="sk-right")
        answer = await llm.ainvoke("Hello")
        assert answer.content and answer.response_metadata["morpheus"]["provider"] == "gateway"
        chunks = [c async for c in llm.astream("Hello")]
        assert "".join(c.content for c in chunks) == answer.content
        await asyncio.to_thread(llm.close)
        wrong = ChatMorpheus(model=MODEL, network="gateway", base_url=base_url, key="sk-wrong")
        with pytest.raises(mor.ConfigurationError, match="refused the API key") as refused:
            await wrong.ainvoke("Hello")
        assert "sk-wrong" not in str(refused.value)
        await asyncio.to_thread(wrong.close)
    finally:
        await runner.cleanup()


async def test_over_an_async_workbench(sandbox_dir: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    async with await mor.aconnect("sandbox", sandbox_dir=sandbox_dir) as wb:
        llm = ChatMorpheus(model=MODEL, workbench=wb, max_tokens=5)
        answer = await llm.ainvoke("Hello")
        assert answer.usage_metadata["output_tokens"] == 5
        chunks = [c async for c in llm.astream("Hello")]
        assert "".join(c.content for c in chunks) == answer.content
        with pytest.raises(mor.ConfigurationError, match="ainvoke"):
            await asyncio.to_thread(llm.invoke, "Hello")


async def test_an_abandoned_async_stream_leaves_the_workbench_usable(workbench) -> None:
    llm = ChatMorpheus(model=MODEL, workbench=workbench)
    stream = llm.astream("Tell me a long story.")
    first = await anext(stream)
    assert isinstance(first, AIMessageChunk)
    await stream.aclose()  # the stream on the workbench's loop is closed too
    task = asyncio.create_task(llm.ainvoke("And another."))
    await asyncio.sleep(0.01)
    task.cancel()  # cancelled mid-call: the call is cancelled where it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await llm.ainvoke("Still there?")).content


def test_a_langgraph_agent_calls_the_tool_and_answers_with_its_result(workbench) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def price_of(model: str) -> str:
        """The cheapest price per hour of a marketplace model, in MOR."""
        return "0.042 MOR per hour"

    llm = ChatMorpheus(model=MODEL, workbench=workbench).bind_tools([price_of])
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [llm.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([price_of]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    graph.add_edge("agent", END)
    messages = graph.compile().invoke({"messages": [HumanMessage("What does llama cost?")]})[
        "messages"
    ]
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert messages[1].tool_calls[0]["name"] == "price_of"
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "0.042 MOR per hour"
    assert "The price_of tool returned 0.042 MOR per hour." in messages[3].content
