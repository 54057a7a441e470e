"""Where a sandbox keeps its files: one directory per sandbox, 0700, its files 0600 (they are
its accounts' keys, chain state and logs; see `mor_workbench._private_files`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mor_workbench._home import HOME_ENV, workbench_home

__all__ = ["HOME_ENV", "SandboxPaths", "workbench_home"]


@dataclass(frozen=True)
class SandboxPaths:
    root: Path

    @classmethod
    def default(cls) -> SandboxPaths:
        return cls(workbench_home() / "sandbox")

    @property
    def info(self) -> Path:  # present while the daemon runs: pid, RPC URL, addresses
        return self.root / "sandbox.json"

    @property
    def deployment(self) -> Path:  # the marketplace's addresses in the saved chain
        return self.root / "deployment.json"

    @property
    def accounts(self) -> Path:  # the sandbox's private keys (mode 0600)
        return self.root / "accounts.json"

    @property
    def chain_state(self) -> Path:
        return self.root / "chain-state.json"

    @property
    def backend(self) -> Path:  # the user's model server behind the providers, if chosen
        return self.root / "backend.json"

    @property
    def ports(self) -> Path:  # the chain's and the providers' ports, reused by the next start
        return self.root / "ports.json"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def anvil_log(self) -> Path:
        return self.root / "anvil.log"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"
