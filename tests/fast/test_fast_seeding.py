"""Batched seeding (`sandbox.market.transact_many`, issue 16 §3): real contract calls signed
here and mined many to a block, in each signer's order, at a pinned timestamp when asked; a
revert is named; anvil mines on its own again afterwards."""

from __future__ import annotations

import pytest
from eth_account import Account

from mor_workbench.chain.client import Call, Chain
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ContractReverted
from mor_workbench.sandbox import market as seeding
from mor_workbench.sandbox.market import transact_many


async def funded(chain: Chain, count: int) -> list[Signer]:
    signers = [Signer(Account.create().key) for _ in range(count)]
    await chain.rpc.batch([("anvil_setBalance", [s.address, hex(10**20)]) for s in signers])
    return signers


async def test_calls_are_mined_in_blocks_of_the_batch_size_in_each_signers_order(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seeding, "SEND_BATCH", 4)
    owner, spender = await funded(chain, 2)
    token = chain.deployment.token
    # one signer's approvals: only the order given leaves the last amount standing
    calls = [
        (owner, Call("approve", (spender.address, amount), to=token)) for amount in range(1, 10)
    ]
    pinned = await chain.block_timestamp()
    receipts = await transact_many(chain, calls, timestamp=pinned)
    assert [int(r["status"], 16) for r in receipts] == [1] * 9
    assert len({r["blockNumber"] for r in receipts}) == 3  # 4 + 4 + 1
    allowance = await chain.call("allowance", owner.address, spender.address, to=token)
    assert allowance == 9
    for block in {r["blockNumber"] for r in receipts}:
        mined = await chain.rpc.request("eth_getBlockByNumber", [block, False])
        assert int(mined["timestamp"], 16) == pinned


async def test_a_revert_is_named_and_anvil_mines_on_its_own_again(chain: Chain) -> None:
    (stranger,) = await funded(chain, 1)
    model_id = bytes(32)  # no such model; the stranger is no provider either
    with pytest.raises(ContractReverted, match="postModelBid reverted on chain"):
        await transact_many(
            chain, [(stranger, Call("postModelBid", (stranger.address, model_id, 10**12)))]
        )
    receipt = await chain.transact(
        stranger, "approve", stranger.address, 1, to=chain.deployment.token
    )  # mined without an evm_mine: automine is back on
    assert int(receipt["status"], 16) == 1
