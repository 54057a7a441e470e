"""The processes a sandbox runs, found from /proc (Linux), for the soak test and the chaos
bench: a daemon killed by SIGKILL must not leave its anvil running on the chain state."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from mor_workbench.sandbox.paths import SandboxPaths

__all__ = ["anvil_processes", "kill_pids", "orphans"]


def _parent(pid: int) -> int:
    """The parent of process `pid` (0 once it is gone)."""
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def anvil_processes(directory: Path) -> dict[int, list[int]]:
    """The processes running anvil on this sandbox's chain state (npm's launcher and the
    binary it starts): pid -> its ancestors, nearest first."""
    state = str(SandboxPaths(directory).chain_state).encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if state in argv:
            ancestors, pid = [], _parent(int(proc.name))
            while pid > 1:
                ancestors.append(pid)
                pid = _parent(pid)
            found[int(proc.name)] = ancestors
    return found


def orphans(directory: Path, daemon: int | None) -> list[int]:
    """The anvil processes on this sandbox's chain state that `daemon` did not start."""
    return [pid for pid, up in anvil_processes(directory).items() if daemon not in up]


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each of these processes (ones this program started) that still runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
