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
from mor_workbench.workbench import AsyncWorkbench, Workbench, aconnect, connect

__version__ = "0.1.0"

__all__ = [
    "AsyncWorkbench",
    "ChainError",
    "ConfigurationError",
    "ContractReverted",
    "MorError",
    "SandboxError",
    "Workbench",
    "aconnect",
    "connect",
]
