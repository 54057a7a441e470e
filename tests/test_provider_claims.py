"""Providers claim what they are owed without anyone asking: an unclosed session after its end;
and a provider whose chain is unreachable says why in one line and backs off."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer


def test_sandbox_provider_claims_an_unclosed_session_after_its_end(tmp_path) -> None:
    info = sandbox.start(tmp_path / "claims")  # its own chain: this test moves the clock

    async def scenario() -> None:
        chain = Chain(RpcClient(info.rpc_url), info.deployment)
        consumer, provider = info.signer("consumer"), info.signer("provider:balanced")
        bids = await tables.bids(chain, "llama-3.3-70b")
        bid = bids[bids["provider"] == provider.address].iloc[0]
        endpoint = (await chain.call("getProvider", provider.address))["endpoint"]
        approved = await peer.request_approval(
            endpoint,
            consumer,
            provider.address,
            bytes.fromhex(bid["id"][2:]),
            1,
            info.deployment.chain_id,
        )
        price = int(bid["price_per_second_wei"])
        session_id = await peer.open_session(
            chain, consumer, approved, await peer.deposit_for(chain, price, 600)
        )
        session = await chain.call("getSession", session_id)
        earned = (session["endsAt"] - session["openedAt"]) * price
        balance = await chain.call("balanceOf", provider.address, to=info.deployment.token)
        await chain.rpc.request("evm_increaseTime", [session["endsAt"] - session["openedAt"] + 5])
        await chain.rpc.request("evm_mine", [])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = await chain.call("balanceOf", provider.address, to=info.deployment.token)
            if now > balance:
                break
            await asyncio.sleep(0.5)
        assert now - balance == earned
        paid = await chain.call("getSession", session_id)
        assert paid["providerWithdrawnAmount"] == earned and paid["closedAt"] == 0
        await chain.rpc.aclose()

    try:
        asyncio.run(scenario())
    finally:
        sandbox.reset(tmp_path / "claims")


async def test_unreachable_rpc_one_line_per_round_with_back_off(sandbox_info, caplog) -> None:
    """Issue 10: every claim round printed a full traceback at the same pace. Now: one line
    with the reason, and a pause that doubles per failed round up to the cap."""
    caplog.set_level(logging.WARNING, logger="mor_workbench.provider")
    chain = Chain(RpcClient("http://127.0.0.1:9"), sandbox_info.deployment)  # nothing listens
    server = ProviderServer(
        signer=sandbox_info.signer("provider:budget"),
        chain=chain,
        models=[],
        claim_interval=0.01,
        claim_backoff_max=0.08,
    )

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "claiming provider payments failed" in r.message]

    async with server:
        async with asyncio.timeout(60):
            while len(failures()) < 5:
                await asyncio.sleep(0.01)
    await chain.rpc.aclose()
    records = failures()
    for record in records:
        assert record.exc_info is None and "\n" not in record.getMessage()
        assert "no RPC endpoint answered" in record.getMessage()
    assert [r.args[-1] for r in records[:5]] == pytest.approx([0.02, 0.04, 0.08, 0.08, 0.08])
