"""mor-workbench: the Morpheus inference marketplace from Python and Jupyter.

import mor_workbench as mor
wb = mor.connect("sandbox")
wb.models()
"""

from mor_workbench.errors import (
    ChainError,
    ConfigurationError,
    ContractReverted,
    MorError,
    SandboxError,
)
from mor_workbench.router.peer import ProviderError
from mor_workbench.router.router import NoProviderAvailable
from mor_workbench.session import AsyncSession, Session
from mor_workbench.workbench import AsyncWorkbench, Workbench, aconnect, connect

__version__ = "0.1.0"

__all__ = [
    "AsyncSession",
    "AsyncWorkbench",
    "ChainError",
    "ConfigurationError",
    "ContractReverted",
    "MorError",
    "NoProviderAvailable",
    "ProviderError",
    "SandboxError",
    "Session",
    "Workbench",
    "aconnect",
    "connect",
]
