"""Issue 9, provider side: a provider's view of its sessions follows the chain.

A real provider router on a socket in front of a simulated model server, against the real
contracts on an isolated sandbox chain (this module moves the chain's clock): sessions closed
early free their slot and are no longer served, what a provider remembers per session is
released once the session is settled, and what the contract checks is stamped on the chain's
clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mor_workbench import sandbox
from mor_workbench.chain import listings
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.errors import ProviderError, SessionExpired
from mor_workbench.market import tables
from mor_workbench.protocol import Receipt, decode_receipt
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router import peer
from mor_workbench.sandbox.model_server import ModelServer

MODEL = "llama-3.3-70b"
SLOTS = 2
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def isolated_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sandbox.SandboxInfo]:
    """A sandbox of this module's own: its clock is moved and its provider's sessions counted."""
    directory: Path = tmp_path_factory.mktemp("provider-sessions")
    info = sandbox.start(directory)
    yield info
    sandbox.reset(directory)


@pytest.fixture
async def market(isolated_sandbox) -> AsyncIterator[dict]:
    info = isolated_sandbox
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    provider = info.signer("provider:balanced")
    model_id, _ = await listings.resolve_model(chain, MODEL)
    async with ModelServer([MODEL], profile="fast") as backend:
        config = ModelConfig(
            model_id, MODEL, backend.base_url + "/chat/completions", concurrent_slots=SLOTS
        )
        async with ProviderServer(
            signer=provider, chain=chain, models=[config], claim_interval=None
        ) as server:
            bids = await tables.bids(chain, MODEL)
            bid = bids[bids["provider"] == provider.address].iloc[0]
            market = {
                "chain": chain,
                "server": server,
                "provider": provider,
                "consumer": info.signer("consumer"),
                "bid": bid,
            }
            # Sessions earlier tests left open on this bid hold slots, as they should: close them.
            for session_id in await open_sessions(market):
                await close(market, session_id)
            yield market
    await chain.rpc.aclose()


async def open_sessions(m) -> list[bytes]:
    ids, _ = await m["chain"].call("getProviderSessions", m["provider"].address, 0, 1000)
    sessions = [(i, await m["chain"].call("getSession", i)) for i in ids]
    return [i for i, s in sessions if s["isActive"] and s["user"] == m["consumer"].address]


async def approve(m) -> peer.Approved:
    return await peer.request_approval(
        m["server"].endpoint,
        m["consumer"],
        m["provider"].address,
        bytes.fromhex(m["bid"]["id"][2:]),
        10**18,
        m["chain"].deployment.chain_id,
    )


async def open_session(m) -> tuple[bytes, bytes]:
    """Approval from our provider, then openSession on chain: (session id, provider key)."""
    approved = await approve(m)
    amount = await peer.deposit_for(m["chain"], int(m["bid"]["price_per_second_wei"]), 600)
    return await peer.open_session(m["chain"], m["consumer"], approved, amount), approved.pubkey


async def ask(m, session_id: bytes, provider_key: bytes) -> list:
    return [
        c
        async for c in peer.prompt(
            m["server"].endpoint, m["consumer"], session_id, provider_key, BODY, encrypt=True
        )
    ]


async def close(m, session_id: bytes) -> Receipt:
    """Close with the provider's receipt, as the router does; the receipt."""
    provider_key = m["server"].public_key
    receipt, signature = await peer.report(
        m["server"].endpoint, m["consumer"], session_id, provider_key, m["provider"].address
    )
    await m["chain"].transact(m["consumer"], "closeSession", receipt, signature)
    return decode_receipt(receipt)


async def test_sessions_closed_early_free_their_slot(market) -> None:
    """Issue 9: 32 open/close cycles (one open at a time) filled 32 slots; here 3 x SLOTS
    cycles on SLOTS slots, with and without prompts, must all be approved."""
    for cycle in range(3 * SLOTS):
        session_id, provider_key = await open_session(market)
        if cycle % 2:
            assert await ask(market, session_id, provider_key)
        await close(market, session_id)


async def test_the_sandbox_provider_takes_33_open_close_cycles_on_32_slots(
    market, isolated_sandbox
) -> None:
    """The issue's example as it was seen: the sandbox daemon's own provider (32 slots per
    model) answered "Provider at capacity" after 32 open/close cycles on one bid."""
    endpoint = (await market["chain"].call("getProvider", market["provider"].address))["endpoint"]
    daemon = {**market, "server": _Endpoint(endpoint, market["server"].public_key)}
    for _ in range(33):
        session_id, _ = await open_session(daemon)
        await close(daemon, session_id)


class _Endpoint:
    """The parts of a provider these helpers use, for a provider running elsewhere."""

    def __init__(self, endpoint: str, pubkey: bytes) -> None:
        self.endpoint, self.public_key = endpoint, pubkey


async def test_capacity_counts_sessions_really_open(market) -> None:
    held = [await open_session(market) for _ in range(SLOTS)]
    with pytest.raises(ProviderError, match="Provider at capacity"):
        await open_session(market)
    await close(market, held[0][0])
    freed, _ = await open_session(market)  # the slot the close freed
    for session_id in (held[1][0], freed):
        await close(market, session_id)


async def test_unused_approvals_hold_their_slot(market) -> None:
    """An approval holds a slot until its session opens or the approval expires (10 min)."""
    for _ in range(SLOTS):
        await approve(market)
    with pytest.raises(ProviderError, match="Provider at capacity"):
        await approve(market)


async def test_a_session_closed_on_chain_is_no_longer_served(market) -> None:
    session_id, provider_key = await open_session(market)
    assert await ask(market, session_id, provider_key)
    await close(market, session_id)
    with pytest.raises(SessionExpired, match="Session is closed"):
        await ask(market, session_id, provider_key)


async def test_what_a_provider_keeps_per_session_is_released_once_settled(market) -> None:
    """A provider running for days keeps bounded memory: once its sessions are closed and
    paid, nothing about them is left in its caches."""
    server = market["server"]
    for _ in range(3):
        session_id, provider_key = await open_session(market)
        assert await ask(market, session_id, provider_key)
        receipt = await close(market, session_id)
        assert receipt.output_tokens > 0 and receipt.tps_scaled1000 > 0  # kept while open
    await server.claim_owed()  # a claim round settles what it follows
    capacity = server.capacity
    assert not capacity.open and not capacity.stats and not capacity.owed
    assert not any(capacity.reservations.values())


async def test_receipts_and_approvals_are_stamped_on_the_chain_clock(market) -> None:
    """Issue 9: with the chain a day ahead of the wall clock (anvil after evm_increaseTime, a
    node ahead), the approval must still open a session and the receipt must still close it
    undisputed (it reverted with SessionApproveExpired / SessionReceiptExpired)."""
    chain = market["chain"]
    await chain.rpc.request("evm_increaseTime", [86_400])
    await chain.rpc.request("evm_mine", [])
    session_id, provider_key = await open_session(market)
    assert await ask(market, session_id, provider_key)
    await close(market, session_id)
    closed = await chain.call("getSession", session_id)
    assert closed["closedAt"] and closed["closeoutType"] == 0


async def test_a_claim_round_lets_go_of_a_session_closed_early(market) -> None:
    """A session the claimer already follows (paid at its booked end) and then closed early
    is let go within one round, not kept until the end it booked."""
    server = market["server"]
    session_id, provider_key = await open_session(market)
    assert await ask(market, session_id, provider_key)
    await server.claim_owed()  # follows the open session
    assert session_id in server.capacity.stats
    await close(market, session_id)
    await server.claim_owed()
    assert session_id not in server.capacity.stats and session_id not in server.capacity.open
