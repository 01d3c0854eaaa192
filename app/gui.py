"""GUI entry point: ``run_gui(path=None, demo=False)`` creates the application and the main window."""
from __future__ import annotations

import gc
import logging
import sys
from typing import Optional


def create_application(argv: Optional[list[str]] = None):
    """The QApplication (reused when one exists), themed and named for QSettings."""
    from PyQt6 import QtWidgets

    from .style import apply_dark_theme

    from PyQt6 import QtCore

    app = QtWidgets.QApplication.instance()
    if app is None:
        # pyqtgraph caches shader programs per item class; windows created later (tests, a
        # reopened view) must see them, so every GL context shares one resource group.
        QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
        app = QtWidgets.QApplication(argv if argv is not None else sys.argv[:1])
        apply_dark_theme(app)
    app.setOrganizationName("Parallax")
    app.setApplicationName("Parallax")
    app.setApplicationDisplayName("Parallax")
    return app


def settle_startup_heap() -> None:
    """Take what start-up made (modules, classes, Qt wrappers: about 250,000 objects in this process) out of
    the cyclic garbage collector's reach. A full collection walks every tracked object with the GIL held:
    127 ms measured here, at a moment of the collector's choosing, such as the middle of Play, and the
    window freezes that long. Those objects live as long as the application anyway; later collections
    walk only what was made since."""
    gc.collect()
    gc.freeze()


def run_gui(path: Optional[str] = None, demo: bool = False) -> int:
    """Open the main window (on ``path``, or on the built-in demo scene) and run the event loop."""
    app = create_application()
    from .main_window import MainWindow

    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)  # the log dock shows INFO and above by default
    window = MainWindow()
    settle_startup_heap()
    window.show()
    if demo:
        window.open_demo()
    elif path:
        window.open_path(path)
    return app.exec()
