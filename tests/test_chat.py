"""The public API on the sandbox: chat, stream, sessions as context managers, auto-close."""

from __future__ import annotations

import pytest

import mor_workbench as mor
from mor_workbench.session import parse_duration


@pytest.fixture
def wb(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    workbench.close()


def test_chat_opens_then_reuses_a_session_and_close_settles_it(wb, sandbox_dir) -> None:
    first = wb.chat("Hello", model="llama-3.2")
    assert isinstance(first, str) and first
    session = wb.aio._sessions["llama-3.2"]
    deltas = list(wb.stream("Tell me more", model="llama-3.2", max_tokens=5))
    assert deltas and len("".join(deltas).split()) <= 5
    assert wb.aio._sessions["llama-3.2"] is session  # reused, not reopened
    wb.close()  # closes the sessions this workbench opened
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as again:
        row = again.sessions().set_index("id").loc[session.id]
        assert not row["is_active"] and row["closed_at"] is not None


def test_session_context_manager(wb) -> None:
    with wb.open_session("qwen-2.5-coder", duration="6m") as session:
        assert session.info()["model"] == "qwen-2.5-coder"
        assert session.chat("write a loop", system="You write code.")
        session_id = session.id
    row = wb.sessions().set_index("id").loc[session_id]
    assert not row["is_active"]
    with pytest.raises(mor.ConfigurationError, match="closed"):
        session.chat("again")


def test_read_only_workbench_cannot_open_sessions() -> None:
    from mor_workbench.chain.anvil import Anvil

    node = Anvil(chain_id=84532)
    node.start()
    try:
        with (
            mor.connect("base-sepolia", rpc_url=node.url) as ro,
            pytest.raises(mor.ConfigurationError, match="read-only"),
        ):
            ro.open_session("llama-3.2")
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("value", "seconds"), [(600, 600), ("90s", 90), ("10m", 600), ("2h", 7200)]
)
def test_durations(value, seconds) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("bad", ["soon", -5, "10 minutes", True])
def test_bad_durations_are_named(bad) -> None:
    with pytest.raises(mor.ConfigurationError, match="not understood"):
        parse_duration(bad)


def test_balance_shows_stake_while_open_and_back_after(wb) -> None:
    before = wb.balance()
    session = wb.open_session("mistral-small", duration="6m")
    during = wb.balance()
    assert during["mor_staked"] > 0
    assert during["mor"] == pytest.approx(
        before["mor"] - during["mor_staked"] + before["mor_staked"]
    )
    session.close()
    after = wb.balance()
    assert after["mor_staked"] == pytest.approx(before["mor_staked"])
    # staking mode: the provider is paid from the compute budget; the stake all comes back,
    # part of it on hold until the next UTC midnight
    assert after["mor"] + after["mor_on_hold"] + after["mor_on_hold_available"] == pytest.approx(
        before["mor"] + before["mor_on_hold"] + before["mor_on_hold_available"]
    )
