"""mor-workbench: the Morpheus inference marketplace from Python and Jupyter.

import mor_workbench as mor
wb = mor.connect("sandbox")
wb.models()
"""

from mor_workbench.errors import (
    ChainError,
    ConfigurationError,
    ContractReverted,
    InsufficientFunds,
    ModelNotFound,
    MorError,
    NoProviderAvailable,
    ProviderError,
    ProviderStalled,
    RequestError,
    RequestRejected,
    RequestTooLarge,
    SandboxError,
    SessionExpired,
)
from mor_workbench.router.strategy import Strategy
from mor_workbench.session import AsyncChatStream, AsyncSession, ChatStream, Session, StreamPart
from mor_workbench.workbench import AsyncWorkbench, Workbench, aconnect, connect

__version__ = "0.1.0"

__all__ = [
    "AsyncChatStream",
    "AsyncSession",
    "AsyncWorkbench",
    "ChainError",
    "ChatStream",
    "ConfigurationError",
    "ContractReverted",
    "InsufficientFunds",
    "ModelNotFound",
    "MorError",
    "NoProviderAvailable",
    "ProviderError",
    "ProviderStalled",
    "RequestError",
    "RequestRejected",
    "RequestTooLarge",
    "SandboxError",
    "Session",
    "SessionExpired",
    "Strategy",
    "StreamPart",
    "Workbench",
    "aconnect",
    "connect",
]


def __getattr__(name: str) -> object:
    """`mor.plots` and `mor.widgets` load on first use (plotly and anywidget are not needed to
    chat)."""
    if name in ("plots", "widgets"):
        import importlib

        return importlib.import_module(f"mor_workbench.{name}")
    raise AttributeError(f"module 'mor_workbench' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext mor_workbench`: the `%mor` and `%%mor` magics (see `%mor help`)."""
    from mor_workbench.magic import load_ipython_extension as load

    load(ipython)
