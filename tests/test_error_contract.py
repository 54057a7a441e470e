"""One error contract: failures are typed once (request fault vs provider fault), the
backend's OpenAI error reaches the openai client through `serve` unchanged, streamed or not,
and every exception the package raises is in mor_workbench.errors."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import openai
import pytest
from test_serve import KEY, MESSAGES, client, running

import mor_workbench as mor
from mor_workbench import errors
from mor_workbench.sandbox.model_server import ModelServer
from mor_workbench.serve import make_app

MODEL = "llama-3.3-70b"
# requests the simulated model server refuses, each naming a different parameter
BAD_REQUESTS = [
    {"n": 2},
    {"temperature": 3},
    {"max_tokens": 0},
    {"response_format": {"type": "yaml"}},
    {"messages": [{"role": "robot", "content": "hi"}]},
]


@pytest.fixture
async def workbench(sandbox_dir, tmp_path, monkeypatch) -> mor.AsyncWorkbench:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    return await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)


async def _direct_error(base_url: str, key: str, body: dict) -> openai.APIStatusError:
    """The error an OpenAI-compatible server at `base_url` answers to `body`, asked directly."""
    direct = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        await direct.chat.completions.create(**body)
    await direct.close()
    return caught.value


async def _backend_says(body: dict) -> openai.APIStatusError:
    """What a simulated model server answers to `body` when asked directly."""
    async with ModelServer([MODEL], profile="instant") as backend:
        return await _direct_error(backend.base_url, "-", body)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("changes", BAD_REQUESTS, ids=lambda c: next(iter(c)))
async def test_the_backends_openai_error_comes_back_unchanged(
    workbench, changes: dict, stream: bool
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": stream, **changes}
    expected = await _backend_says(body)
    async with running(make_app(workbench, api_key=KEY)) as base_url:
        with pytest.raises(openai.APIStatusError) as caught:
            answer = await client(base_url).chat.completions.create(**body)
            if stream:
                [chunk async for chunk in answer]
    got = caught.value
    assert type(got) is type(expected) is openai.BadRequestError
    assert got.status_code == expected.status_code
    assert got.body == expected.body  # message, type, param and code, as the backend said
    assert got.param == expected.param and got.param is not None


async def test_a_refused_request_is_typed_with_the_backends_fields_and_not_failed_over(
    workbench,
) -> None:
    session = await workbench.open_session(MODEL, duration="6m")
    try:
        stream = session.stream(MESSAGES[0]["content"], temperature=3)
        with pytest.raises(errors.RequestRejected) as caught:
            [delta async for delta in stream]
        assert caught.value.param == "temperature" and caught.value.status == 400
        assert caught.value.type == "invalid_request_error"
        assert isinstance(caught.value, mor.ProviderError) and not caught.value.retryable
        assert stream.info["failovers"] == []  # another provider would refuse it too
    finally:
        await session.close()
        await workbench.close()


async def test_models_retrieve_answers_200_or_a_404_openai_error(workbench) -> None:
    async with running(make_app(workbench, api_key=KEY)) as base_url:
        api = client(base_url)
        listed = {m.id: m async for m in api.models.list()}
        got = await api.models.retrieve(MODEL)
        assert got == listed[MODEL]
        with pytest.raises(openai.NotFoundError) as caught:
            await api.models.retrieve("no-such-model")
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        assert caught.value.type == "invalid_request_error"


def _package_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mor.__path__, "mor_workbench."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra not installed: nothing of ours to check
            continue
        names.append(info.name)
    return names


def test_every_mor_error_is_in_the_one_errors_module() -> None:
    defined = {}
    for name in _package_modules():
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, errors.MorError) and cls.__module__ == name:
                defined[f"{name}.{cls.__name__}"] = cls
    # the node's JSON-RPC error stays beside the client that decodes it (a ChainError)
    elsewhere = {"mor_workbench.chain.rpc.RpcError"}
    missing = [
        path
        for path, cls in defined.items()
        if path not in elsewhere and getattr(errors, cls.__name__, None) is not cls
    ]
    assert not missing, f"define or re-export these in mor_workbench.errors: {missing}"


def test_the_two_kinds_of_fault_are_types() -> None:
    request_faults = [
        errors.RequestTooLarge(10, 5),
        errors.ModelNotFound("no active model"),
        errors.RequestRejected("bad", param="n"),
    ]
    provider_faults = [
        errors.ProviderError("refused"),
        errors.ProviderStalled("no reply within 3 s"),
        errors.SessionExpired("ended"),
    ]
    assert all(isinstance(e, errors.RequestError) for e in request_faults)
    assert all(e.retryable for e in provider_faults)
    assert not any(isinstance(e, errors.RequestError) for e in provider_faults)
    assert errors.RequestRejected("bad").retryable is False
    assert errors.ModelNotFound("x").status == 404
    from mor_workbench.router.router import NoProviderAvailable  # the old import path

    assert mor.NoProviderAvailable is NoProviderAvailable is errors.NoProviderAvailable


async def test_a_gateways_refusal_keeps_its_fields_through_serve() -> None:
    """Gateway mode: the gateway's own 400 (a bad parameter) and 404 (an unknown model) reach
    the openai client through serve as the gateway sent them; they are request faults."""
    gateway_key = "sk-GATEWAY.contract-test"
    async with ModelServer([MODEL], profile="instant", api_key=gateway_key) as gateway:
        workbench = await mor.aconnect("gateway", api_key=gateway_key, base_url=gateway.base_url)
        with pytest.raises(errors.RequestRejected) as rejected:
            await workbench.complete(MESSAGES, model=MODEL, temperature=3)
        assert rejected.value.param == "temperature" and not rejected.value.retryable
        async with running(make_app(workbench, api_key=KEY)) as base_url:  # closes workbench
            for body in ({"model": MODEL, "n": 2}, {"model": "gpt-9"}):
                body = {"messages": MESSAGES, **body}
                expected = await _direct_error(gateway.base_url, gateway_key, body)
                with pytest.raises(openai.APIStatusError) as caught:
                    await client(base_url).chat.completions.create(**body)
                assert type(caught.value) is type(expected)
                assert caught.value.status_code == expected.status_code
                assert caught.value.body == expected.body
