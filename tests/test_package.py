"""The package itself: importing it is cheap and works where the dev sandbox cannot (no fcntl,
as on Windows); the sandbox loads only when one is asked for."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "eth_account", "openai", "web3", "plotly", "anywidget", "fcntl")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_loads_nothing_heavy() -> None:
    probe = _python(
        "import sys, mor_workbench as mor\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('mor_workbench')))"
    )
    assert probe.returncode == 0, probe.stderr
    heavy, ours = probe.stdout.splitlines()
    assert heavy == "[]"
    assert ours == (
        "['mor_workbench', 'mor_workbench._version', 'mor_workbench.budget', "
        "'mor_workbench.errors']"
    )


def test_every_surface_imports_without_fcntl() -> None:
    """fcntl is POSIX-only: without it the workbench, the magics, LangChain and serve still
    import, and the sandbox is not loaded by any of them."""
    probe = _python(
        "import sys\n"
        "sys.modules['fcntl'] = None  # what `import fcntl` finds on Windows: ImportError\n"
        "import mor_workbench as mor\n"
        "mor.connect, mor.Workbench, mor.Session, mor.Strategy, mor.StreamPart\n"
        "import mor_workbench.magic, mor_workbench.langchain, mor_workbench.serve\n"
        "import mor_workbench.router.journal\n"
        "print(any(m.startswith('mor_workbench.sandbox') for m in sys.modules))"
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "False"
