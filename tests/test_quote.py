"""`wb.quote(model, duration=… | tokens=…)`: per bid, what an open moves (to the wei, as the
chain then shows), what a natural close returns and holds, and why a bid is excluded. On the
sandbox: the shared one for reads and one open, one of its own where the clock is moved."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd
import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.market.quote import DAY_S, natural_duration

MODEL = "llama-3.3-70b"


def _call(wb: mor.Workbench, name: str, *args, **options):
    return wb._portal.run(wb.aio.chain.call(name, *args, **options))


def _mor_wei(wb: mor.Workbench) -> int:
    return _call(wb, "balanceOf", wb.address, to=wb.aio.chain.deployment.token)


def _eligible(quote: pd.DataFrame) -> pd.Series:
    rows = quote[~quote["excluded"]]
    assert len(rows), quote[["provider_short", "why"]]
    return rows.iloc[0]


def test_a_quote_is_what_the_open_then_moves_to_the_wei(wb) -> None:
    quote = wb.quote(MODEL, duration="10m")
    assert list(quote.columns[:6]) == [
        "model",
        "provider_short",
        "id_short",
        "price_per_second",
        "duration_s",
        "stake",
    ]
    bids = wb.bids(MODEL).set_index("id")
    assert sorted(quote["id"]) == sorted(bids.index)
    row = _eligible(quote)
    assert row["stake_wei"] > 0 and row["duration_s"] >= 600
    assert row["session_cost_wei"] == row["duration_s"] * round(row["price_per_second"] * 1e18)
    assert row["returned_wei"] + row["held_wei"] == row["stake_wei"]  # staking: all comes back
    assert row["health"] == bids.loc[row["id"], "health"]  # what the provider reports

    before = _mor_wei(wb)
    session = wb.open_session(MODEL, duration="10m", bid=row["id"])
    moved = before - _mor_wei(wb)
    opened = _call(wb, "getSession", bytes.fromhex(session.id[2:]))
    session.close()
    assert moved == row["stake_wei"], "the quote is the stake the open moved, to the wei"
    assert opened["stake"] == row["stake_wei"]
    assert opened["endsAt"] - opened["openedAt"] == row["duration_s"]


def test_tokens_size_the_session_at_the_measured_speed(wb) -> None:
    quote = wb.quote(MODEL, tokens=100_000).set_index("id")
    measured = quote[quote["tps"] > 0]
    assert len(measured), "the sandbox's providers have a service record"
    for _, row in measured.iterrows():
        assert row["duration_s"] >= math.ceil(100_000 / row["tps"])
        assert row["mor_per_1k_tokens"] == pytest.approx(
            1000 * row["price_per_second"] / row["tps"]
        )
    with pytest.raises(mor.ConfigurationError, match="not both"):
        wb.quote(MODEL, duration="10m", tokens=10)
    with pytest.raises(mor.ConfigurationError, match="outside this marketplace's limits"):
        wb.quote(MODEL, duration="1m")


def test_excluded_bids_say_why(sandbox_info, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    with mor.connect("sandbox", sandbox_dir=sandbox_info.directory) as plain:
        bids = plain.bids(MODEL)
        denied = bids["provider"].iloc[0]
        cap = float(bids["price_per_second"].max()) * 0.99  # the dearest bid is over it
        embedding = plain.quote("text-embedding-bge-m3", duration="10m")
    assert embedding["excluded"].all()
    assert embedding["why"].str.startswith("EMBEDDING model").all()
    strategy = {"deny": [denied], "max_price_per_second": cap}
    with mor.connect("sandbox", sandbox_dir=sandbox_info.directory, strategy=strategy) as wb:
        quote = wb.quote(MODEL, duration="10m").set_index("provider")
    assert quote.loc[denied, "why"] == "deny list"
    dearest = bids.loc[bids["price_per_second"].idxmax(), "provider"]
    if dearest != denied:
        assert quote.loc[dearest, "why"].startswith("over the price cap")
    assert quote["excluded"].sum() == len({denied, dearest})
    assert not quote.iloc[0]["excluded"], "eligible bids come first"
    with mor.connect("sandbox", sandbox_dir=sandbox_info.directory, require_tee=True) as tee:
        assert (tee.quote(MODEL, duration="10m")["why"] == "not tagged tee (require_tee)").all()


def test_sessions_sized_without_a_duration_end_at_midnight_when_it_comes_first() -> None:
    midnight = 20_000 * DAY_S
    assert natural_duration(midnight - 400, 600, 300) == 400  # ends at midnight: nothing held
    assert natural_duration(midnight - 200, 600, 300) == 600  # too short to end there
    assert natural_duration(midnight - 5000, 600, 300) == 600
    assert natural_duration(midnight, 600, 300) == 600


@pytest.fixture
def own_wb(tmp_path, monkeypatch) -> Iterator[mor.Workbench]:
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    sandbox.start(tmp_path / "sandbox")
    workbench = mor.connect("sandbox", sandbox_dir=tmp_path / "sandbox")
    workbench.aio.router.housekeeping_s = 3_600  # the test closes itself
    yield workbench
    workbench.close()
    sandbox.reset(tmp_path / "sandbox")


def test_a_natural_close_returns_and_holds_what_the_quote_said(own_wb) -> None:
    wb = own_wb
    rpc = wb.aio.chain.rpc
    now = wb.chain_time()
    # open at 06:00 UTC, so the 5-minute session ends on the day it opened
    target = now - now % DAY_S + DAY_S + 6 * 3600
    wb._portal.run(rpc.request("evm_increaseTime", [target - now]))
    wb._portal.run(rpc.request("evm_mine", []))
    row = _eligible(wb.quote(MODEL, duration="5m"))
    assert row["held_wei"] > 0
    assert row["held_until"] == pd.Timestamp(target - target % DAY_S + DAY_S, unit="s", tz="UTC")
    session = wb.open_session(MODEL, duration="5m", bid=row["id"])
    ends_at = int(session.ends_at.timestamp())
    wb._portal.run(rpc.request("evm_increaseTime", [ends_at + 1 - wb.chain_time()]))
    wb._portal.run(rpc.request("evm_mine", []))
    before = _mor_wei(wb)
    session.close()
    _, hold = _call(wb, "getUserStakesOnHold", wb.address, 255)
    # the rate of stake to stipend moves a little when providers are paid: within a millionth
    assert hold == pytest.approx(row["held_wei"], rel=1e-6)
    assert _mor_wei(wb) - before == pytest.approx(row["returned_wei"], rel=1e-6, abs=1e12)


def test_an_automatic_session_near_midnight_ends_there_and_holds_almost_nothing(own_wb) -> None:
    wb = own_wb
    rpc = wb.aio.chain.rpc
    now = wb.chain_time()
    midnight = now - now % DAY_S + 2 * DAY_S
    wb._portal.run(rpc.request("evm_increaseTime", [midnight - 420 - now]))  # 23:53 UTC
    wb._portal.run(rpc.request("evm_mine", []))
    assert wb.chat("Hello", model=MODEL)
    session = wb.aio._sessions[MODEL]
    ends_at = int(session.ends_at.timestamp())
    assert midnight <= ends_at < midnight + 60, "it ends at midnight, not 10 minutes on"
    stake = _call(wb, "getSession", bytes.fromhex(session.id[2:]))["stake"]
    wb._portal.run(rpc.request("evm_increaseTime", [ends_at + 5 - wb.chain_time()]))
    wb._portal.run(rpc.request("evm_mine", []))
    wb._portal.run(session.close())
    _, hold = _call(wb, "getUserStakesOnHold", wb.address, 255)
    # only the seconds past midnight are held (a same-day session holds nearly all its stake)
    assert hold < stake / 50
