"""The sandbox: a real anvil with our contracts, seeded, attachable, persistent and resettable."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.chain import listings
from mor_workbench.sandbox.market import MODELS, PROVIDERS
from mor_workbench.sandbox.paths import SandboxPaths


@pytest.fixture(scope="module")
def wb(sandbox_dir: Path):
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as workbench:
        yield workbench


def test_models_table_lists_every_seeded_model(wb) -> None:
    frame = wb.models()
    assert list(frame.columns[:7]) == [
        "name",
        "id_short",
        "tags",
        "fee",
        "stake",
        "owner_short",
        "created_at",
    ]
    assert sorted(frame["name"]) == sorted(m.name for m in MODELS)
    assert dict(zip(frame["name"], frame["tags"], strict=True)) == {
        m.name: list(m.tags) for m in MODELS
    }
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype)
    assert all(i.startswith("0x") and len(i) == 66 for i in frame["id"])
    assert (frame["stake"] == frame["stake_wei"].map(lambda w: w / 10**18)).all()


def test_bids_table_has_one_bid_per_provider_and_model(wb) -> None:
    frame = wb.bids()
    assert len(frame) == len(MODELS) * len(PROVIDERS)
    for model in MODELS:
        prices = sorted(frame.loc[frame["model"] == model.name, "price_per_second_wei"])
        expected = sorted(int(model.base_price_per_second * p.price_factor) for p in PROVIDERS)
        assert prices == expected
    assert (frame["price_per_hour"] - frame["price_per_second"] * 3600).abs().max() < 1e-9
    one = wb.bids(MODELS[0].name)
    assert set(one["model"]) == {MODELS[0].name} and len(one) == len(PROVIDERS)
    assert one["price_per_second"].is_monotonic_increasing
    by_id = wb.bids(one["model_id"].iloc[0])
    assert list(by_id["id"]) == list(one["id"])
    # one model's bids carry their score and its parts (price divides the weighted parts)
    parts = ["score_tps", "score_ttft", "score_duration", "score_success", "score_stake"]
    assert ((one[parts] >= 0) & (one[parts] <= 1)).all().all()
    expected = one["score_raw"] / one["price_per_second"]
    assert ((one["score"] - expected).abs() <= 1e-9 * expected).all()
    assert frame["score"].notna().all()  # every model's bids are scored, not only one's


def test_unknown_model_names_the_choices(wb) -> None:
    with pytest.raises(mor.ConfigurationError, match=r"no active model 'gpt-9'.*llama"):
        wb.bids("gpt-9")


def test_providers_table(wb) -> None:
    frame = wb.providers()
    assert len(frame) == len(PROVIDERS)
    assert frame["is_active"].all()
    assert set(frame["address"]) == set(wb.bids()["provider"])
    assert sorted(frame["stake"]) == sorted(spec.stake / 10**18 for spec in PROVIDERS)


def test_sessions_and_stats_tables(wb) -> None:
    sessions = wb.sessions()
    assert list(sessions.columns[:13]) == [
        "id_short",
        "model",
        "provider_short",
        "stake",
        "opened_at",
        "ends_at",
        "closed_at",
        "is_active",
        "direct_payment",
        "id",
        "user",
        "provider",
        "bid_id",
    ]
    assert (sessions["user"] == wb.address).all()  # other tests may have opened some
    assert wb.sessions("0x" + "12" * 20).empty
    stats = wb.stats()
    assert len(stats) == len(MODELS) * len(PROVIDERS)
    assert (stats["total_count"] >= stats["success_count"]).all()


def test_listings_page_through_long_results(wb, monkeypatch: pytest.MonkeyPatch) -> None:
    full = wb.bids()
    monkeypatch.setattr(listings, "PAGE", 2)
    paged = wb.bids()
    pd.testing.assert_frame_equal(paged, full)


def test_attach_reuses_the_running_sandbox(sandbox_dir: Path, sandbox_info) -> None:
    again = sandbox.start(sandbox_dir)
    assert again.pid == sandbox_info.pid and again.rpc_url == sandbox_info.rpc_url


def test_cli_status(sandbox_dir: Path, sandbox_info) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mor_workbench.cli", "sandbox", "status", "--dir", str(sandbox_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sandbox_info.rpc_url in out and sandbox_info.deployment.diamond in out


def test_sandbox_keys_are_private(sandbox_dir: Path, sandbox_info) -> None:
    accounts = SandboxPaths(sandbox_dir).accounts
    assert accounts.stat().st_mode & 0o077 == 0
    consumer = sandbox_info.signer("consumer")
    assert consumer.private_key_bytes().hex() not in repr(sandbox_info)


def test_stop_start_keeps_the_chain_and_reset_starts_afresh(tmp_path: Path) -> None:
    first = sandbox.start(tmp_path)
    with mor.connect("sandbox", sandbox_dir=tmp_path) as wb:
        models_before = wb.models()
    assert sandbox.stop(tmp_path)
    assert sandbox.status(tmp_path) is None
    assert not sandbox.stop(tmp_path)
    second = sandbox.start(tmp_path)
    assert second.pid != first.pid
    assert second.deployment == first.deployment
    with mor.connect("sandbox", sandbox_dir=tmp_path) as wb:
        pd.testing.assert_frame_equal(wb.models(), models_before)
    sandbox.reset(tmp_path)
    assert not tmp_path.exists()
    third = sandbox.start(tmp_path)
    try:
        assert third.deployment.diamond != first.deployment.diamond or (
            third.signer("consumer").address != first.signer("consumer").address
        )
    finally:
        sandbox.reset(tmp_path)


def test_concurrent_starts_share_one_sandbox(tmp_path: Path) -> None:
    found: list[sandbox.SandboxInfo] = []
    threads = [
        threading.Thread(target=lambda: found.append(sandbox.start(tmp_path))) for _ in range(3)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({info.pid for info in found}) == 1
    finally:
        sandbox.reset(tmp_path)


def test_every_provider_answers_at_its_registered_endpoint(wb, sandbox_info) -> None:
    import asyncio
    import os

    from mor_workbench.protocol import PingReq, PongRes, Request, sign, verify
    from mor_workbench.router.transport import call_once

    key = sandbox_info.signer("consumer").private_key_bytes()
    for row in wb.providers().itertuples():
        nonce = os.urandom(8)
        (reply,) = asyncio.run(
            call_once(row.endpoint, Request("1", sign(PingReq(nonce), key)), PongRes)
        )
        verify(reply.result, address=row.address)
        assert reply.result.nonce == nonce
