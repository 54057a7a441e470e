"""The router on the sandbox: rank, open with the best provider, stream, close, journal."""

from __future__ import annotations

import dataclasses

import pytest

from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router.journal import SessionJournal
from mor_workbench.router.router import Router
from mor_workbench.sandbox.market import PROVIDERS


@pytest.fixture
async def router(sandbox_info, tmp_path):
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    yield Router(
        chain, sandbox_info.signer("consumer"), SessionJournal(tmp_path / "journal.sqlite3")
    )
    await chain.rpc.aclose()


async def test_ranking_follows_the_score_of_each_bid(router) -> None:
    ranked = await router.rank("llama-3.3-70b")
    assert len(ranked) == len(PROVIDERS)
    assert [b.score.score for b in ranked] == sorted((b.score.score for b in ranked), reverse=True)
    for bid in ranked:  # the score is the weighted stats divided by the price in MOR/s
        assert bid.score.score == pytest.approx(bid.score.raw / (bid.price_per_second / 1e18))
        assert 0 <= bid.score.raw <= 1
    endpoints = {b.endpoint for b in ranked}
    assert len(endpoints) == len(PROVIDERS) and all(":" in e for e in endpoints)


async def test_open_stream_close_is_journaled_and_undisputed(router) -> None:
    session = await router.open("llama-3.3-70b", 600)
    entry = router.journal.get(session.approval_hash)
    assert entry.state == "open" and entry.session_id == "0x" + session.session_id.hex()
    on_chain = await router.chain.call("getSession", session.session_id)
    assert on_chain["isActive"] and on_chain["endsAt"] - on_chain["openedAt"] >= 600
    body = {
        "model": "llama-3.3-70b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    chunks = [c async for c in router.stream(session, body)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    assert await router.close(session) is True
    assert router.journal.get(session.approval_hash).state == "closed"
    closed = await router.chain.call("getSession", session.session_id)
    assert closed["closedAt"] and closed["closeoutType"] == 0


async def test_a_stale_endpoint_is_re_read_from_chain_before_any_dispute(router) -> None:
    """A provider restarted elsewhere (a sandbox restart, a moved host) still signs the
    receipt: the endpoint it registers on chain is asked before the consumer disputes."""
    session = await router.open("llama-3.3-70b", 600)
    moved = dataclasses.replace(session, endpoint="127.0.0.1:9")  # where it listened before
    assert await router.close(moved) is True
    closed = await router.chain.call("getSession", session.session_id)
    assert closed["closedAt"] and closed["closeoutType"] == 0  # the provider's receipt
    assert router.journal.unfinished() == []


async def test_close_falls_back_to_a_dispute_when_the_provider_cannot_sign(router) -> None:
    session = await router.open("llama-3.3-70b", 600)
    # a receipt from the registered endpoint fails verification against this key
    impostor = dataclasses.replace(
        session, endpoint="127.0.0.1:9", provider_pubkey=router.signer.public_key_65
    )
    assert await router.close(impostor) is False
    closed = await router.chain.call("getSession", session.session_id)
    assert closed["closedAt"] and closed["closeoutType"] == 1
    assert router.journal.unfinished() == []


async def test_close_all_closes_what_the_journal_holds(router) -> None:
    first = await router.open("llama-3.3-70b", 600)
    second = await router.open("qwen3-235b", 600)
    assert await router.close_all() == 2
    for s in (first, second):
        assert (await router.chain.call("getSession", s.session_id))["closedAt"]


async def test_recovery_sets_aside_sessions_of_another_chain_with_the_same_id(
    router, tmp_path
) -> None:
    """A sandbox reset leaves journal rows for sessions of a chain that is gone; the chain now
    answering has the same id but not those sessions: recovery drops them, once."""
    import sqlite3

    opened = await router.open("llama-3.3-70b", 600)
    await router.close(opened)
    entry = router.journal.by_session("0x" + opened.session_id.hex())
    gone = dataclasses.replace(
        entry, approval_hash="0x" + "ee" * 32, session_id="0x" + "ab" * 32, state="open"
    )
    router.journal.record(gone)
    db = sqlite3.connect(router.journal.path)  # as written by a process that has since died
    with db:
        db.execute(
            "UPDATE sessions SET owner = '1-dead' WHERE approval_hash = ?", (gone.approval_hash,)
        )
    db.close()
    done = await router.recover()
    assert done["abandoned"] == 1 and done["closed"] == 0
    assert router.journal.get(gone.approval_hash).state == "abandoned"
    assert (await router.recover())["abandoned"] == 0
