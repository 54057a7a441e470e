"""Approvals and receipts built here are accepted by the contracts on a real chain."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

import mor_workbench as mor
from mor_workbench.protocol import (
    Approval,
    Receipt,
    decode_approval,
    decode_receipt,
    encode_approval,
    encode_receipt,
    eth_recover,
    eth_sign,
)

KEY = bytes.fromhex("42" * 32)


def test_eth_signatures_recover_to_the_signer() -> None:
    data = encode_approval(Approval(b"\x01" * 32, 31337, "0x" + "ab" * 20, 1_700_000_000))
    signature = eth_sign(data, KEY)
    assert signature[64] in (27, 28)
    assert eth_recover(data, signature) == Account.from_key(KEY).address
    assert decode_approval(data).timestamp == 1_700_000_000


def test_receipt_has_the_live_seven_field_layout() -> None:
    receipt = Receipt(b"\x02" * 32, 8453, 1_700_000_000_000, 12_345, 210, 31, 400)
    data = encode_receipt(receipt)
    assert len(data) == 7 * 32
    assert decode_receipt(data) == receipt
    assert decode_receipt(data[: 5 * 32]) == Receipt(
        b"\x02" * 32, 8453, 1_700_000_000_000, 12_345, 210
    )


async def open_directly(info, stamp_ms: int):
    """Open a session on the balanced provider's llama-3.3-70b bid with payloads signed here,
    approved `stamp_ms` after the latest block (approvals are single-use: tests in the same
    second need different stamps); (chain, consumer, provider, bid row, session id, time)."""
    from mor_workbench.chain.client import Chain
    from mor_workbench.chain.rpc import RpcClient

    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    consumer = info.signer("consumer")
    provider = info.signer("provider:balanced")
    wb = await mor.aconnect("sandbox", sandbox_dir=info.directory)
    bids = await wb.bids("llama-3.3-70b")
    await wb.close()
    row = bids[bids["provider"] == provider.address].iloc[0]
    bid_id = bytes.fromhex(row["id"][2:])
    now = await chain.block_timestamp()
    approval = encode_approval(
        Approval(bid_id, info.deployment.chain_id, consumer.address, now * 1000 + stamp_ms)
    )
    signature = eth_sign(approval, provider.private_key_bytes())
    amount = await chain.call("stipendToStake", int(row["price_per_second_wei"]) * 900, now)
    await chain.transact(
        consumer, "approve", info.deployment.diamond, amount * 2, to=info.deployment.token
    )
    receipt = await chain.transact(
        consumer, "openSession", consumer.address, amount * 2, False, approval, signature
    )
    session_id = None
    for log in receipt["logs"]:
        topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
        decoded = chain.diamond_abi.decode_log(topics, bytes.fromhex(log["data"][2:]))
        if decoded and decoded[0] == "SessionOpened":
            session_id = decoded[1]["sessionId"]
    assert session_id is not None
    return chain, consumer, provider, row, session_id, now


@pytest.mark.usefixtures("sandbox_dir")
def test_contract_accepts_our_approval_and_receipt(sandbox_info) -> None:
    """Open and close a real session with payloads signed by this module."""

    async def scenario() -> None:
        chain, consumer, provider, row, session_id, now = await open_directly(sandbox_info, 0)
        close = encode_receipt(
            Receipt(
                session_id, sandbox_info.deployment.chain_id, (now + 1) * 1000, 20_000, 150, 10, 90
            )
        )
        await chain.transact(
            consumer, "closeSession", close, eth_sign(close, provider.private_key_bytes())
        )
        stats = await chain.call(
            "getProviderModelStats", bytes.fromhex(row["model_id"][2:]), provider.address
        )
        assert stats["successCount"] >= 1 and stats["tpsScaled1000"]["mean"] > 0
        await chain.rpc.aclose()

    asyncio.run(scenario())


@pytest.mark.usefixtures("sandbox_dir")
def test_a_close_estimated_in_the_opening_second_is_mined_when_payouts_are_due(
    sandbox_info,
) -> None:
    """Gas is estimated on the latest block; a close estimated in the second the session
    opened owes nothing yet, but mined a few seconds later it pays the provider and puts
    stake on hold (about 90k more gas). The limit must cover that, or the close runs out of
    gas and the session stays open."""

    async def scenario() -> None:
        chain, consumer, provider, _, session_id, now = await open_directly(sandbox_info, 1)
        await chain.rpc.request("evm_setAutomine", [False])
        try:
            close = encode_receipt(
                Receipt(session_id, sandbox_info.deployment.chain_id, now * 1000, 20_000, 150)
            )
            sending = asyncio.ensure_future(
                chain.transact(
                    consumer, "closeSession", close, eth_sign(close, provider.private_key_bytes())
                )
            )
            while not (await chain.rpc.request("txpool_content"))["pending"]:
                await asyncio.sleep(0.05)
            await chain.rpc.request("evm_increaseTime", [30])
            await chain.rpc.request("evm_mine", [])
            receipt = await sending
        finally:
            await chain.rpc.request("evm_setAutomine", [True])
        assert int(receipt["status"], 16) == 1
        session = await chain.call("getSession", session_id)
        assert session["closedAt"] and session["providerWithdrawnAmount"] > 0
        await chain.rpc.aclose()

    asyncio.run(scenario())
