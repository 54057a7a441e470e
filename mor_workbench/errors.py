"""The exception hierarchy: every error mor-workbench raises derives from `MorError`.

Messages are one line that says what was wrong and how to fix it; they never contain a key.
"""

from __future__ import annotations


class MorError(Exception):
    """Root of every mor-workbench error, so callers can catch one type."""


class ConfigurationError(MorError, ValueError):
    """The caller gave bad input: an unknown network, a malformed address or key, a missing tool."""


class RequestTooLarge(ConfigurationError):
    """The request cannot reach any provider: its MOR-RPC message would exceed the peer limit.

    `size` and `limit` are in bytes. Raised before any session is opened or paid for.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"the request is {size / 1024:,.0f} KiB as a MOR-RPC message, over the "
            f"{limit / 1024:,.0f} KiB a provider accepts: shorten the prompt (encrypted prompts "
            "take about twice their length)"
        )


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


class ProviderError(MorError):
    """A provider refused or failed a request; the message is the provider's own.

    `retryable` is False when the request itself was at fault (another provider would refuse
    it too), so the router reports it instead of failing over.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SessionExpired(ProviderError):
    """The session ended (its time ran out or it was closed): open a new one."""


class InsufficientFunds(MorError):
    """The account holds too little MOR (or ETH for gas) for what was asked; amounts in wei."""

    def __init__(self, token: str, needed: int, available: int, what: str) -> None:
        self.token, self.needed, self.available = token, needed, available
        super().__init__(
            f"{what} needs {needed / 1e18:.6g} {token} but the account holds "
            f"{available / 1e18:.6g} {token}: fund the account or ask for a shorter session"
        )
