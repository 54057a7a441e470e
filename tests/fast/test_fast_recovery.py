"""Recovery of every journal state in milliseconds: a router that "dies" at a step (a
`Crash` raised where tests/crash_router.py sends SIGKILL, its journal rows owned by a process
that is gone) and the next router's `recover()` on the same journal and the real chain
(mirrors tests/test_crash_recovery.py and the recovery tests of tests/test_money_safety.py,
which run a child process per crash)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router import journal as journal_module
from mor_workbench.router.router import APPROVAL_TTL_S, Router
from mor_workbench.router.states import SessionEvent

MODEL = "llama-3.3-70b"
GONE = "1-a-process-that-died"  # the owner of the dead router's journal rows: no lock held


class Crash(BaseException):
    """The process died here: nothing in the router catches a BaseException."""


async def holdings(router: Router) -> int:
    """The consumer's MOR: wallet plus stakes on hold (wei)."""
    token = router.chain.deployment.token
    wallet = await router.chain.call("balanceOf", router.signer.address, to=token)
    available, hold = await router.chain.call("getUserStakesOnHold", router.signer.address, 255)
    return wallet + available + hold


def _crash_on_transact(router: Router, function: str) -> None:
    """Die just before `function`'s transaction is sent."""
    transact = router.chain.transact

    async def dying(signer, fn, *args, **kwargs):
        if fn == function:
            raise Crash(fn)
        return await transact(signer, fn, *args, **kwargs)

    router.chain.transact = dying  # type: ignore[method-assign]


def _crash_on_event(router: Router, event: SessionEvent) -> None:
    """Die just before the journal records `event` (its transaction already mined)."""
    transition = router.journal.transition

    def dying(approval_hash, happened, **changes):
        if happened == event:
            raise Crash(str(event))
        return transition(approval_hash, happened, **changes)

    router.journal.transition = dying  # type: ignore[method-assign]


CRASHES: dict[str, Callable[[Router], None]] = {
    "opening": lambda r: _crash_on_transact(r, "openSession"),  # journaled, nothing sent
    "opened": lambda r: _crash_on_event(r, SessionEvent.OPENED),  # mined, journal: opening
    "open": lambda r: None,  # opened and journaled, never closed
    "closing": lambda r: _crash_on_transact(r, "closeSession"),  # journal: closing
}


@pytest.fixture
async def crashed(market, make_router, providers, monkeypatch):
    """`crash(step)`: run a router until it dies at `step` (see CRASHES), its journal rows a
    dead process's; returns the next router, on the same journal. Each has a chain client of
    its own, as a process has its own nonce cache."""
    clients: list[RpcClient] = []

    def router_of_its_own() -> Router:
        clients.append(RpcClient(market.rpc_url))
        return make_router(on=Chain(clients[-1], market.deployment))

    async def crash(step: str) -> Router:
        earlier = router_of_its_own()
        with monkeypatch.context() as patch:
            patch.setattr(journal_module, "_PROCESS", GONE)
            CRASHES[step](earlier)
            if step == "open":
                await earlier.open(MODEL, 600)
            else:
                with pytest.raises(Crash):
                    await earlier.close(await earlier.open(MODEL, 600))
        await earlier.drain()  # the dead process's housekeeping dies with it
        earlier.journal.close()
        return router_of_its_own()

    yield crash
    for rpc in clients:
        await rpc.aclose()


async def _warp(router: Router, seconds: int) -> None:
    await router.chain.rpc.request("evm_increaseTime", [seconds])
    await router.chain.rpc.request("evm_mine", [])


def _states(router: Router) -> list[str]:
    return [e.state for e in router.journal.all()]


@pytest.mark.parametrize("step", ["opened", "open", "closing"])
async def test_a_session_left_at_each_step_is_closed_and_no_mor_is_lost(
    step, crashed, make_router
) -> None:
    before = await holdings(make_router())
    later = await crashed(step)
    (left,) = later.journal.all()
    assert left.state == {"opened": "opening", "open": "open", "closing": "closing"}[step]
    assert left.tx_hash  # the open's hash was journaled before it was sent
    done = await later.recover()
    assert (done["found"], done["closed"]) == (1 if step == "opened" else 0, 1)
    assert _states(later) == ["closed"]
    (entry,) = later.journal.all()
    closed = await later.chain.call("getSession", bytes.fromhex(entry.session_id[2:]))
    assert closed["closedAt"] and closed["closeoutType"] == 0  # the provider's receipt
    assert await holdings(later) == before
    assert (await later.recover())["closed"] == 0  # nothing left to do


async def test_an_open_never_sent_is_kept_until_its_approval_expires(crashed, make_router) -> None:
    before = await holdings(make_router())
    later = await crashed("opening")
    (entry,) = later.journal.all()
    assert entry.state == "opening" and not entry.tx_hash and entry.session_id is None
    assert (await later.recover())["abandoned"] == 0  # the approval could still be used
    assert _states(later) == ["opening"]
    await _warp(later, APPROVAL_TTL_S + 1)
    assert (await later.recover())["abandoned"] == 1
    assert _states(later) == ["abandoned"] and later.journal.unfinished() == []
    assert await holdings(later) == before


async def test_a_session_of_a_live_process_is_left_to_it(make_router, providers) -> None:
    """Another notebook on the same account still runs: its sessions are its own to close."""
    live = make_router()
    session = await live.open(MODEL, 600)
    done = await make_router().recover()
    assert done["closed"] == 0 and _states(live) == ["open"]
    assert not (await live.chain.call("getSession", session.session_id))["closedAt"]
    await live.drain()


async def test_recovery_closes_a_session_a_chain_rollback_reopened(
    make_router, providers, market
) -> None:
    first = make_router()
    session = await first.open(MODEL, 600)
    snapshot = await first.chain.rpc.request("evm_snapshot", [])
    assert await first.close(session) is True
    assert _states(first) == ["closed"]
    assert await first.chain.rpc.request("evm_revert", [snapshot])  # the close is undone
    await first.drain()
    rpc = RpcClient(market.rpc_url)  # the next start, with a fresh nonce
    try:
        later = make_router(on=Chain(rpc, market.deployment))
        assert (await later.recover())["reopened"] == 1
        assert (await later.chain.call("getSession", session.session_id))["closedAt"]
        assert _states(later) == ["closed"]
        assert (await later.recover())["reopened"] == 0
    finally:
        await rpc.aclose()
