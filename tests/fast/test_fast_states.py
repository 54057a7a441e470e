"""The session state machine refuses illegal moves through the router, before any money
moves (router/states.py's table; the journal persists each move). In-memory providers, the
real chain."""

from __future__ import annotations

from mor_workbench.router import router as router_module

MODEL = "llama-3.3-70b"


async def _sent(router) -> int:
    """Transactions the consumer has had mined (its nonce)."""
    count = await router.chain.rpc.request(
        "eth_getTransactionCount", [router.signer.address, "latest"]
    )
    return int(count, 16)


async def test_a_closed_session_cannot_be_closed_again(make_router, providers) -> None:
    router = make_router()
    session = await router.open(MODEL, 600)
    assert await router.close(session) is True
    first = providers["first"]
    sent, asked = await _sent(router), list(first.asked)
    # closed already (by this close, another workbench's, recovery): nothing more to do
    assert await router.close(session) is True
    assert await _sent(router) == sent and first.asked == asked  # no transaction, no receipt
    assert router.journal.get(session.approval_hash).state == "closed"


async def test_a_session_the_chain_rolled_back_is_abandoned_and_never_closed(
    make_router, providers
) -> None:
    """A rollback that undoes the open itself (a sandbox restored from older state): the
    chain does not hold the session, so recovery abandons its row, and a close is refused."""
    router = make_router()
    before_open = await router.chain.rpc.request("evm_snapshot", [])
    session = await router.open(MODEL, 600)
    await router.close(session)
    await router.drain()
    assert await router.chain.rpc.request("evm_revert", [before_open])
    assert (await make_router().recover())["abandoned"] == 1
    assert router.journal.get(session.approval_hash).state == "abandoned"
    sent = await _sent(router)
    assert await router.close(session) is True  # abandoned: nothing to close, nothing sent
    assert await _sent(router) == sent
    assert router.journal.get(session.approval_hash).state == "abandoned"


async def test_the_sessions_housekeeping_ended_are_remembered_within_a_bound(
    make_router, providers, monkeypatch
) -> None:
    """A session housekeeping closed at its end is refused as ended, not merely closed; a
    process that runs for weeks remembers only the latest ones (it kept one id per session it
    ever closed so)."""
    monkeypatch.setattr(router_module, "EXPIRED_KEPT", 2)
    router = make_router()
    sessions = [await router.open(MODEL, 600) for _ in range(3)]
    await router.chain.rpc.request("evm_increaseTime", [601])
    await router.chain.rpc.request("evm_mine", [])
    assert (await router.housekeep())["closed"] == 3
    assert list(router.expired) == [s.session_id for s in sessions[1:]]
