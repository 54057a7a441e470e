"""Fee bumps on a real anvil: a stuck transaction is replaced (same nonce, higher fees)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import rlp

from mor_workbench.chain.anvil import Anvil
from mor_workbench.chain.client import Chain, Deployment
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import ChainError

# anvil's well-known first dev account (the only one the fixture funds)
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
RECIPIENT = "0x" + "42" * 20


@dataclass
class Sent:
    """One eth_sendRawTransaction: its decoded EIP-1559 fields and the node's answer."""

    nonce: int
    tip: int
    max_fee: int
    tx_hash: str | None
    error: str | None


class RecordingRpc(RpcClient):
    """An RpcClient that records every raw transaction sent; `before_send` may act first."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[Sent] = []
        self.before_send: Callable[[int], Awaitable[None]] | None = None

    async def request(self, method: str, params: Any = ()) -> Any:
        if method != "eth_sendRawTransaction":
            return await super().request(method, params)
        if self.before_send is not None:
            await self.before_send(len(self.sent))
        raw = bytes.fromhex(params[0][2:])
        assert raw[0] == 2  # EIP-1559
        fields = rlp.decode(raw[1:])
        record = Sent(*(int.from_bytes(f, "big") for f in fields[1:4]), None, None)
        self.sent.append(record)
        try:
            record.tx_hash = await super().request(method, params)
        except ChainError as exc:
            record.error = str(exc)
            raise
        return record.tx_hash

    @property
    def hashes(self) -> list[str]:
        return [s.tx_hash for s in self.sent if s.tx_hash]


def make_chain(node: Anvil, *, bump_after: float = 0.3) -> tuple[Chain, RecordingRpc]:
    rpc = RecordingRpc(node.url)
    chain = Chain(rpc, Deployment(chain_id=node.chain_id, diamond=RECIPIENT, token=RECIPIENT))
    chain.bump_after = bump_after
    return chain, rpc


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def pool_nonces(rpc: RpcClient, address: str) -> dict[str, dict[str, Any]]:
    pool = await rpc.request("txpool_content")
    return {
        nonce: tx
        for sender, by_nonce in pool["pending"].items()
        if sender.lower() == address.lower()
        for nonce, tx in by_nonce.items()
    }


async def test_stuck_transfer_is_replaced_with_higher_fees_and_same_nonce(anvil: Anvil) -> None:
    chain, rpc = make_chain(anvil)
    signer = Signer(DEV_KEY)
    await rpc.request("evm_setAutomine", [False])
    task = asyncio.create_task(chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer"))
    await wait_until(lambda: len(rpc.hashes) >= 2)
    first, bumped = rpc.sent[0], rpc.sent[1]
    assert first.nonce == bumped.nonce == 0
    assert bumped.max_fee * 8 >= first.max_fee * 9  # +12.5 % at least
    assert bumped.tip * 8 >= first.tip * 9

    pending = await pool_nonces(rpc, signer.address)
    assert list(pending) == ["0"]  # the bump replaced the original in the pool
    assert pending["0"]["hash"] in rpc.hashes[1:]
    assert not task.done()

    await rpc.request("evm_mine")
    receipt = await asyncio.wait_for(task, 10)
    assert int(receipt["status"], 16) == 1
    assert receipt["transactionHash"] in rpc.hashes[1:]  # a bumped one, not the original
    assert int(receipt["effectiveGasPrice"], 16) > 0

    mined = await rpc.request("eth_getTransactionByHash", [receipt["transactionHash"]])
    assert int(mined["nonce"], 16) == 0
    assert int(mined["maxFeePerGas"], 16) > first.max_fee
    assert int(mined["maxPriorityFeePerGas"], 16) > first.tip
    original = await rpc.request("eth_getTransactionReceipt", [first.tx_hash])
    assert original is None  # the original was never mined
    block = await rpc.request("eth_getBlockByNumber", [receipt["blockNumber"], True])
    ours = [t for t in block["transactions"] if t["from"].lower() == signer.address.lower()]
    assert len(ours) == 1 and int(ours[0]["nonce"], 16) == 0
    assert int(await rpc.request("eth_getTransactionCount", [signer.address, "latest"]), 16) == 1
    assert int(await rpc.request("eth_getBalance", [RECIPIENT, "latest"]), 16) == 1
    await rpc.aclose()


async def test_no_bump_when_mined_in_time(anvil: Anvil) -> None:
    chain, rpc = make_chain(anvil, bump_after=30)
    receipt = await chain.send(Signer(DEV_KEY), {"to": RECIPIENT, "value": 1}, label="transfer")
    assert [receipt["transactionHash"]] == rpc.hashes
    await rpc.aclose()


async def test_bump_refused_as_nonce_too_low_returns_the_original(anvil: Anvil) -> None:
    chain, rpc = make_chain(anvil)
    signer = Signer(DEV_KEY)
    await rpc.request("evm_setAutomine", [False])

    async def mine_before_the_bump(index: int) -> None:
        if index == 1:  # the original is mined just before its replacement goes out
            await rpc.request("evm_mine")

    rpc.before_send = mine_before_the_bump
    receipt = await asyncio.wait_for(
        chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer"), 10
    )
    assert len(rpc.sent) >= 2 and rpc.sent[1].error is not None
    assert "nonce too low" in rpc.sent[1].error.lower()
    assert receipt["transactionHash"] == rpc.sent[0].tx_hash
    await rpc.aclose()


async def test_fees_and_bumps_are_capped_and_the_timeout_names_nonce_and_hashes(
    anvil: Anvil,
) -> None:
    chain, rpc = make_chain(anvil, bump_after=0.05)
    chain.max_bumps = 3
    signer = Signer(DEV_KEY)
    await rpc.request("evm_setAutomine", [False])
    with pytest.raises(ChainError) as caught:
        await chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer", timeout=1.5)
    assert len(rpc.sent) == 4  # the original and three bumps, then only waiting
    assert {s.nonce for s in rpc.sent} == {0}
    fees = [s.max_fee for s in rpc.sent]
    assert all(b * 8 >= a * 9 for a, b in itertools.pairwise(fees))
    message = str(caught.value)
    assert "nonce 0" in message and "transfer" in message
    assert all(h in message for h in rpc.hashes)
    assert DEV_KEY[2:] not in message

    chain2, rpc2 = make_chain(anvil, bump_after=0.05)
    chain2.max_fee_multiplier = 1.5  # room for three +12.5 % steps only (1.125**3 = 1.42)
    with pytest.raises(ChainError):
        await chain2.send(signer, {"to": RECIPIENT, "value": 2}, label="transfer", timeout=1.5)
    assert len(rpc2.sent) == 4
    assert max(s.max_fee for s in rpc2.sent) <= 1.5 * rpc2.sent[0].max_fee
    await rpc.aclose()
    await rpc2.aclose()


async def test_concurrent_sends_get_distinct_nonces(anvil: Anvil) -> None:
    chain, rpc = make_chain(anvil, bump_after=30)
    signer = Signer(DEV_KEY)
    receipts = await asyncio.gather(
        *(
            chain.send(signer, {"to": RECIPIENT, "value": i + 1}, label=f"transfer {i}")
            for i in range(8)
        )
    )
    assert len({r["transactionHash"] for r in receipts}) == 8
    assert sorted(s.nonce for s in rpc.sent) == list(range(8))
    assert int(await rpc.request("eth_getTransactionCount", [signer.address, "latest"]), 16) == 8
    assert int(await rpc.request("eth_getBalance", [RECIPIENT, "latest"]), 16) == sum(range(1, 9))
    await rpc.aclose()


async def test_nonce_taken_by_a_foreign_transaction_fails_fast(anvil: Anvil) -> None:
    chain, rpc = make_chain(anvil)
    signer = Signer(DEV_KEY)
    await rpc.request("evm_setAutomine", [False])

    async def replace_from_elsewhere(index: int) -> None:
        if index == 1:  # another wallet with this key replaces nonce 0, and it is mined
            foreign = signer.sign_transaction(
                {
                    "chainId": anvil.chain_id,
                    "nonce": 0,
                    "gas": 21_000,
                    "maxPriorityFeePerGas": 50 * 10**9,
                    "maxFeePerGas": 100 * 10**9,
                    "type": 2,
                    "to": RECIPIENT,
                    "value": 7,
                }
            )
            await RpcClient.request(rpc, "eth_sendRawTransaction", ["0x" + foreign.hex()])
            await rpc.request("evm_mine")

    rpc.before_send = replace_from_elsewhere
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChainError, match=r"nonce 0 .* used by another transaction") as caught:
        await chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer", timeout=30)
    assert loop.time() - started < 10  # not the 30 s timeout
    assert "nonce too low" in (rpc.sent[1].error or "").lower()
    assert rpc.sent[0].tx_hash in str(caught.value)
    assert int(await rpc.request("eth_getBalance", [RECIPIENT, "latest"]), 16) == 7
    await rpc.aclose()


async def test_a_nonce_taken_by_another_process_is_replaced_by_the_next(anvil: Anvil) -> None:
    ours, rpc = make_chain(anvil, bump_after=30)
    theirs, _ = make_chain(anvil, bump_after=30)  # the same key used by another process
    signer = Signer(DEV_KEY)
    await rpc.request("evm_setAutomine", [False])
    others: list[asyncio.Task] = []

    async def another_process_sends_first(index: int) -> None:
        if index == 0:  # our nonce was read; theirs goes out with it before ours does
            others.append(
                asyncio.create_task(theirs.send(signer, {"to": RECIPIENT, "value": 2}, label="x"))
            )
            while not await pool_nonces(rpc, signer.address):
                await asyncio.sleep(0.02)

    rpc.before_send = another_process_sends_first
    task = asyncio.create_task(ours.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer"))
    await wait_until(lambda: bool(rpc.hashes))
    assert rpc.sent[0].nonce == 0 and rpc.sent[0].error  # refused: nonce 0 was taken
    assert rpc.sent[-1].nonce == 1 and rpc.sent[-1].tx_hash
    await rpc.request("evm_mine")
    receipts = await asyncio.wait_for(asyncio.gather(task, *others), 10)
    assert [int(r["status"], 16) for r in receipts] == [1, 1]
    assert int(await rpc.request("eth_getBalance", [RECIPIENT, "latest"]), 16) == 3
    await rpc.aclose()


async def test_after_a_chain_rollback_the_next_send_takes_the_chains_nonce(anvil: Anvil) -> None:
    """A reorg or a sandbox restored from older state undoes mined transactions: the nonce
    we last used is ahead of the chain, and a send must not wait forever behind a gap."""
    chain, rpc = make_chain(anvil)
    signer = Signer(DEV_KEY)
    snapshot = await rpc.request("evm_snapshot", [])
    for _ in range(2):
        await chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer")
    assert await rpc.request("evm_revert", [snapshot])
    receipt = await chain.send(signer, {"to": RECIPIENT, "value": 1}, label="transfer", timeout=5)
    assert int(receipt["status"], 16) == 1 and rpc.sent[-1].nonce == 0
    await rpc.aclose()
