"""TEE models (issue 12 §2): a `tee` column for models tagged `tee` (any case, as the live
network tags its "secure" models), a tee-only strategy (`require_tee=True` or
`strategy={"tee": True}`) that refuses any other model before a transaction and opens on a tee
model's bid, and sessions on tee models reported as not attested, since this library verifies
no TDX/SEV-SNP quote."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from eth_utils import keccak

import mor_workbench as mor
from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import listing
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.attestation import attestation_for, is_tee
from mor_workbench.sandbox.model_server import ModelServer

SECURE = "secure-llm"  # the extra model this file registers, tagged "TEE" (upper case)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["llm", "tee"], True),
        (["LLM", "TEE"], True),
        (["Tee"], True),
        ([" tee "], False),  # the live IsTeeModel compares lower-cased tags, untrimmed
        (["llm"], False),
        (["tee-gpu"], False),  # folded into "tee" by proxy-router v7.0: no longer the tag
        (["guarantee"], False),
        ([], False),
    ],
)
def test_tee_is_the_tee_tag_in_any_case(tags, expected) -> None:
    assert is_tee(tags) is expected


def test_a_tee_model_is_never_reported_attested() -> None:
    tee = attestation_for(["LLM", "TEE"])
    assert (tee.tee, tee.attested) == (True, False) and tee.status.startswith("unverified")
    plain = attestation_for(["llm"])
    assert (plain.tee, plain.attested) == (False, False)


def test_the_tee_option_is_checked_up_front() -> None:
    assert mor.Strategy.of({"tee": True}).tee is True
    with pytest.raises(mor.ConfigurationError, match="tee='yes' must be True or False"):
        mor.Strategy.of({"tee": "yes"})


@pytest.fixture
async def secure_model(sandbox_info) -> AsyncIterator[bytes]:
    """A model tagged TEE with one bid, served by its own real provider router (a simulated
    backend behind it); bid, provider and model are removed afterwards, so the shared
    sandbox's market is left as other tests expect it."""
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    owner, provider = sandbox_info.signer("owner"), Signer(os.urandom(32))
    token, diamond = chain.deployment.token, chain.deployment.diamond
    base_id = keccak(os.urandom(32))
    min_stake = await chain.call("getModelMinimumStake")
    await chain.transact(owner, "approve", diamond, 2**255, to=token)
    await chain.transact(
        owner, "modelRegister", owner.address, base_id, base_id, 0, min_stake, SECURE,
        ["LLM", "TEE"],
    )  # fmt: skip
    model_id = await chain.call("getModelId", owner.address, base_id)
    await chain.rpc.request("anvil_setBalance", [provider.address, hex(10**21)])
    await chain.transact(owner, "transfer", provider.address, 300 * MOR, to=token)
    await chain.transact(provider, "approve", diamond, 2**255, to=token)
    try:
        async with ModelServer([SECURE], profile="instant") as backend:
            config = ModelConfig(model_id, SECURE, backend.base_url + "/chat/completions")
            async with ProviderServer(
                signer=provider, chain=chain, models=[config], claim_interval=None
            ) as server:
                await chain.transact(
                    provider, "providerRegister", provider.address, 200 * MOR, server.endpoint
                )
                await chain.transact(provider, "postModelBid", provider.address, model_id, 10**12)
                yield model_id
    finally:
        (bids,) = await listing(chain, "getProviderActiveBids", [(provider.address,)])
        for bid_id in bids:
            await chain.transact(provider, "deleteModelBid", bid_id)
        await chain.transact(provider, "providerDeregister", provider.address)
        await chain.transact(owner, "modelDeregister", model_id)
        await chain.rpc.aclose()


@pytest.fixture
async def connect(sandbox_info, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    opened: list[mor.AsyncWorkbench] = []

    async def connect(**options) -> mor.AsyncWorkbench:
        wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory, **options)
        opened.append(wb)
        return wb

    yield connect
    for wb in opened:
        await wb.close()


async def _nonce(wb: mor.AsyncWorkbench) -> int:
    reply = await wb.chain.rpc.request("eth_getTransactionCount", [wb.address, "latest"])
    return int(reply, 16)


async def test_models_and_bids_have_a_tee_column(secure_model, connect) -> None:
    wb = await connect()
    models = (await wb.models()).set_index("name")
    assert models.loc[SECURE, "tee"]
    assert not models.drop(SECURE)["tee"].any()
    bids = await wb.bids()
    assert set(bids[bids["tee"]]["model"]) == {SECURE}
    assert bool((await wb.bids(SECURE))["tee"].all())


@pytest.mark.parametrize("option", [{"require_tee": True}, {"strategy": {"tee": True}}])
async def test_tee_only_refuses_a_model_not_tagged_tee_before_any_transaction(
    secure_model, connect, option
) -> None:
    wb = await connect(**option)
    before = await _nonce(wb)
    with pytest.raises(mor.ConfigurationError, match=r"'llama-3\.3-70b' is not tagged 'tee'"):
        await wb.chat("Hello", model="llama-3.3-70b")
    with pytest.raises(mor.ConfigurationError, match="not tagged 'tee'"):
        await wb.open_session("llama-3.3-70b")
    assert await _nonce(wb) == before


async def test_tee_only_opens_on_the_tee_model_and_says_it_is_unverified(
    secure_model, connect
) -> None:
    wb = await connect(require_tee=True)
    session = await wb.open_session(SECURE, duration="5m")
    try:
        assert session.opened.model_id == secure_model
        answer = "".join([d async for d in session.stream("Hello")])
        assert answer
        attestation = wb.attestation(session)
        assert attestation.tee and not attestation.attested
        assert "unverified" in attestation.status
        assert wb.attestation(session.id) == attestation
    finally:
        await session.close()
    plain = await connect()
    other = await plain.open_session("llama-3.3-70b", duration="5m")
    try:
        assert plain.attestation(other).tee is False
    finally:
        await other.close()
    with pytest.raises(mor.ConfigurationError, match="not opened by this workbench"):
        wb.attestation(other)


async def test_the_tee_strategy_keeps_its_other_options(connect) -> None:
    wb = await connect(require_tee=True, strategy={"order": "best", "top": 1})
    assert (wb.strategy.tee, wb.strategy.order, wb.strategy.top) == (True, "best", 1)
