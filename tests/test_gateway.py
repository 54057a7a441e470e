"""Gateway mode: chat, stream and complete sent to an OpenAI-compatible gateway with a Bearer
API key — here a local server that checks the key — and the key never shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mor_workbench as mor
from mor_workbench._portal import portal
from mor_workbench.sandbox.model_server import PROFILES, ModelServer

KEY = "sk-GATEWAY.0123456789abcdef0123456789abcdef"


@pytest.fixture
def gateway_url() -> Iterator[str]:
    server = ModelServer(["llama-3.3-70b"], profile=PROFILES["fast"], api_key=KEY)
    portal().run(server.start())
    yield server.base_url
    portal().run(server.stop())


def test_chat_stream_and_complete_go_to_the_gateway(gateway_url, monkeypatch) -> None:
    monkeypatch.setenv("MOR_API_KEY", KEY)  # the key from the environment
    with mor.connect("gateway", base_url=gateway_url) as wb:
        answer = wb.chat("Hello", model="llama-3.3-70b")
        stream = wb.stream("Hello", model="llama-3.3-70b")
        assert "".join(stream) == answer  # deterministic answers: same prompt, same text
        assert stream.info["provider"] == "gateway" and stream.usage["completion_tokens"] > 0
        completion = wb.complete([{"role": "user", "content": "Hello"}], model="llama-3.3-70b")
        assert completion.choices[0].message.content == answer
        assert completion.usage.total_tokens > 0
        assert KEY not in repr(wb) and gateway_url in repr(wb)


def test_a_wrong_key_is_one_clear_line_without_the_key(gateway_url) -> None:
    wrong = "sk-WRONG.ffffffffffffffffffffffffffffffff"
    with (
        mor.connect("gateway", api_key=wrong, base_url=gateway_url) as wb,
        pytest.raises(mor.ConfigurationError, match="refused the API key") as caught,
    ):
        wb.chat("Hello", model="llama-3.3-70b")
    assert wrong not in str(caught.value) and "MOR_API_KEY" in str(caught.value)


def test_gateway_mode_needs_a_key_and_has_no_sessions(gateway_url, monkeypatch) -> None:
    monkeypatch.delenv("MOR_API_KEY", raising=False)
    monkeypatch.delenv("MOR_RPC_URL", raising=False)
    with pytest.raises(mor.ConfigurationError, match="MOR_API_KEY"):
        mor.connect("gateway", base_url=gateway_url)
    with mor.connect("gateway", api_key=KEY, base_url=gateway_url) as wb:
        with pytest.raises(mor.ConfigurationError, match="gateway holds them"):
            wb.open_session("llama-3.3-70b")
        with pytest.raises(mor.ConfigurationError, match="rpc_url"):
            wb.models()  # market data comes from chain reads: Base needs an RPC URL


async def test_an_unreachable_gateway_is_a_provider_error_on_every_route() -> None:
    """Chat, embeddings and the model list alike: a gateway that cannot be reached is one
    typed error naming it (the model list used to raise the openai client's own error)."""
    from mor_workbench.errors import ProviderError
    from mor_workbench.router.gateway import Gateway

    gateway = Gateway("sk-test", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    try:
        body = {"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]}
        calls = (
            lambda: anext(gateway.payloads(body)),
            lambda: gateway.embeddings({"model": "text-embedding-bge-m3", "input": ["hi"]}),
            gateway.models,
        )
        for call in calls:
            with pytest.raises(ProviderError, match=r"^the gateway at http://127\.0\.0\.1:"):
                await call()
    finally:
        await gateway.aclose()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
