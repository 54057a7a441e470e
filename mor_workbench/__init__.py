"""mor-workbench: the Morpheus inference marketplace from Python and Jupyter.

import mor_workbench as mor
wb = mor.connect("sandbox")
wb.models()
"""

from mor_workbench._version import __version__ as __version__

# `mor.budget(...)` is the function, not the module of the same name: imported eagerly (it
# needs only the standard library and the errors) so the name is bound to it once and for all
from mor_workbench.budget import Budget, budget
from mor_workbench.errors import (
    BudgetExceeded,
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

# The rest loads on first use (PEP 562), so `import mor_workbench` stays cheap and portable:
# web3's account stack, pandas and the openai types arrive with `mor.connect`, plotly with
# `mor.plots`, anywidget with `mor.widgets`, the sandbox (and fcntl) only when one is asked for.
_LAZY = {
    "AsyncChatStream": "mor_workbench.session",
    "AsyncSession": "mor_workbench.session",
    "Network": "mor_workbench.chain.networks",
    "ChatStream": "mor_workbench.session",
    "Session": "mor_workbench.session",
    "StreamPart": "mor_workbench.session",
    "Strategy": "mor_workbench.router.strategy",
    "AsyncWorkbench": "mor_workbench.workbench",
    "Workbench": "mor_workbench.workbench",
    "aconnect": "mor_workbench.workbench",
    "connect": "mor_workbench.workbench",
}
_SUBMODULES = ("plots", "widgets")

__all__ = [
    "AsyncChatStream",
    "AsyncSession",
    "AsyncWorkbench",
    "Budget",
    "BudgetExceeded",
    "ChainError",
    "ChatStream",
    "ConfigurationError",
    "ContractReverted",
    "InsufficientFunds",
    "ModelNotFound",
    "MorError",
    "Network",
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
    "budget",
    "connect",
]


def __getattr__(name: str) -> object:
    """The public names above, and `mor.plots` / `mor.widgets`, imported on first use."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"mor_workbench.{name}")
    raise AttributeError(f"module 'mor_workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext mor_workbench`: the `%mor` and `%%mor` magics (see `%mor help`)."""
    from mor_workbench.magic import load_ipython_extension as load

    load(ipython)
