"""The router keeps what each provider attested for its open sessions only: a `serve` process
running for weeks opens and closes sessions without end, and kept one entry per session it
ever opened. A closed session's attestation is answered as documented: closed, not unknown."""

from __future__ import annotations

import pytest

import mor_workbench as mor
from mor_workbench.router.attestation import attestation_for

MODEL = "llama-3.3-70b"
CYCLES = 4


def test_attestations_of_closed_sessions_are_dropped(wb: mor.Workbench) -> None:
    router = wb.aio.router
    for cycle in range(CYCLES):
        session = wb.open_session(MODEL, duration="5m")
        assert wb.attestation(session) == attestation_for(["llm"])
        assert session.info()["attestation"] == "not a tee model"
        assert set(router.attestations) == {session.aio.opened.session_id}
        if cycle % 2:
            session.close()
        else:
            assert wb.close_all() == 1
        assert router.attestations == {}
        with pytest.raises(mor.ConfigurationError, match=r"is closed: .* while it holds them open"):
            wb.attestation(session)
        assert session.info()["attestation"] == "session closed: reported while it is open"


def test_a_session_closed_by_another_workbench_drops_its_attestation(
    wb: mor.Workbench, sandbox_info
) -> None:
    session = wb.open_session(MODEL, duration="5m")
    other = mor.connect("sandbox", sandbox_dir=sandbox_info.directory)  # the same journal
    try:
        assert other.close_all() == 1
    finally:
        other.close()
    assert wb.closable() == []  # the opener finds the session closed
    assert wb.aio.router.attestations == {}
    with pytest.raises(mor.ConfigurationError, match="is closed"):
        wb.attestation(session.id)


def test_a_session_no_workbench_here_opened_is_still_refused(wb: mor.Workbench) -> None:
    with pytest.raises(mor.ConfigurationError, match="not opened by this workbench"):
        wb.attestation("0x" + "ab" * 32)
