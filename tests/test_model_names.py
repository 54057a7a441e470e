"""Model names as users type them (issue 12 §2): any case, the live `:web` variants, several
active models with one name, and a near miss answered with suggestions."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import openai
import pytest
from aiohttp import web
from eth_utils import keccak

import mor_workbench as mor
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.sandbox.market import PROVIDERS
from mor_workbench.serve import make_app


def _model_id(wb: mor.Workbench, name: str) -> str:
    models = wb.models()
    (found,) = models.loc[models["name"] == name, "id"]
    return found


def test_names_match_in_any_case(wb) -> None:
    expected = list(wb.bids("llama-3.3-70b")["id"])
    for typed in ("LLaMA-3.3-70B", "LLAMA-3.3-70B", "Llama-3.3-70b"):
        assert list(wb.bids(typed)["id"]) == expected
        assert set(wb.bids(typed)["model"]) == {"llama-3.3-70b"}


def test_a_web_variant_is_a_model_of_its_own(wb) -> None:
    web = wb.bids("llama-3.3-70b:web")
    assert set(web["model"]) == {"llama-3.3-70b:web"} and len(web) == len(PROVIDERS)
    assert set(web["model_id"]) == {_model_id(wb, "llama-3.3-70b:web")}
    assert set(web["id"]).isdisjoint(wb.bids("llama-3.3-70b")["id"])
    assert list(wb.bids("LLAMA-3.3-70B:WEB")["id"]) == list(web["id"])
    # no provider sells qwen with web search: never the plain model in its place
    with pytest.raises(mor.ConfigurationError) as missing:
        wb.bids("qwen3-235b:web")
    assert str(missing.value) == (
        "no active model 'qwen3-235b:web': no provider offers 'qwen3-235b' with web "
        "search; did you mean 'qwen3-235b' (without web search)?"
    )


def test_a_near_miss_is_answered_with_suggestions(wb) -> None:
    with pytest.raises(
        mor.ConfigurationError, match=r"^no active model 'lama-3\.3-70b': did you mean "
    ):
        wb.bids("lama-3.3-70b")
    with pytest.raises(mor.ConfigurationError) as miss:
        wb.chat("hi", model="mistral-31-24")
    assert str(miss.value) == "no active model 'mistral-31-24': did you mean 'mistral-31-24b'?"
    with pytest.raises(mor.ConfigurationError, match=r"'lama-3\.3-70b'.*'llama-3\.3-70b'"):
        wb.open_session("lama-3.3-70b", duration="6m")


def test_ids_still_resolve_and_an_unknown_id_is_named(wb) -> None:
    model_id = _model_id(wb, "mistral-31-24b")
    assert set(wb.bids(model_id)["model"]) == {"mistral-31-24b"}
    unknown = "0x" + "ab" * 32
    with pytest.raises(mor.ConfigurationError, match=f"^no active model with id {unknown}"):
        wb.bids(unknown)


async def test_serve_answers_a_near_miss_with_a_404_and_the_suggestion(
    sandbox_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))
    workbench = await mor.aconnect("sandbox", sandbox_dir=sandbox_dir)
    runner = web.AppRunner(make_app(workbench, api_key="k"), shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        api = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as caught:
            await api.chat.completions.create(
                model="lama-3.3-70b", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await runner.cleanup()
        await workbench.close()
    assert caught.value.code == "model_not_found"
    assert "did you mean 'llama-3.3-70b'" in caught.value.message


@pytest.fixture
def twins(sandbox_info) -> Iterator[dict[str, str]]:
    """Three active models named `twin-7b` in two spellings; only the second has a bid.
    Removed again afterwards (bid deleted, models deregistered) so other tests see the
    seeded market."""
    owner, provider = sandbox_info.signer("owner"), sandbox_info.signer("provider:fast")

    async def run(work):
        chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
        try:
            return await work(chain)
        finally:
            await chain.rpc.aclose()

    names = {"first": "twin-7b", "with_bid": "twin-7b", "upper": "TWIN-7B"}

    async def register(chain: Chain) -> tuple[dict[str, str], bytes]:
        stake = await chain.call("getModelMinimumStake")
        ids = {}
        for key, name in names.items():
            base = keccak(text=f"test-model-names:{key}")
            await chain.transact(
                owner, "modelRegister", owner.address, base, base, 0, stake, name, ["llm"]
            )
            ids[key] = "0x" + (await chain.call("getModelId", owner.address, base)).hex()
        await chain.transact(
            provider, "postModelBid", provider.address, bytes.fromhex(ids["with_bid"][2:]), 10**13
        )
        bids, _ = await chain.call("getModelActiveBids", bytes.fromhex(ids["with_bid"][2:]), 0, 9)
        return ids, bids[0]

    async def remove(chain: Chain, ids: dict[str, str], bid: bytes) -> None:
        await chain.transact(provider, "deleteModelBid", bid)
        for model_id in ids.values():
            await chain.transact(owner, "modelDeregister", bytes.fromhex(model_id[2:]))

    ids, bid = asyncio.run(run(register))
    try:
        yield ids
    finally:
        asyncio.run(run(lambda chain: remove(chain, ids, bid)))


def test_several_models_with_one_name_pick_the_one_with_live_bids(wb, twins) -> None:
    with pytest.warns(UserWarning) as said:
        bids = wb.bids("twin-7b")
    assert set(bids["model_id"]) == {twins["with_bid"]} and len(bids) == 1
    (warning,) = [str(w.message) for w in said if "twin-7b" in str(w.message)]
    assert warning.startswith(
        f"2 active models are named 'twin-7b': using {twins['with_bid']} (live bids: 1)"
    )
    assert f"{twins['first']} (live bids: 0)" in warning
    # an exact spelling wins over a case-insensitive one, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upper = wb.bids("TWIN-7B")
    assert upper.empty
    # a spelling that matches all three only ignoring case: still the one with bids
    with pytest.warns(UserWarning, match=r"^3 active models are named 'Twin-7b'"):
        assert set(wb.bids("Twin-7b")["model_id"]) == {twins["with_bid"]}
