"""The live day-lock rule on the sandbox contracts (Morpheus-Lumerin-Node #833/#835), seen from
the router: a session that runs to its end and is closed on its end day gets back only the
unused part of its stake; the used part, as stake, is on hold (getUserStakesOnHold) until the
next UTC midnight, and a withdraw after it returns the rest. Each test has a sandbox of its own
(the chain's clock is moved)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mor_workbench as mor
from mor_workbench import sandbox

DAY = 86_400


@pytest.fixture
def wb(tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    sandbox.start(tmp_path / "sandbox")
    workbench = mor.connect("sandbox", sandbox_dir=tmp_path / "sandbox")
    # the test closes and withdraws itself: no background close or withdrawal in between
    workbench.aio.router.housekeeping_s = 3_600
    yield workbench
    workbench.close()
    sandbox.reset(tmp_path / "sandbox")


def _call(wb: mor.Workbench, name: str, *args, **options):
    return wb._portal.run(wb.aio.chain.call(name, *args, **options))


def _warp(wb: mor.Workbench, timestamp: int) -> None:
    """Move the chain's clock to `timestamp` (evm_increaseTime) and mine a block there."""
    rpc = wb.aio.chain.rpc
    now = wb._portal.run(wb.aio.chain.block_timestamp())
    wb._portal.run(rpc.request("evm_increaseTime", [timestamp - now]))
    wb._portal.run(rpc.request("evm_mine", []))


def _mor_wei(wb: mor.Workbench) -> int:
    return _call(wb, "balanceOf", wb.address, to=wb.aio.chain.deployment.token)


def _on_hold(wb: mor.Workbench) -> tuple[int, int]:
    available, hold = _call(wb, "getUserStakesOnHold", wb.address, 255)
    return available, hold


@pytest.mark.parametrize("direct_payment", [False, True], ids=["staking", "direct-payment"])
def test_a_natural_close_holds_the_used_stake_until_the_next_utc_day(wb, direct_payment) -> None:
    session = wb.open_session("llama-3.3-70b", duration="5m", direct_payment=direct_payment)
    assert session.chat("hi")
    sid = bytes.fromhex(session.id[2:])
    opened = _call(wb, "getSession", sid)
    price = _call(wb, "getBid", opened["bidId"])["pricePerSecond"]
    stake, opened_at, ends_at = opened["stake"], opened["openedAt"], opened["endsAt"]
    assert opened["isDirectPaymentFromUser"] == direct_payment

    _warp(wb, ends_at + 1)  # ran its whole length; closed right after, on its end day
    # the live rule: the stipend used on the day the session stopped (since that day's
    # midnight or the open), as stake, capped by what the user gets back, held to midnight;
    # converted at the rate of the close (read before it: paying the provider moves the rate)
    end_day = ends_at - ends_at % DAY
    earned = (ends_at - opened_at) * price
    refund = stake - (earned if direct_payment else 0)
    used = (ends_at - max(opened_at, end_day)) * price
    expected_hold = min(refund, _call(wb, "stipendToStake", used, end_day))
    assert expected_hold > 0
    before_close = _mor_wei(wb)
    held_before = sum(_on_hold(wb))
    session.close()
    closed = _call(wb, "getSession", sid)
    assert closed["closedAt"] != 0 and closed["closeoutType"] == 0  # the provider's receipt
    assert end_day <= closed["closedAt"] < end_day + DAY

    available, hold = _on_hold(wb)
    assert available == 0, "nothing released before the next UTC midnight"
    assert hold - held_before == expected_hold
    back_now = _mor_wei(wb) - before_close
    assert back_now == refund - expected_hold, "only the unused part comes back in the close"
    assert wb.balance()["mor_on_hold"] == pytest.approx(hold / 1e18)

    # before midnight there is nothing to withdraw; after it, the rest comes back
    assert wb._portal.run(wb.aio.router.withdraw_released()) == 0
    _warp(wb, end_day + DAY + 60)
    available, hold = _on_hold(wb)
    assert available == expected_hold and hold == 0
    assert wb._portal.run(wb.aio.router.withdraw_released()) == expected_hold
    assert _mor_wei(wb) - before_close == refund, "everything owed is back after the next day"
    assert _on_hold(wb) == (0, 0)
