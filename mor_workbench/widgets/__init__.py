"""Jupyter widgets for the marketplace, on anywidget: `Explorer`, `Chat`, `Sessions`, `Compare`.

    import mor_workbench as mor
    from mor_workbench.widgets import Chat
    wb = mor.connect("sandbox")
    Chat(wb, model="llama-3.3-70b")

Each widget runs its work on the workbench's background loop, so cells return at once and
the widget fills in live; a one-line status and error say what is slow or what failed.
The front-end sources (ES modules and CSS) are in the repository's top-level `widgets/`;
the wheel ships them as `static/` next to this file.
"""

from mor_workbench.widgets.chat import Chat
from mor_workbench.widgets.compare import Compare
from mor_workbench.widgets.explorer import Explorer
from mor_workbench.widgets.sessions import Sessions

__all__ = ["Chat", "Compare", "Explorer", "Sessions"]
