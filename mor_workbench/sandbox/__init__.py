"""The sandbox: a local Morpheus marketplace (anvil + our contracts) that outlives notebooks.

`start()` attaches to this user's running sandbox or launches one in the background (with
`backend=URL`, the user's own OpenAI-compatible model server answers instead of the simulated
models); `status()`, `stop()` and `reset()` manage it. Pass `directory=` for an isolated sandbox.
`reattach()` finds it again for a client whose chain stopped answering (a restart).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from mor_workbench._private_files import private_dir, private_file
from mor_workbench.chain.anvil import stop_leftover
from mor_workbench.chain.client import Deployment
from mor_workbench.chain.keys import Signer
from mor_workbench.errors import ConfigurationError, SandboxError
from mor_workbench.sandbox.backend import (
    SIMULATED,
    Backend,
    load_backend,
    resolve_backend,
    save_backend,
)
from mor_workbench.sandbox.paths import SandboxPaths

__all__ = ["Backend", "SandboxInfo", "reattach", "reset", "start", "status", "stop"]

SANDBOX_CHAIN_ID = 31337


@dataclass(frozen=True)
class SandboxInfo:
    """A running sandbox: its RPC URL, deployment and daemon, and the model server behind its
    providers (`backend`: the user's own, or None for the simulated models)."""

    rpc_url: str
    deployment: Deployment
    pid: int
    directory: Path
    backend: Backend | None = None

    def signer(self, role: str = "consumer") -> Signer:
        """A sandbox account: "consumer", "owner" or "provider:<name>"."""
        keys = json.loads(SandboxPaths(self.directory).accounts.read_text())
        if role.startswith("provider:"):
            name = role.split(":", 1)[1]
            if name not in keys["providers"]:
                raise SandboxError(f"no sandbox provider {name!r}: use {sorted(keys['providers'])}")
            return Signer(keys["providers"][name])
        if role not in ("consumer", "owner"):
            raise SandboxError(
                f"unknown sandbox account {role!r}: use consumer, owner or provider:NAME"
            )
        return Signer(keys[role])

    def provider_names(self) -> list[str]:
        return sorted(json.loads(SandboxPaths(self.directory).accounts.read_text())["providers"])


def _paths(directory: str | os.PathLike[str] | None) -> SandboxPaths:
    return SandboxPaths(Path(directory)) if directory is not None else SandboxPaths.default()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    try:
        reply = httpx.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=2.0,
        )
        return int(reply.json()["result"], 16) == SANDBOX_CHAIN_ID
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def _read_info(paths: SandboxPaths) -> SandboxInfo | None:
    try:
        raw = json.loads(paths.info.read_text())
    except (FileNotFoundError, ValueError):
        return None
    deployment = Deployment(raw["chain_id"], raw["diamond"], raw["token"], raw["multicall"])
    backend = Backend(**raw["backend"]) if raw.get("backend") else None
    return SandboxInfo(raw["rpc_url"], deployment, raw["pid"], paths.root, backend)


@contextlib.contextmanager
def _locked(paths: SandboxPaths) -> Iterator[None]:
    """Serialise start/stop across processes (two kernels starting at once get one sandbox)."""
    private_dir(paths.root)  # keys, chain state and logs: the owner's only (0700, files 0600)
    with open(private_file(paths.lock), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def status(directory: str | os.PathLike[str] | None = None) -> SandboxInfo | None:
    """The running sandbox, or None when none is running."""
    paths = _paths(directory)
    info = _read_info(paths)
    if info is None or not _alive(info.pid) or not _answers(info.rpc_url):
        return None
    return info


def start(
    directory: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 60.0,
    backend: str | None = None,
    backend_model: str | None = None,
) -> SandboxInfo:
    """Attach to the running sandbox, or start one in the background and wait until it is ready
    (`timeout` in seconds).

    `backend`: the OpenAI base URL of the user's own model server (Ollama, llama.cpp, vLLM; e.g.
    http://127.0.0.1:11434/v1; its key, if any, in `$MOR_SANDBOX_BACKEND_KEY`) to answer for
    every sandbox model instead of the simulated ones, or "simulated" to go back to them.
    `backend_model`: the model name sent to it (default: the first its GET /models lists). The
    choice is saved, so later starts keep it; a running sandbox with another choice restarts
    (its chain, accounts and ports are kept). None keeps the saved choice.

    Raises `ConfigurationError` when the backend cannot be used (before anything starts) and
    `SandboxError` when the sandbox does not come up."""
    paths = _paths(directory)
    chosen: Backend | None = None
    if backend is None and backend_model is not None:
        saved = load_backend(paths.backend)
        if saved is None:
            raise ConfigurationError(
                "backend_model needs a backend: pass backend='http://…/v1' (--backend URL) too"
            )
        backend = saved.base_url
    if backend is not None and backend != SIMULATED:
        chosen = resolve_backend(backend, backend_model)
    with _locked(paths):
        if backend is not None and chosen != load_backend(paths.backend):
            _stop_daemon(paths)
            save_backend(paths.backend, chosen)
        running = status(paths.root)
        if running is not None:
            return running
        stale = _read_info(paths)
        if stale is not None and _alive(stale.pid):
            _terminate(stale.pid)
        paths.info.unlink(missing_ok=True)
        with open(private_file(paths.root / "daemon.out"), "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mor_workbench.sandbox.daemon", "--dir", str(paths.root)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = _read_info(paths)
            if info is not None and info.pid == process.pid:
                return info
            if process.poll() is not None:
                raise SandboxError(f"the sandbox failed to start: {_last_error(paths)}")
            time.sleep(0.05)
        _terminate(process.pid)
        raise SandboxError(
            f"the sandbox did not come up within {timeout:.0f} s; see {paths.daemon_log}"
        )


def _last_error(paths: SandboxPaths) -> str:
    for log in (paths.daemon_log, paths.root / "daemon.out"):
        if log.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "Error" in ln or "ERROR" in ln]
            if errors:
                return errors[-1].strip()
    return f"no log; see {paths.root}"


def _terminate(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reattach(directory: str | os.PathLike[str] | None, deployment: Deployment) -> list[str]:
    """The RPC URLs of the running sandbox in `directory`, for a client on `deployment` whose
    chain stopped answering (the sandbox was restarted, maybe on another port).

    Raises `SandboxError` when the sandbox is down (naming the command that starts it) or was
    reset since (its marketplace is a new one)."""
    paths = _paths(directory)
    info = status(paths.root)
    if info is None:
        where = "" if paths == SandboxPaths.default() else f" --dir {paths.root}"
        argument = "" if not where else f", sandbox_dir={str(paths.root)!r}"
        raise SandboxError(
            f"the sandbox is not running: start it with `mor-workbench sandbox start{where}` "
            f"(or mor.connect('sandbox'{argument})) and this workbench carries on"
        )
    if info.deployment != deployment:
        raise SandboxError(
            "the sandbox was reset since this workbench connected (its marketplace is new): "
            "connect again with mor.connect('sandbox')"
        )
    return [info.rpc_url]


def stop(directory: str | os.PathLike[str] | None = None) -> bool:
    """Stop the sandbox (its chain state is kept for the next start), and a chain its killed
    daemon left running; False if neither was running. `SandboxError` if a process that is
    not this sandbox's chain holds its state."""
    paths = _paths(directory)
    with _locked(paths):
        return _stop_daemon(paths)


def _stop_daemon(paths: SandboxPaths) -> bool:
    """`stop()`, for a caller holding the lock."""
    info = _read_info(paths)
    stopped = info is not None and _alive(info.pid)
    if stopped:
        _terminate(info.pid)
    paths.info.unlink(missing_ok=True)
    return stop_leftover(paths.chain_state) or stopped


def reset(directory: str | os.PathLike[str] | None = None) -> None:
    """Stop the sandbox and delete its chain and accounts: the next start deploys afresh."""
    paths = _paths(directory)
    stop(paths.root)
    shutil.rmtree(paths.root, ignore_errors=True)
