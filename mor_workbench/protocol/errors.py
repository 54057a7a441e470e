"""Protocol errors: ours to send (local) or the peer's fault (remote), like h11. Defined in
`mor_workbench.errors` with the rest of the tree; re-exported here for the protocol's users."""

from __future__ import annotations

from mor_workbench.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]
