"""Protocol errors: ours to send (local) or the peer's fault (remote), like h11."""

from __future__ import annotations

from mor_workbench.errors import MorError

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(MorError):
    """A MOR-RPC message could not be built, parsed, verified or decrypted."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, unsigned, forged, stale or too large."""
