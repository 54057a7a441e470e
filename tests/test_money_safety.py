"""Money over a long run (issue 9): input is checked before any transaction, opens cost one
transaction, the journal is per deployment, and recovery trusts the chain (its clock, its
transaction receipts, and what a rollback undid)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain.client import Chain
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.router.journal import SessionJournal, journal_path
from mor_workbench.router.router import Router

HERE = Path(__file__).parent
MODEL = "llama-3.3-70b"


def _rpc(wb: mor.Workbench, method: str, *params: object) -> object:
    async def ask() -> object:
        rpc = RpcClient(wb.aio.chain.rpc.urls)
        try:
            return await rpc.request(method, list(params))
        finally:
            await rpc.aclose()

    return asyncio.run(ask())


def _sent(wb: mor.Workbench) -> int:
    """Transactions this workbench's account has had mined (its nonce)."""
    return int(_rpc(wb, "eth_getTransactionCount", wb.address, "latest"), 16)


def _open_sessions(wb: mor.Workbench) -> int:
    return int(wb.sessions()["is_active"].sum())


@pytest.mark.parametrize(
    ("duration", "limit"),
    [("60s", "at least 5 min (300 s)"), ("30d", "caps sessions at 7 days (604800 s)")],
)
def test_a_duration_outside_the_contract_limits_is_refused_before_any_transaction(
    wb, duration, limit
) -> None:
    sent = _sent(wb)
    with pytest.raises(mor.ConfigurationError, match=re.escape(limit)):
        wb.open_session(MODEL, duration=duration)
    assert _sent(wb) == sent  # no approve, no open


def test_a_prompt_too_large_for_any_provider_opens_nothing(wb) -> None:
    sent, opened = _sent(wb), _open_sessions(wb)
    huge = "word " * (300 * 1024)  # 1.5 MB: over the 1 MiB a provider reads
    with pytest.raises(mor.RequestTooLarge, match="KiB a provider accepts") as caught:
        wb.chat(huge, model=MODEL)
    assert caught.value.size > caught.value.limit == 1024 * 1024
    session = wb.open_session(MODEL)
    sent = _sent(wb)
    with pytest.raises(mor.RequestTooLarge):  # nor through a session of one's own
        session.chat(huge)
    session.close()
    assert _sent(wb) == sent + 1  # only the session's own close
    assert _open_sessions(wb) == opened


def test_opens_share_a_standing_allowance_instead_of_an_approve_each(wb) -> None:
    chain, account = wb.aio.chain, wb.aio.account

    async def revoke() -> None:
        spender = Chain(RpcClient(chain.rpc.urls), chain.deployment)
        try:
            token = spender.deployment.token
            await spender.transact(account, "approve", spender.deployment.diamond, 0, to=token)
        finally:
            await spender.rpc.aclose()

    asyncio.run(revoke())
    costs = []
    for _ in range(3):
        sent = _sent(wb)
        wb.open_session(MODEL, duration="5m").close()
        costs.append(_sent(wb) - sent)
    assert costs == [3, 2, 2]  # approve + open + close, then open + close
    allowance = wb.balance()["mor_allowance"]
    assert 0 < allowance < 100  # what is left of the standing 100 MOR


def test_the_journal_is_per_deployment(sandbox_info, tmp_path, monkeypatch) -> None:
    """A second marketplace with the same chain id (a fork, a redeploy, another sandbox) has
    its own journal: it neither sees nor sets aside the first one's sessions."""
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    key = "0x" + sandbox_info.signer("consumer").private_key_bytes().hex()
    other = sandbox.start(tmp_path / "other")
    try:
        assert other.deployment.chain_id == sandbox_info.deployment.chain_id
        first = mor.connect("sandbox", sandbox_dir=sandbox_info.directory, key=key)
        session = first.open_session(MODEL)
        path = journal_path(
            tmp_path / "home" / "journal",
            sandbox_info.deployment.chain_id,
            sandbox_info.deployment.diamond,
            first.address,
        )
        assert SessionJournal(path).by_session(session.id).state == "open"
        mor.connect("sandbox", sandbox_dir=other.directory, key=key).close()
        assert SessionJournal(path).by_session(session.id).state == "open"  # not abandoned
        first.close()
        assert SessionJournal(path).by_session(session.id).state == "closed"
    finally:
        sandbox.reset(other.directory)


# ----- on a sandbox of its own: its clock is moved and its state rolled back -----


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sandbox.SandboxInfo]:
    directory = tmp_path_factory.mktemp("clock")
    yield sandbox.start(directory)
    sandbox.reset(directory)


def _router(info: sandbox.SandboxInfo, journal: Path) -> Router:
    chain = Chain(RpcClient(info.rpc_url), info.deployment)
    return Router(chain, info.signer("consumer"), SessionJournal(journal))


async def _warp(router: Router, seconds: int) -> None:
    await router.chain.rpc.request("evm_increaseTime", [seconds])
    await router.chain.rpc.request("evm_mine", [])


async def test_a_dispute_close_works_when_the_chain_clock_is_ahead(isolated, tmp_path) -> None:
    """closeSession checks the receipt's time against the chain's clock (SIGNATURE_TTL):
    a consumer's receipt stamped with wall-clock time was refused once the chain ran ahead."""
    import dataclasses

    router = _router(isolated, tmp_path / "j.sqlite3")
    try:
        session = await router.open(MODEL, 600)
        await _warp(router, 3600)  # an hour ahead of wall-clock time
        cannot_sign = dataclasses.replace(
            session, endpoint="127.0.0.1:9", provider_pubkey=router.signer.public_key_65
        )
        assert await router.close(cannot_sign) is False
        closed = await router.chain.call("getSession", session.session_id)
        assert closed["closedAt"] and closed["closeoutType"] == 1
    finally:
        await router.chain.rpc.aclose()


def test_an_interrupted_open_is_found_from_its_transaction_after_a_clock_jump(
    isolated, tmp_path
) -> None:
    journal = tmp_path / "j.sqlite3"
    child = subprocess.run(
        [sys.executable, HERE / "crash_router.py", isolated.directory, journal, "opened"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    (entry,) = SessionJournal(journal).all()
    assert entry.state == "opening" and entry.tx_hash  # the hash was written before sending

    async def recover() -> tuple[dict[str, int], list[str]]:
        router = _router(isolated, journal)
        try:
            await _warp(router, 2 * 86400)
            done = await router.recover()
            return done, [e.state for e in router.journal.all()]
        finally:
            await router.chain.rpc.aclose()

    done, states = asyncio.run(recover())
    assert done["found"] == 1 and states == ["closed"]


async def test_recovery_closes_a_session_a_chain_rollback_reopened(isolated, tmp_path) -> None:
    router = _router(isolated, tmp_path / "j.sqlite3")
    try:
        session = await router.open(MODEL, 600)
        snapshot = await router.chain.rpc.request("evm_snapshot", [])
        await router.close(session)
        assert router.journal.unfinished() == []
        assert await router.chain.rpc.request("evm_revert", [snapshot])  # the close is undone
        assert not (await router.chain.call("getSession", session.session_id))["closedAt"]
    finally:
        await router.chain.rpc.aclose()
    later = _router(isolated, tmp_path / "j.sqlite3")  # the next start, with a fresh nonce
    try:
        done = await later.recover()
        assert done["reopened"] == 1
        assert (await later.chain.call("getSession", session.session_id))["closedAt"]
        assert (await later.recover())["reopened"] == 0
    finally:
        await later.chain.rpc.aclose()
