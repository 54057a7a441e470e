"""Our errors in notebooks: one line (type, message, how to see more) instead of the frames of
the workbench's private event loop; `%tb` still shows everything; other errors are untouched.
Run in a real IPython shell and a real Jupyter kernel, on the sandbox."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import mor_workbench as mor

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MISTAKE = 'wb.open_session("llama-3.3-70b", duration="60s")'  # under the contract's 5 minutes
LOOP_FRAMES = ("anyio", "asyncio", "concurrent/futures", "_portal.py")


def shown(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The non-blank lines the shell printed since the last call, without colours."""
    out, err = capsys.readouterr()
    return [line for line in ANSI.sub("", out + err).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def shell(sandbox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real IPython shell whose namespace holds `wb`, a workbench on the shared sandbox."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOR_WORKBENCH_HOME", str(tmp_path_factory.mktemp("errors-home")))
        ip = InteractiveShell.instance()
        ip.user_ns["wb"] = mor.connect("sandbox", sandbox_dir=sandbox_dir)
        yield ip
        ip.user_ns.pop("wb").close()


def test_a_user_mistake_shows_one_line_and_no_event_loop_frames(shell, capsys) -> None:
    capsys.readouterr()
    result = shell.run_cell(MISTAKE)
    assert isinstance(result.error_in_exec, mor.ConfigurationError)
    lines = shown(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ConfigurationError: a session of 60 s is too short")
    assert lines[0].endswith("(%tb for the full traceback)")
    assert not any(frame in lines[0] for frame in LOOP_FRAMES)


def test_tb_shows_the_full_traceback_of_our_error(shell, capsys) -> None:
    shell.run_cell(MISTAKE)
    capsys.readouterr()
    shell.run_cell("%tb")
    full = "\n".join(shown(capsys))
    assert "Traceback" in full and "check_duration" in full  # where it was raised
    assert "ConfigurationError: a session of 60 s is too short" in full


def test_a_multi_line_message_is_folded_onto_one_line() -> None:
    error = mor.SandboxError("the sandbox did not start:\n  port 8545 in use")
    (line,) = error._render_traceback_()
    expected = "SandboxError: the sandbox did not start: port 8545 in use"
    assert ANSI.sub("", line).startswith(expected)


def test_other_exceptions_keep_their_full_traceback(shell, capsys) -> None:
    capsys.readouterr()
    result = shell.run_cell("def inner():\n    return 1 / 0\n\ninner()")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    full = "\n".join(shown(capsys))
    assert "Traceback" in full and "inner()" in full and "return 1 / 0" in full


def test_through_a_real_kernel(sandbox_dir: Path, tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "MOR_WORKBENCH_HOME": str(tmp_path)}
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    try:

        def execute(code: str) -> dict[str, Any]:
            return kc.execute_interactive(code, output_hook=lambda _: None, timeout=300)["content"]

        reply = execute(
            "import mor_workbench as mor\n"
            f"wb = mor.connect('sandbox', sandbox_dir={str(sandbox_dir)!r})"
        )
        assert reply["status"] == "ok", reply
        reply = execute(MISTAKE)
        assert reply["status"] == "error" and reply["ename"] == "ConfigurationError"
        (line,) = reply["traceback"]
        assert ANSI.sub("", line).startswith("ConfigurationError: a session of 60 s is too short")
        reply = execute("[][1]")
        assert reply["ename"] == "IndexError" and len(reply["traceback"]) > 1
        execute("wb.close()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
