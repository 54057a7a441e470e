"""The exception hierarchy: every error mor-workbench raises derives from `MorError`.

Messages are one line that says what was wrong and how to fix it; they never contain a key.
"""

from __future__ import annotations


class MorError(Exception):
    """Root of every mor-workbench error, so callers can catch one type."""


class ConfigurationError(MorError, ValueError):
    """The caller gave bad input: an unknown network, a malformed address or key, a missing tool."""


class ChainError(MorError):
    """The chain could not be read or written: unreachable RPC, wrong chain, failed transaction."""


class RpcUnavailable(ChainError):
    """No RPC endpoint answered."""


class ContractReverted(ChainError):
    """A contract call or transaction reverted; `error` names the decoded custom error."""

    def __init__(self, message: str, *, error: str | None = None, args: tuple = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


class SandboxError(MorError):
    """The local sandbox marketplace could not be started, attached or managed."""
