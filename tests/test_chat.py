"""The public API on the sandbox: chat, stream, sessions as context managers, auto-close."""

from __future__ import annotations

import time

import pytest

import mor_workbench as mor
from mor_workbench.sandbox.market import PROVIDERS
from mor_workbench.sandbox.model_server.profiles import PROFILES
from mor_workbench.session import parse_duration


@pytest.fixture
def wb(sandbox_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path))  # this test's own session journal
    workbench = mor.connect("sandbox", sandbox_dir=sandbox_dir)
    yield workbench
    workbench.close()


def test_chat_opens_then_reuses_a_session_and_close_settles_it(wb, sandbox_dir) -> None:
    first = wb.chat("Hello", model="llama-3.3-70b")
    assert isinstance(first, str) and first
    session = wb.aio._sessions["llama-3.3-70b"]
    deltas = list(wb.stream("Tell me more", model="llama-3.3-70b", max_tokens=5))
    assert deltas and len("".join(deltas).split()) <= 5
    assert wb.aio._sessions["llama-3.3-70b"] is session  # reused, not reopened
    wb.close()  # closes the sessions this workbench opened
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as again:
        row = again.sessions().set_index("id").loc[session.id]
        assert not row["is_active"] and row["closed_at"] is not None


def test_session_context_manager(wb) -> None:
    with wb.open_session("qwen3-235b", duration="6m") as session:
        assert session.info()["model"] == "qwen3-235b"
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
            ro.open_session("llama-3.3-70b")
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
    session = wb.open_session("mistral-31-24b", duration="6m")
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


def test_too_little_mor_is_a_typed_error_with_the_amounts(wb, sandbox_dir) -> None:
    from eth_account import Account

    poor = Account.create()
    wb._portal.run(wb.aio.chain.rpc.request("anvil_setBalance", [poor.address, hex(10**20)]))
    with (
        mor.connect("sandbox", sandbox_dir=sandbox_dir, key=poor.key.hex()) as broke,
        pytest.raises(mor.InsufficientFunds) as caught,
    ):
        broke.open_session("llama-3.3-70b", duration="10m")
    error = caught.value
    assert error.token == "MOR" and error.available == 0 and error.needed > 0
    assert "fund the account" in str(error) and poor.key.hex()[2:] not in str(error)
    assert wb.sessions(poor.address).empty  # nothing was opened on chain


def test_complete_returns_an_openai_chat_completion_with_usage_and_metadata(wb) -> None:
    from openai.types.chat import ChatCompletion

    messages = [{"role": "user", "content": "What's the weather in Lisbon?"}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    called = wb.complete(messages, model="llama-3.3-70b", tools=tools, tool_choice="required")
    assert isinstance(called, ChatCompletion)
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in call.function.arguments
    plain = wb.complete(messages, model="llama-3.3-70b", max_tokens=7, seed=3)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 7
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 7
    info = plain.morpheus
    assert info["provider"] == wb.aio._sessions["llama-3.3-70b"].provider
    assert info["session_id"] == wb.aio._sessions["llama-3.3-70b"].id
    assert info["cost_mor"] > 0 and info["failovers"] == []
    with pytest.raises(mor.ConfigurationError, match="use stream"):
        wb.complete(messages, model="llama-3.3-70b", stream=True)


def test_a_stream_reports_usage_and_how_it_went(wb) -> None:
    stream = wb.stream("Count the rivers", model="mistral-31-24b", max_tokens=6)
    text = "".join(stream)
    assert text == stream.text
    assert stream.usage["completion_tokens"] == 6
    assert stream.usage["total_tokens"] == stream.usage["prompt_tokens"] + 6
    info = stream.info
    assert info["ttft_s"] > 0 and info["tokens_per_s"] > 0 and info["e2e_s"] >= info["ttft_s"]
    # a stream's speed is over the generation: first token to last
    assert info["streamed"] is True and info["tokens_per_s_basis"] == "generation"
    generation_s = info["e2e_s"] - info["ttft_s"]
    assert info["tokens_per_s"] == pytest.approx(info["completion_tokens"] / generation_s)


def test_a_completion_reports_its_speed_end_to_end_and_no_ttft(wb) -> None:
    """A non-streamed answer arrives all at once: there is no first token to time, and its
    speed is over the whole call (it used to be 45,000-195,000 tokens/s, with a TTFT equal
    to the whole call)."""
    messages = [{"role": "user", "content": "Describe a harbor."}]
    info = wb.complete(messages, model="llama-3.3-70b", max_tokens=20).morpheus
    assert info["streamed"] is False and info["ttft_s"] is None
    assert info["tokens_per_s_basis"] == "end_to_end"
    assert info["completion_tokens"] == 20
    assert info["tokens_per_s"] == pytest.approx(info["completion_tokens"] / info["e2e_s"])
    # no faster than the sandbox's fastest simulated model can generate
    fastest = max((PROFILES[p.profile] for p in PROVIDERS), key=lambda p: p.tokens_per_second)
    assert info["tokens_per_s"] <= fastest.tokens_per_second / (1 - fastest.jitter)


def test_twenty_concurrent_chats_on_three_providers(wb) -> None:
    import asyncio

    bids = wb.bids("llama-3.3-70b")
    sessions = [wb.open_session("llama-3.3-70b", duration="6m", bid=b) for b in bids["id"]]
    assert len({s.info()["provider"] for s in sessions}) == 3
    prompts = [f"Question number {i}: what is a router?" for i in range(20)]

    async def ask(shift: int) -> list[str]:
        return await asyncio.gather(
            *(sessions[(i + shift) % 3].aio.chat(p) for i, p in enumerate(prompts))
        )

    answers = wb._portal.run(ask(0))
    assert all(answers) and len(set(answers)) == 20  # each its own answer, none crossed
    again = wb._portal.run(ask(1))  # the same prompts, each on another provider
    assert again == answers
    for session in sessions:
        session.close()


def test_concurrent_calls_share_one_automatic_session(wb) -> None:
    import asyncio

    async def ask() -> list[str]:
        return await asyncio.gather(
            *(wb.aio.chat(f"hello {i}", model="gpt-oss-120b", max_tokens=3) for i in range(10))
        )

    assert all(wb._portal.run(ask()))
    assert len(wb.aio.router.opened) == 1


def test_sessions_are_closed_at_interpreter_exit(wb, sandbox_dir, tmp_path) -> None:
    script = (
        "import mor_workbench as mor\n"
        f"wb = mor.connect('sandbox', sandbox_dir={str(sandbox_dir)!r})\n"
        "wb.chat('hi', model='qwen3-235b', max_tokens=2)\n"
        "print(wb.aio._sessions['qwen3-235b'].id)\n"  # and exit without closing
    )
    import os
    import subprocess
    import sys

    env = {**os.environ, "MOR_WORKBENCH_HOME": str(tmp_path / "child")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    row = wb.sessions().set_index("id").loc[done.stdout.strip()]
    assert not row["is_active"] and row["closeout_type"] == 0


def test_direct_payment_session_lasts_the_duration_asked_and_pays_the_provider(wb) -> None:
    before = wb.balance()
    with wb.open_session("llama-3.3-70b", duration="2h", direct_payment=True) as session:
        assert session.chat("Hello")
        row = wb.sessions().set_index("id").loc[session.id]
        assert row["direct_payment"] and row["is_active"]
        lasts = (row["ends_at"] - row["opened_at"]).total_seconds()
        assert 7200 <= lasts < 7200 * 1.01  # not the few minutes price * duration would buy
        time.sleep(2.1)  # let the chain's clock (whole seconds) run, so the session earns
    row = wb.sessions().set_index("id").loc[session.id]
    assert not row["is_active"]
    after = wb.balance()
    # direct payment: the provider is paid from the deposit, the rest comes back to the user
    used = (row["closed_at"] - row["opened_at"]).total_seconds()
    spent = before["mor"] + before["mor_on_hold"] + before["mor_on_hold_available"]
    spent -= after["mor"] + after["mor_on_hold"] + after["mor_on_hold_available"]
    assert used >= 2 and spent == pytest.approx(row["price_per_second"] * used, rel=1e-6)


def test_a_second_workbench_on_the_same_account_leaves_the_first_ones_sessions_open(
    wb, sandbox_dir
) -> None:
    wb.chat("Hello", model="llama-3.3-70b")
    session = wb.aio._sessions["llama-3.3-70b"]
    with mor.connect("sandbox", sandbox_dir=sandbox_dir) as other:  # e.g. the %mor magic
        assert other.aio.router.opened == {}
        row = other.sessions().set_index("id").loc[session.id]
        assert row["is_active"]  # not settled as if its owner had crashed
    assert wb.chat("Still there?", model="llama-3.3-70b")
    assert wb.aio._sessions["llama-3.3-70b"] is session


def test_the_chat_widgets_footer_says_what_tokens_per_second_is_measured_over() -> None:
    from mor_workbench.readouts import call_footer as footer_text

    streamed = {"provider": "0x" + "ab" * 20, "ttft_s": 0.25, "tokens_per_s": 40.0}
    line = footer_text({**streamed, "tokens_per_s_basis": "generation"})
    assert "TTFT 0.25 s" in line and "40.0 tokens/s (generation)" in line
    whole = {"provider": "0x" + "ab" * 20, "ttft_s": None, "tokens_per_s": 12.5}
    line = footer_text({**whole, "tokens_per_s_basis": "end_to_end"})
    assert "TTFT" not in line and "12.5 tokens/s (end to end)" in line
