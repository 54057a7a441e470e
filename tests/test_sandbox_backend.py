"""Real answers offline: the user's own OpenAI-compatible server behind the sandbox's providers
(`sandbox start --backend URL`, issue 13 item 3). The simulated model server, run as its own
process with its own model name and key, stands in for the user's Ollama or llama.cpp."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import mor_workbench as mor
from mor_workbench import sandbox
from mor_workbench.sandbox.backend import BACKEND_KEY_ENV, Backend

USERS_MODEL = "my-local-model"
USERS_KEY = "sk-users-own-server"


@pytest.fixture(scope="module")
def users_server() -> Iterator[str]:
    """The user's model server: its OpenAI base URL (…/v1)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mor_workbench.sandbox.model_server",
            "--model",
            USERS_MODEL,
            "--model",
            "another-model",
            "--profile",
            "instant",
            "--api-key",
            USERS_KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _direct(base_url: str, model: str, prompt: str, **params: object) -> str:
    """What the user's server answers when asked directly (the openai client, its key)."""
    client = openai.OpenAI(base_url=base_url, api_key=USERS_KEY)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], **params
    )
    return reply.choices[0].message.content or ""


@pytest.fixture(scope="module")
def key_in_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BACKEND_KEY_ENV, USERS_KEY)
        yield


@pytest.fixture(scope="module")
def box(tmp_path_factory, users_server: str, key_in_environment: None) -> Iterator[Path]:
    """An isolated sandbox whose providers forward to the user's server."""
    directory = tmp_path_factory.mktemp("backend-sandbox")
    sandbox.start(directory, backend=users_server)
    try:
        yield directory
    finally:
        sandbox.reset(directory)


def test_sandbox_models_are_answered_by_the_users_server(box: Path, users_server: str) -> None:
    info = sandbox.status(box)
    assert info is not None
    # no --backend-model: the first model the server lists
    assert info.backend == Backend(users_server, USERS_MODEL)
    with mor.connect("sandbox", sandbox_dir=box) as wb:
        reply = wb.complete(
            [{"role": "user", "content": "Say hello"}], model="llama-3.3-70b", max_tokens=20
        )
        # the answer is what the user's server says to its own model (it requires its key,
        # and its text depends on the model it was asked for); the client sees the name it
        # asked for, never the backend's own
        assert reply.model == "llama-3.3-70b"
        assert reply.choices[0].message.content == _direct(
            users_server, USERS_MODEL, "Say hello", max_tokens=20
        )
        assert reply.morpheus["cost_mor"] >= 0


def test_status_says_which_server_answers(box: Path, users_server: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mor_workbench.cli", "sandbox", "status", "--dir", str(box)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"answered by your server: {USERS_MODEL} at {users_server}" in out


def test_a_restart_keeps_the_choice_and_simulated_goes_back(box: Path, users_server: str) -> None:
    assert sandbox.stop(box)
    restarted = sandbox.start(box)
    assert restarted.backend == Backend(users_server, USERS_MODEL)
    chosen = sandbox.start(box, backend=users_server, backend_model="another-model")
    assert chosen.pid != restarted.pid and chosen.backend == Backend(users_server, "another-model")
    with mor.connect("sandbox", sandbox_dir=box) as wb:
        reply = wb.complete([{"role": "user", "content": "Hi"}], model="mistral-31-24b")
        assert reply.choices[0].message.content == _direct(users_server, "another-model", "Hi")
    back = sandbox.start(box, backend="simulated")
    assert back.backend is None
    with mor.connect("sandbox", sandbox_dir=box) as wb:
        reply = wb.complete([{"role": "user", "content": "Hi"}], model="mistral-31-24b")
        assert reply.choices[0].message.content != _direct(users_server, "another-model", "Hi")


@pytest.mark.parametrize(
    ("backend", "model", "message"),
    [
        ("localhost:11434", None, r"is not a URL: give the server's OpenAI base URL"),
        ("http://127.0.0.1:9/v1", None, r"does not answer .*start your model server"),
        ("{server}", "llama3.2:1b", r"has no model 'llama3.2:1b': use one of my-local-model"),
        ("{server}/../..", None, r"did not list models .*usually ends in /v1"),
    ],
)
def test_a_backend_that_cannot_serve_is_refused_before_anything_starts(
    tmp_path: Path, users_server: str, key_in_environment: None, backend, model, message
) -> None:
    with pytest.raises(mor.ConfigurationError, match=message):
        sandbox.start(tmp_path, backend=backend.format(server=users_server), backend_model=model)
    assert not (tmp_path / "sandbox.json").exists() and not (tmp_path / "backend.json").exists()


def test_a_backend_that_refuses_the_key_names_the_variable(
    tmp_path: Path, users_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_KEY_ENV, raising=False)
    with pytest.raises(mor.ConfigurationError, match=rf"refused .*set \${BACKEND_KEY_ENV}"):
        sandbox.start(tmp_path, backend=users_server)
