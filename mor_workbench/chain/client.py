"""The chain client: contract reads (batched through Multicall3), transactions and logs.

Everything the upper layers know about the chain goes through `Chain`; it speaks the live
Diamond's ABI, so the same code works on the sandbox and on Base.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from mor_workbench.chain.abi import Abi, canonical_type, load_abi, load_artifact
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.rpc import RpcClient, RpcError
from mor_workbench.errors import ChainError, ContractReverted

__all__ = ["MULTICALL3", "Call", "Chain", "Deployment"]

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
# The live facets, plus the four SessionRouter errors as the deployed source spells them (the
# published bindings misspell them "Sesssion…", so their selectors would not decode by name).
DIAMOND_FACETS = (
    "SessionRouter",
    "Marketplace",
    "ProviderRegistry",
    "ModelRegistry",
    "Delegation",
    "SessionRouterErrors",
)
_MULTICALL_CHUNK = 400  # calls per eth_call: keeps each batch far below common gas caps
_ALREADY_KNOWN = ("already known", "already imported", "known transaction")
"""How nodes refuse a transaction they hold already (geth and most nodes, anvil, older ones)."""
_CHUNKS_PER_BATCH = 10  # eth_calls per JSON-RPC batch: far below the batch limits of RPC services
_RECEIPT_POLL_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
# Gas is estimated on the latest block, but what a transaction costs can depend on when it is
# mined: a session close estimated in the second the session opened owes nothing yet, yet
# mined seconds later it pays the provider and holds stake (about 90k more gas). Unused gas is
# refunded, so the limit is generous: estimate + 25 % + this.
GAS_HEADROOM = 100_000
NONCE_RETRIES = 3  # fresh nonces tried when another process took ours (same key elsewhere)
_BUMP_NUM, _BUMP_DEN = 9, 8  # each fee bump: +12.5 % (geth and anvil require at least +10 %)


@dataclass(frozen=True)
class Deployment:
    """Where the marketplace lives on one chain."""

    chain_id: int
    diamond: str
    token: str
    multicall: str = MULTICALL3


@dataclass(frozen=True)
class Call:
    """One contract read: `fn(*args)` on `to` (the Diamond unless given)."""

    fn: str
    args: tuple[Any, ...] = ()
    to: str | None = None
    abi: Abi | None = None


class Chain:
    """Reads and writes the Morpheus contracts of one deployment over JSON-RPC."""

    diamond_abi: Abi = load_abi(*DIAMOND_FACETS)
    token_abi: Abi = load_abi("MorpheusToken")
    multicall_abi: Abi = load_abi("Multicall3")
    # Fee bumps: replace an unmined transaction after `bump_after` s, at most `max_bumps` times,
    # never above `max_fee_multiplier` x its first maxFeePerGas. Override per instance.
    bump_after: float = 30.0
    max_bumps: int = 5
    max_fee_multiplier: float = 10.0
    receipt_timeout: float = 120.0

    def __init__(self, rpc: RpcClient, deployment: Deployment) -> None:
        self.rpc = rpc
        self.deployment = deployment
        self._nonces: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}  # our sent, not yet settled transactions, by sender
        self._nonce_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"Chain(chain_id={self.deployment.chain_id}, diamond={self.deployment.diamond})"

    # ----- reads -------------------------------------------------------------------------
    def _resolve(self, call: Call) -> tuple[str, Abi]:
        if call.abi is not None:
            return call.to or self.deployment.diamond, call.abi
        if call.to is None or call.to == self.deployment.diamond:
            return self.deployment.diamond, self.diamond_abi
        if call.to == self.deployment.token:
            return call.to, self.token_abi
        raise ValueError(f"no ABI known for {call.to}; pass Call(abi=…)")

    def encode_call(self, call: Call) -> tuple[str, bytes]:
        """(address, calldata) of a call, as `transact` would send it."""
        address, codec = self._resolve(call)
        return address, codec.encode(call.fn, *call.args)

    def _revert(self, fn: str, data: bytes | None, fallback: str = "") -> ContractReverted:
        decoded = None
        if data:
            decoded = (self.diamond_abi + self.token_abi).decode_error(data)
        if decoded is None:
            return ContractReverted(f"{fn} reverted{': ' + fallback if fallback else ''}")
        name, args = decoded
        detail = f"{name}({', '.join(map(str, args))})" if args else name
        return ContractReverted(f"{fn} reverted with {detail}", error=name, args=args)

    async def call(
        self,
        fn: str,
        *args: Any,
        to: str | None = None,
        abi: Abi | None = None,
        block: str | int = "latest",
    ) -> Any:
        """Read one view function and decode its result."""
        address, codec = self._resolve(Call(fn, args, to, abi))
        tag = hex(block) if isinstance(block, int) else block
        try:
            raw = await self.rpc.request(
                "eth_call", [{"to": address, "data": "0x" + codec.encode(fn, *args).hex()}, tag]
            )
        except RpcError as exc:
            raise self._revert(fn, exc.revert_data(), exc.rpc_message) from None
        return codec.decode(fn, bytes.fromhex(raw[2:]))

    async def read_many(self, calls: Sequence[Call]) -> list[Any]:
        """Many reads in few round trips: Multicall3 aggregate3 calls of `_MULTICALL_CHUNK`
        reads, sent `_CHUNKS_PER_BATCH` to a JSON-RPC batch (one HTTP request), the batches
        at once. A failed read yields its `ContractReverted`; a failed aggregate raises it."""
        chunks = [calls[i : i + _MULTICALL_CHUNK] for i in range(0, len(calls), _MULTICALL_CHUNK)]
        if len(chunks) <= 1:
            return await self._aggregate(chunks[0]) if chunks else []
        batches = [
            chunks[i : i + _CHUNKS_PER_BATCH] for i in range(0, len(chunks), _CHUNKS_PER_BATCH)
        ]
        results = await asyncio.gather(*(self._aggregate_batch(batch) for batch in batches))
        return [item for batch in results for chunk in batch for item in chunk]

    async def read_with_time(self, calls: Sequence[Call]) -> tuple[list[Any], int]:
        """`read_many(calls)` and the latest block's timestamp (s), in one HTTP request (a
        JSON-RPC batch of the reads' eth_call and the block) when the reads fit one eth_call:
        what a provider reads for every prompt (its session, judged on the chain's clock)."""
        if len(calls) > _MULTICALL_CHUNK:
            reads, now = await asyncio.gather(self.read_many(calls), self.block_timestamp())
            return reads, now
        single = len(calls) == 1
        request = calls[0] if single else self._aggregate_call(calls)
        raw, block = await self.rpc.batch(
            [self._eth_call(request), ("eth_getBlockByNumber", ["latest", False])]
        )
        if isinstance(block, RpcError):
            raise block
        now = int(block["timestamp"], 16)
        try:
            decoded = self._decoded(request, raw)
        except ContractReverted as failed:
            if single:
                return [failed], now
            raise
        return ([decoded] if single else self._unpack(calls, decoded)), now

    def _eth_call(self, call: Call) -> tuple[str, list[Any]]:
        """The JSON-RPC request (method, params) reading `call` at the latest block."""
        address, data = self.encode_call(call)
        return "eth_call", [{"to": address, "data": "0x" + data.hex()}, "latest"]

    def _decoded(self, call: Call, raw: Any) -> Any:
        """`call`'s result from its eth_call reply in a batch; `ContractReverted` for an error."""
        if isinstance(raw, RpcError):
            raise self._revert(call.fn, raw.revert_data(), raw.rpc_message)
        return self._resolve(call)[1].decode(call.fn, bytes.fromhex(raw[2:]))

    def _aggregate_call(self, calls: Sequence[Call]) -> Call:
        encoded = [
            (address, True, codec.encode(c.fn, *c.args))
            for c, (address, codec) in ((c, self._resolve(c)) for c in calls)
        ]
        return Call("aggregate3", (encoded,), self.deployment.multicall, self.multicall_abi)

    def _unpack(self, calls: Sequence[Call], replies: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for c, reply in zip(calls, replies, strict=True):
            if reply["success"]:
                out.append(self._resolve(c)[1].decode(c.fn, reply["returnData"]))
            else:
                out.append(self._revert(c.fn, reply["returnData"]))
        return out

    async def _aggregate(self, calls: Sequence[Call]) -> list[Any]:
        aggregate = self._aggregate_call(calls)
        replies = await self.call(aggregate.fn, *aggregate.args, to=aggregate.to, abi=aggregate.abi)
        return self._unpack(calls, replies)

    async def _aggregate_batch(self, chunks: Sequence[Sequence[Call]]) -> list[list[Any]]:
        aggregates = [self._aggregate_call(chunk) for chunk in chunks]
        replies = await self.rpc.batch([self._eth_call(a) for a in aggregates])
        return [
            self._unpack(chunk, self._decoded(aggregate, raw))
            for chunk, aggregate, raw in zip(chunks, aggregates, replies, strict=True)
        ]

    async def chain_id(self) -> int:
        return int(await self.rpc.request("eth_chainId"), 16)

    async def block_timestamp(self) -> int:
        block = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
        return int(block["timestamp"], 16)

    async def eth_balance(self, address: str) -> int:
        return int(await self.rpc.request("eth_getBalance", [address, "latest"]), 16)

    async def get_logs(
        self,
        event: str,
        *,
        from_block: int | str = 0,
        to_block: int | str = "latest",
        abi: Abi | None = None,
        address: str | None = None,
    ) -> list[dict[str, Any]]:
        """Decoded logs of one event of the Diamond (or `address`), oldest first."""
        codec = abi or self.diamond_abi
        params = {
            "address": address or self.deployment.diamond,
            "topics": ["0x" + codec.event_topic(event).hex()],
            "fromBlock": hex(from_block) if isinstance(from_block, int) else from_block,
            "toBlock": hex(to_block) if isinstance(to_block, int) else to_block,
        }
        logs = []
        for log in await self.rpc.request("eth_getLogs", [params]):
            topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
            decoded = codec.decode_log(topics, bytes.fromhex(log["data"][2:]))
            if decoded is not None:
                _name, values = decoded
                values["_block"] = int(log["blockNumber"], 16)
                values["_tx"] = log["transactionHash"]
                logs.append(values)
        return logs

    # ----- writes ------------------------------------------------------------------------
    def _lock(self, address: str) -> asyncio.Lock:
        return self._nonce_locks.setdefault(address, asyncio.Lock())

    async def send(
        self,
        signer: Signer,
        tx: dict[str, Any],
        *,
        label: str,
        timeout: float | None = None,
        on_hash: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Sign and send `tx` (to/data/value) with a locally managed nonce; wait for the receipt.

        Nonces are assigned under a per-account lock so concurrent sends never collide, and a
        nonce another process took (the same key used elsewhere) is replaced by the next one.
        A transaction still unmined after `bump_after` seconds is replaced (same nonce, higher
        fees) so it cannot stay stuck. `on_hash` is told each signed transaction's hash
        *before* it is broadcast (a journal can then find the transaction after a crash).
        """
        sender = signer.address
        async with self._lock(sender):
            for attempt in range(NONCE_RETRIES + 1):
                fields = await self._unsigned(sender, tx, label)
                try:
                    tx_hash = await self._broadcast(signer, fields, on_hash)
                except RpcError as exc:
                    self._nonces.pop(sender, None)
                    message = (exc.rpc_message or "").lower()
                    taken = "nonce too low" in message or "replacement transaction" in message
                    if taken and attempt < NONCE_RETRIES:
                        continue  # another process sent with this account: take the next nonce
                    raise self._revert(label, exc.revert_data(), exc.rpc_message) from None
                self._nonces[sender] = fields["nonce"] + 1
                self._in_flight[sender] = self._in_flight.get(sender, 0) + 1
                break
        # The nonce is ours now: wait (and bump) without holding the lock.
        try:
            receipt = await self._mine_with_bumps(
                signer,
                fields,
                tx_hash,
                label=label,
                timeout=self.receipt_timeout if timeout is None else timeout,
                on_hash=on_hash,
            )
        finally:
            self._in_flight[sender] -= 1
        if int(receipt["status"], 16) != 1:
            raise ContractReverted(
                f"{label} reverted on chain (transaction {receipt['transactionHash']})"
            )
        return receipt

    async def _broadcast(
        self, signer: Signer, fields: dict[str, Any], on_hash: Callable[[str], None] | None
    ) -> str:
        """Sign `fields`, announce the hash to `on_hash`, then send; the hash. A node that
        holds this very transaction already (signed alike by another client of the same key:
        same nonce, same call, same fees) is answered as sent: it is."""
        raw = signer.sign_transaction(fields)
        tx_hash = "0x" + keccak(raw).hex()
        if on_hash is not None:
            on_hash(tx_hash)
        try:
            return await self.rpc.request("eth_sendRawTransaction", ["0x" + raw.hex()])
        except RpcError as exc:
            if any(known in (exc.rpc_message or "").lower() for known in _ALREADY_KNOWN):
                return tx_hash
            raise

    async def _unsigned(self, sender: str, tx: dict[str, Any], label: str) -> dict[str, Any]:
        """`tx` ready to sign: gas, fees and the next nonce, in one batched round trip (a
        revert found by the gas estimate is raised here, before anything is sent)."""
        call: dict[str, Any] = {"from": sender, "data": "0x" + bytes(tx.get("data", b"")).hex()}
        if tx.get("to"):
            call["to"] = tx["to"]
        if tx.get("value"):
            call["value"] = hex(tx["value"])
        estimate, block, tip, pending = await self.rpc.batch(
            [
                ("eth_estimateGas", [call]),
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_maxPriorityFeePerGas", []),
                ("eth_getTransactionCount", [sender, "pending"]),
            ]
        )
        if isinstance(estimate, RpcError):
            raise self._revert(label, estimate.revert_data(), estimate.rpc_message) from None
        for reply in (block, pending):
            if isinstance(reply, RpcError):
                raise reply
        priority = 10**9 if isinstance(tip, RpcError) else int(tip, 16)
        base_fee = int(block.get("baseFeePerGas", "0x0"), 16)
        return {
            "chainId": self.deployment.chain_id,
            "nonce": self._next_nonce(sender, int(pending, 16)),
            "gas": int(estimate, 16) * 5 // 4 + GAS_HEADROOM,
            "maxPriorityFeePerGas": priority,
            "maxFeePerGas": base_fee * 2 + priority,
            "type": 2,
            **{k: v for k, v in tx.items() if k in ("to", "data", "value")},
        }

    def _next_nonce(self, sender: str, pending: int) -> int:
        """The nonce for `sender`'s next transaction: past ours still in flight (a node's
        pending count may lag them), else the chain's own count, which after a rollback (a
        reorg, a sandbox restored from older state) is below what we last used."""
        if self._in_flight.get(sender, 0):
            return max(self._nonces.get(sender, 0), pending)
        return pending

    async def _mine_with_bumps(
        self,
        signer: Signer,
        fields: dict[str, Any],
        first_hash: str,
        *,
        label: str,
        timeout: float,
        on_hash: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Poll for a receipt of any hash sent for this nonce, replacing it with higher fees
        every `bump_after` seconds (at most `max_bumps` times, fees capped)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        nonce = fields["nonce"]
        fee_cap = int(fields["maxFeePerGas"] * self.max_fee_multiplier)
        hashes = [first_hash]
        bumps = 0
        bumping = self.max_bumps > 0
        next_bump = start + self.bump_after
        nonce_used = False  # a bump was refused as "nonce too low": something was mined
        last_error = ""
        for attempt in range(1_000_000):
            receipt = await self._any_receipt(hashes)
            if receipt is not None:
                return receipt
            now = loop.time()
            if nonce_used and await self._nonce_consumed(signer.address, nonce):
                receipt = await self._any_receipt(hashes)
                if receipt is not None:
                    return receipt
                raise ChainError(
                    f"{label}: nonce {nonce} of {signer.address} was used by another "
                    f"transaction (ours: {', '.join(hashes)})"
                )
            if now > deadline:
                break
            if bumping and now >= next_bump:
                bumps += 1
                bumping = bumps < self.max_bumps
                next_bump = now + self.bump_after
                raised = await self._bumped_fees(fields, fee_cap)
                if raised is None:
                    bumping = False  # the fee cap leaves no room for a valid replacement
                else:
                    fields = raised
                    try:
                        hashes.append(await self._broadcast(signer, fields, on_hash))
                    except RpcError as exc:
                        message = exc.rpc_message.lower()
                        if "nonce too low" in message:
                            nonce_used, bumping = True, False
                        elif "already known" in message or "already imported" in message:
                            pass  # this exact replacement is already in the pool
                        elif "underpriced" in message:
                            pass  # the next bump starts from these (higher) fees
                        else:
                            last_error = exc.rpc_message
                            bumping = False  # e.g. insufficient funds: keep waiting instead
                continue  # look for a receipt at once after a bump
            pause = _RECEIPT_POLL_S[min(attempt, len(_RECEIPT_POLL_S) - 1)]
            if bumping:
                pause = min(pause, max(next_bump - now, 0.0))
            await asyncio.sleep(min(pause, max(deadline - now, 0.0)) + 0.001)
        detail = f"; last fee bump failed: {last_error}" if last_error else ""
        raise ChainError(
            f"{label}: transaction with nonce {nonce} from {signer.address} was not mined within "
            f"{timeout:.0f} s after {len(hashes) - 1} fee bump(s) "
            f"(hashes: {', '.join(hashes)}){detail}"
        )

    async def _bumped_fees(self, fields: dict[str, Any], fee_cap: int) -> dict[str, Any] | None:
        """`fields` with both fees raised >= 12.5 % and to at least the network's current
        values, or None when `fee_cap` forbids the 10 % nodes need to accept a replacement."""
        block, tip = await self.rpc.batch(
            [("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])]
        )
        net_tip = 0 if isinstance(tip, RpcError) else int(tip, 16)
        base_fee = 0 if isinstance(block, RpcError) else int(block.get("baseFeePerGas", "0x0"), 16)
        old_tip, old_max = fields["maxPriorityFeePerGas"], fields["maxFeePerGas"]
        new_tip = max(-(-old_tip * _BUMP_NUM // _BUMP_DEN), old_tip + 1, net_tip)
        new_max = max(-(-old_max * _BUMP_NUM // _BUMP_DEN), old_max + 1, 2 * base_fee + new_tip)
        new_max = min(new_max, fee_cap)
        new_tip = min(new_tip, new_max)
        if new_max * 10 < old_max * 11 or new_tip * 10 < old_tip * 11:
            return None
        return {**fields, "maxPriorityFeePerGas": new_tip, "maxFeePerGas": new_max}

    async def _any_receipt(self, hashes: Sequence[str]) -> dict[str, Any] | None:
        """The receipt of whichever of `hashes` was mined, if any (one round trip)."""
        if len(hashes) == 1:
            return await self.rpc.request("eth_getTransactionReceipt", [hashes[0]])
        replies = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        for reply in replies:
            if isinstance(reply, dict):
                return reply
        return None

    async def _nonce_consumed(self, address: str, nonce: int) -> bool:
        return (
            int(await self.rpc.request("eth_getTransactionCount", [address, "latest"]), 16) > nonce
        )

    async def wait_for_receipt(
        self, tx_hash: str | Sequence[str], *, timeout: float = 120.0
    ) -> dict[str, Any]:
        """The receipt of `tx_hash` (or of whichever of several hashes is mined first)."""
        hashes = [tx_hash] if isinstance(tx_hash, str) else list(tx_hash)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in range(1_000_000):
            receipt = await self._any_receipt(hashes)
            if receipt is not None:
                return receipt
            if loop.time() > deadline:
                break
            await asyncio.sleep(_RECEIPT_POLL_S[min(attempt, len(_RECEIPT_POLL_S) - 1)])
        raise ChainError(f"transaction {', '.join(hashes)} was not mined within {timeout:.0f} s")

    async def transact(
        self,
        signer: Signer,
        fn: str,
        *args: Any,
        to: str | None = None,
        abi: Abi | None = None,
        value: int = 0,
        on_hash: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Call a state-changing function and wait until it is mined (`on_hash`: see `send`)."""
        address, codec = self._resolve(Call(fn, args, to, abi))
        data = codec.encode(fn, *args)
        return await self.send(
            signer, {"to": address, "data": data, "value": value}, label=fn, on_hash=on_hash
        )

    async def deploy(self, signer: Signer, artifact: str, *args: Any) -> str:
        """Deploy one of our compiled contracts; returns its address."""
        compiled = load_artifact(artifact)
        ctor = next((e for e in compiled["abi"] if e["type"] == "constructor"), None)
        types = [canonical_type(i) for i in ctor["inputs"]] if ctor else []
        code = bytes.fromhex(compiled["bytecode"].removeprefix("0x")) + abi_encode(types, args)
        receipt = await self.send(signer, {"data": code}, label=f"deploy {artifact}")
        return to_checksum_address(receipt["contractAddress"])
