"""Providers claim what they are owed without anyone asking: an unclosed session after its end."""

from __future__ import annotations

import asyncio
import time

from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.market import tables
from mor_workbench.router import peer


def test_sandbox_provider_claims_an_unclosed_session_after_its_end(tmp_path) -> None:
    info = sandbox.start(tmp_path / "claims")  # its own chain: this test moves the clock

    async def scenario() -> None:
        chain = Chain(RpcClient(info.rpc_url), info.deployment)
        consumer, provider = info.signer("consumer"), info.signer("provider:balanced")
        bids = await tables.bids(chain, "llama-3.2")
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
