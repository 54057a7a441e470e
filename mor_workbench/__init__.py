"""mor-workbench: the Morpheus inference marketplace from Python and Jupyter."""

__version__ = "0.1.0"
