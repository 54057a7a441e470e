"""Failover in milliseconds: the real router and `run_call` over in-memory providers that
refuse, stall or die (mirrors tests/test_failover.py, whose providers are processes killed
with SIGKILL or frozen with SIGSTOP). The session moves to the next provider and the failed
one is closed on chain."""

from __future__ import annotations

import pytest
from memory_peers import ANSWER, DIE_AFTER_CHUNKS, words

from mor_workbench.errors import NoProviderAvailable
from mor_workbench.router.calls import CallRecord, Lease, run_call

MODEL = "llama-3.3-70b"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me."}], "stream": True}
COOPERATIVE, DISPUTE = 0, 1  # closeoutType: the provider's receipt, or the consumer's own


async def _call(router, record: CallRecord, *, timeout: float = 5.0, **lease) -> str:
    """Open a session on the best provider and run one streamed call; the answer's text."""
    opened = await router.open(MODEL, 600)
    text = ""
    async for payload in run_call(
        router, Lease(MODEL, 600, False, opened, **lease), BODY, record, timeout=timeout
    ):
        text += payload["choices"][0]["delta"].get("content") or ""
    return text


async def _closeout(chain, session_id: str) -> int:
    """How the session was closed on chain (closeoutType); fails when it is still open."""
    raw = await chain.call("getSession", bytes.fromhex(session_id[2:]))
    assert raw["closedAt"], f"session {session_id} is still open"
    return raw["closeoutType"]


def _entry_of(router, provider: str):
    """The journal's one session with `provider`."""
    (entry,) = [e for e in router.journal.all() if e.provider == provider]
    return entry


def _journal_states(router) -> dict[str, str]:
    return {e.provider: e.state for e in router.journal.all()}


async def test_a_provider_dying_mid_stream_is_replaced_and_the_answer_resumed(
    make_router, providers, chain
) -> None:
    first, second = providers["first"], providers["second"]
    first.mode = "die"
    router, record = make_router(), CallRecord(MODEL)
    text = await _call(router, record)
    partial = "".join(words(ANSWER)[:DIE_AFTER_CHUNKS])
    assert text == partial + ANSWER  # what the first said, then the second's continuation
    assert record.resumed and [p for p, _ in record.failovers] == [first.address]
    assert record.provider == second.address
    # the second was asked to continue the first's words, as the start of its answer
    (resumed,) = second.prompts
    assert resumed["messages"][-1] == {"role": "assistant", "content": partial, "prefix": True}
    await router.drain()  # the failed session's background close
    failed = _entry_of(router, first.address)
    assert await _closeout(chain, failed.session_id) == DISPUTE  # its provider is gone
    assert _journal_states(router) == {first.address: "closed", second.address: "open"}


async def test_a_dead_provider_is_skipped_before_any_money_moves(
    make_router, providers, chain
) -> None:
    first, second = providers["first"], providers["second"]
    first.down()
    router, record = make_router(), CallRecord(MODEL)
    assert await _call(router, record) == ANSWER
    assert record.provider == second.address and record.failovers == []
    assert first.address.lower() in router.cooldowns.cooling(60)
    assert first.prompts == [] and list(_journal_states(router)) == [second.address]


async def test_a_stalling_provider_times_out_and_its_session_is_closed(
    make_router, providers, chain
) -> None:
    first, second = providers["first"], providers["second"]
    first.mode = "stall"  # alive (it still signs the close receipt), its answer never comes
    router, record = make_router(), CallRecord(MODEL)
    assert await _call(router, record, timeout=0.2) == ANSWER
    (provider, reason), *more = record.failovers
    assert (provider, more) == (first.address, [])
    assert reason.startswith("no reply within 0.2")
    assert first.stalled.is_set() and record.provider == second.address
    await router.drain()
    stalled = _entry_of(router, first.address)
    assert await _closeout(chain, stalled.session_id) == COOPERATIVE
    assert stalled.state == "closed"


async def test_a_refusing_provider_is_failed_over_and_its_session_closed(
    make_router, providers, chain
) -> None:
    first, second = providers["first"], providers["second"]
    first.mode = "refuse"
    router, record = make_router(), CallRecord(MODEL)
    assert await _call(router, record) == ANSWER
    assert record.failovers == [(first.address, "provider overloaded")]
    assert not record.resumed and record.provider == second.address
    await router.drain()
    refused = _entry_of(router, first.address)
    assert await _closeout(chain, refused.session_id) == COOPERATIVE
    assert router.opened.keys() == {bytes.fromhex(record.session_id[2:])}


async def test_a_failed_session_is_closed_even_when_no_provider_takes_over(
    make_router, providers, chain
) -> None:
    providers["second"].down()
    providers["third"].down()
    providers["first"].mode = "die"
    router, record = make_router(), CallRecord(MODEL)
    with pytest.raises(NoProviderAvailable):
        await _call(router, record)
    (entry,) = router.journal.all()
    await router.drain()
    assert await _closeout(chain, entry.session_id) == DISPUTE
    assert router.opened == {} and router.journal.unfinished() == []


async def test_calls_failing_together_on_one_session_close_it_once(
    make_router, providers, chain, caplog
) -> None:
    """Eight streams on one session whose provider dies mid-answer: each fails over, all to
    one new session (not one session, and one stake, per call), and the failed session is
    closed by one transaction (not one attempt per call, the rest reverting with
    SessionAlreadyClosed and logged as failures)."""
    import asyncio

    first = providers["first"]
    first.mode = "die"
    router = make_router()
    opened = await router.open(MODEL, 600)
    lease = Lease(MODEL, 600, False, opened)

    async def one() -> str:
        text = ""
        async for payload in run_call(router, lease, BODY, CallRecord(MODEL), timeout=5.0):
            text += payload["choices"][0]["delta"].get("content") or ""
        return text

    sent: list[str] = []
    transact = router.chain.transact

    async def counted(signer, function: str, *args, **options):
        sent.append(function)
        return await transact(signer, function, *args, **options)

    router.chain.transact = counted
    with caplog.at_level("WARNING", logger="mor_workbench"):
        answers = await asyncio.gather(*(one() for _ in range(8)))
        await router.drain()
    assert all(a.endswith(ANSWER) for a in answers)
    assert not [r for r in caplog.records if "could not close" in r.getMessage()]
    assert await _closeout(chain, "0x" + opened.session_id.hex()) == DISPUTE
    assert sent.count("closeSession") == 1  # only the failed session, once
    assert sent.count("openSession") == 1  # one replacement, shared by the eight calls
    assert _journal_states(router) == {first.address: "closed", lease.opened.provider: "open"}


async def test_calls_finding_their_session_ended_together_share_one_renewal(
    make_router, providers, chain
) -> None:
    """Five streams on a renewing lease whose session has just ended: one new session for all
    five (the lease moves once), and the ended one is closed once."""
    import asyncio
    import dataclasses
    import time

    router = make_router()
    opened = await router.open(MODEL, 600)
    ended = dataclasses.replace(opened, ends_at=int(time.time()))  # as the clock will have it
    router.opened[opened.session_id] = ended
    lease = Lease(MODEL, 600, False, ended, renew=True)
    sent: list[str] = []
    transact = router.chain.transact

    async def counted(signer, function: str, *args, **options):
        sent.append(function)
        return await transact(signer, function, *args, **options)

    async def one() -> str:
        text = ""
        async for payload in run_call(router, lease, BODY, CallRecord(MODEL), timeout=5.0):
            text += payload["choices"][0]["delta"].get("content") or ""
        return text

    router.chain.transact = counted
    answers = await asyncio.gather(*(one() for _ in range(5)))
    await router.drain()
    assert answers == [ANSWER] * 5
    assert sent.count("openSession") == 1 and sent.count("closeSession") == 1
    assert lease.opened.session_id != opened.session_id
