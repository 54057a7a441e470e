"""Measure a steady-state session lifecycle as real transactions on anvil (receipts' gasUsed).

Cross-checks the forge gas test: deploys exactly as the sandbox does (token, facets, Diamond with
the cuts of deployment.json, inits), runs one session to warm up the user, provider and model,
then measures the second session's openSession and natural closeSession (closed after endsAt
with the provider's receipt). Run from the repository root after `make artifacts`:

    .venv/bin/python contracts/gas_anvil.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from web3 import Web3
from web3.logs import DISCARD

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "mor_workbench" / "chain" / "artifacts"
MOR = 10**18
START = 1707393600
PRICE = 10**14  # 0.0001 MOR/s, as in the reference measurement
REFERENCE = {"open": 438_829, "close": 303_142}


def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


class Chain:
    def __init__(self, url: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.abi: list[dict] = []
        for facet in artifact("deployment")["facets"]:
            self.abi += artifact(facet["name"])["abi"]

    def send(self, account, tx: dict) -> dict:
        tx = {
            **tx,
            "from": account.address,
            "nonce": self.w3.eth.get_transaction_count(account.address),
        }
        tx.setdefault("gas", 10_000_000)
        tx["gasPrice"] = self.w3.eth.gas_price
        tx["chainId"] = self.w3.eth.chain_id
        signed = account.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction reverted: {tx.get('to')}")
        return receipt

    def deploy(self, account, name: str, *args) -> str:
        a = artifact(name)
        data = (
            self.w3.eth.contract(abi=a["abi"], bytecode=a["bytecode"])
            .constructor(*args)
            .build_transaction(
                {
                    "from": account.address,
                    "gas": 15_000_000,
                    "nonce": 0,
                    "gasPrice": 0,
                    "chainId": 1,
                }
            )["data"]
        )
        return self.send(account, {"data": data})["contractAddress"]

    def call(self, account, to: str, abi: list[dict], fn: str, *args) -> dict:
        data = self.w3.eth.contract(address=to, abi=abi).encode_abi(fn, args)
        return self.send(account, {"to": to, "data": data})

    def warp(self, t: int) -> None:
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [t])
        self.w3.provider.make_request("evm_mine", [])


def signed(account, payload: bytes) -> bytes:
    return Account.sign_message(encode_defunct(keccak(payload)), account.key).signature


def main() -> int:
    anvil = subprocess.Popen(
        [
            str(ROOT / "node_modules" / ".bin" / "anvil"),
            "--port",
            "0",
            "--timestamp",
            str(1764000000 + 43200),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for line in anvil.stdout:
            found = re.search(rb"Listening on ([0-9.]+):(\d+)", line)
            if found:
                url = f"http://{found[1].decode()}:{found[2].decode()}"
                break
        return measure(Chain(url))
    finally:
        anvil.terminate()
        anvil.wait()


def measure(chain: Chain) -> int:
    w3 = chain.w3
    keys = (0xA0, 0xA11CE, 0xB0B)
    owner, provider, user = (Account.from_key(k.to_bytes(32, "big")) for k in keys)
    for account in (owner, provider, user):
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    erc20 = artifact("MorpheusToken")["abi"]
    token = chain.deploy(owner, "MorpheusToken", 100_000_000 * MOR)
    cuts = []
    for facet in artifact("deployment")["facets"]:
        cuts.append(
            (chain.deploy(owner, facet["name"]), [bytes.fromhex(s[2:]) for s in facet["selectors"]])
        )
    diamond = chain.deploy(owner, "Diamond", owner.address, cuts)
    abi = chain.abi
    pools = [(3456 * MOR, 592558728240000000, START, 86400)] * 4
    pools.append((576 * MOR, 98759788040000000, START, 86400))
    chain.call(owner, diamond, abi, "__Marketplace_init", token, 10**10, 10**16)
    chain.call(owner, diamond, abi, "__SessionRouter_init", owner.address, 7 * 86400, pools)
    chain.call(owner, diamond, abi, "setMarketplaceBidFee", MOR // 10)
    chain.call(owner, diamond, abi, "providerSetMinStake", MOR // 5)
    chain.call(owner, diamond, abi, "modelSetMinStake", MOR // 10)
    chain.call(owner, token, erc20, "approve", diamond, 2**256 - 1)
    chain.call(owner, token, erc20, "transfer", provider.address, 1000 * MOR)
    chain.call(owner, token, erc20, "transfer", user.address, 10_000 * MOR)
    chain.call(provider, token, erc20, "approve", diamond, 2**256 - 1)
    chain.call(user, token, erc20, "approve", diamond, 2**256 - 1)
    base = keccak(b"llama")
    chain.call(
        owner,
        diamond,
        abi,
        "modelRegister",
        owner.address,
        base,
        b"\0" * 32,
        0,
        MOR // 10,
        "llama",
        ["llm"],
    )
    d = w3.eth.contract(address=diamond, abi=abi)
    model = d.functions.getModelId(owner.address, base).call()
    chain.call(
        provider, diamond, abi, "providerRegister", provider.address, 100 * MOR, "127.0.0.1:3333"
    )
    chain.call(provider, diamond, abi, "postModelBid", provider.address, model, PRICE)
    bid = d.functions.getBidId(provider.address, model, 0).call()
    amount = 114 * MOR  # about an hour at 0.0001 MOR/s with the mainnet pools

    def open_session() -> tuple[bytes, dict]:
        now = w3.eth.get_block("latest")["timestamp"]
        approval = encode(
            ["bytes32", "uint256", "address", "uint128"], [bid, w3.eth.chain_id, user.address, now]
        )
        sig = signed(provider, approval)
        tx = chain.call(
            user, diamond, abi, "openSession", user.address, amount, False, approval, sig
        )
        events = d.events.SessionOpened().process_receipt(tx, errors=DISCARD)
        return events[0]["args"]["sessionId"], tx

    def close_session(session_id: bytes, signer) -> dict:
        now = w3.eth.get_block("latest")["timestamp"] + 1
        receipt = encode(
            ["bytes32", "uint256", "uint128", "uint32", "uint32"],
            [session_id, w3.eth.chain_id, now, 15000, 250],
        )
        return chain.call(user, diamond, abi, "closeSession", receipt, signed(signer, receipt))

    gas = {}
    for round_ in (1, 2):
        session_id, opened = open_session()
        chain.warp(d.functions.getSession(session_id).call()[7] + 1)
        closed = close_session(session_id, provider)
        gas = {"open": opened["gasUsed"], "close": closed["gasUsed"]}
        print(f"round {round_}: openSession {gas['open']:,}, natural closeSession {gas['close']:,}")
    total, reference = gas["open"] + gas["close"], REFERENCE["open"] + REFERENCE["close"]
    share = 100 * total / reference
    print(f"steady state: {total:,} gas = {share:.1f} % of the reference's {reference:,}")

    # the other operations, steady state (reference: 442,346 / 393,310 / 100,993 / 52,639)
    early, _ = open_session()
    chain.warp(w3.eth.get_block("latest")["timestamp"] + 600)
    print(f"closeSession, early (provider receipt): {close_session(early, provider)['gasUsed']:,}")
    disputed, _ = open_session()
    chain.warp(w3.eth.get_block("latest")["timestamp"] + 600)
    print(
        f"closeSession, early dispute (user receipt): {close_session(disputed, user)['gasUsed']:,}"
    )
    now = w3.eth.get_block("latest")["timestamp"]
    chain.warp(now - now % 86400 + 86400 + 60)
    claimed = chain.call(provider, diamond, abi, "claimForProvider", disputed)
    print(f"claimForProvider, the held pay the next day: {claimed['gasUsed']:,}")
    withdrawn = chain.call(user, diamond, abi, "withdrawUserStakes", user.address, 1)
    print(f"withdrawUserStakes, one entry: {withdrawn['gasUsed']:,}")
    return 0 if 2 * total < reference else 1


if __name__ == "__main__":
    sys.exit(main())
