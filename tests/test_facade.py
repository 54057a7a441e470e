"""The façade offers every verb the surfaces need, on both twins: what can be closed, close
one session, withdraw what is released, the chain's clock, and a session's model, provider
and end."""

from __future__ import annotations

import pytest

import mor_workbench as mor

MODEL = "llama-3.3-70b"


def test_a_session_is_closed_by_its_id_through_the_facade(wb) -> None:
    session = wb.open_session(MODEL, duration="5m")
    assert session.model == MODEL and session.provider.startswith("0x")
    assert session.ends_at.timestamp() > wb.chain_time()
    assert session.id in wb.closable()
    assert wb.close_session(session.id) is True  # the provider's receipt
    assert session.id not in wb.closable()
    closed = wb.sessions().set_index("id").loc[session.id]
    assert not closed["is_active"]


def test_a_session_of_another_account_cannot_be_closed_here(wb) -> None:
    with pytest.raises(mor.ConfigurationError, match="was not opened by this account"):
        wb.close_session("0x" + "ab" * 32)


def test_the_chain_clock_and_withdraw(wb) -> None:
    before = wb.chain_time()
    wb.open_session(MODEL, duration="5m").close()  # mines blocks
    assert wb.chain_time() >= before > 0
    assert wb.withdraw() >= 0.0
    assert wb.balance()["mor_on_hold_available"] == 0.0  # what was released came back


def test_the_workbench_holds_one_backend_and_never_asks_which(wb, monkeypatch) -> None:
    """Gateway or marketplace is one `Backend` behind the façade: the verbs delegate to it."""
    from mor_workbench.backends import GatewayBackend, MarketplaceBackend
    from mor_workbench.router.gateway import Gateway

    assert isinstance(wb.aio.backend, MarketplaceBackend)
    cards = wb._portal.run(wb.aio.model_cards())
    assert {c["id"] for c in cards} >= {"llama-3.3-70b"} and all(
        c["object"] == "model" for c in cards
    )
    gateway = GatewayBackend(Gateway("sk-test", base_url="http://127.0.0.1:9/v1"))
    assert gateway.closable() == [] and gateway.describe() == "gateway http://127.0.0.1:9/v1"
    with pytest.raises(mor.ConfigurationError, match="gateway holds them"):
        gateway.router  # noqa: B018
