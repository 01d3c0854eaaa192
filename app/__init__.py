"""Parallax's PyQt6 + pyqtgraph desktop GUI.

Kept import-light: nothing here imports Qt, so ``import app`` is cheap and safe in
headless tools. Start the GUI with :func:`app.gui.run_gui`.
"""

__all__ = ["run_gui"]


def __getattr__(name):
    if name == "run_gui":
        from .gui import run_gui

        return run_gui
    raise AttributeError(f"module 'app' has no attribute {name!r}")
