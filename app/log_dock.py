"""The log dock: Python logging into a read-only, colour-coded text view."""
from __future__ import annotations

import html
import logging

from PyQt6 import QtCore, QtGui, QtWidgets

from .style import LOG_LEVEL_COLORS

MAX_LOG_LINES = 5000
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Bridge(QtCore.QObject):
    record = QtCore.pyqtSignal(int, str, str)  # levelno, levelname, formatted text


class QtLogHandler(logging.Handler):
    """A logging handler usable from any thread: records reach the GUI by a queued signal."""

    def __init__(self, level: int = logging.DEBUG):
        super().__init__(level)
        self.bridge = _Bridge()
        self.setFormatter(logging.Formatter("%(asctime)s  %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.bridge.record.emit(record.levelno, record.levelname, text)
        except RuntimeError:  # the widget is gone (window closed); drop the record
            pass
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class LogView(QtWidgets.QWidget):
    """Level filter + clear button above a read-only text view."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.records: list[tuple[int, str, str]] = []  # kept for re-filtering
        self.min_level = logging.INFO

        self.text = QtWidgets.QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LOG_LINES)
        self.text.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        font = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(8.0, font.pointSizeF() - 1))
        self.text.setFont(font)

        self.level_box = QtWidgets.QComboBox(self)
        self.level_box.addItems([lv.title() for lv in LEVELS])
        self.level_box.setCurrentIndex(LEVELS.index("INFO"))
        self.level_box.setToolTip("Show messages at this level and above")
        self.level_box.currentIndexChanged.connect(self._level_changed)
        clear = QtWidgets.QToolButton(self)
        clear.setText("Clear")
        clear.setToolTip("Clear the log")
        clear.clicked.connect(self.clear)

        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(6, 3, 6, 0)
        bar.addWidget(QtWidgets.QLabel("Level:", self))
        bar.addWidget(self.level_box)
        bar.addStretch(1)
        bar.addWidget(clear)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.text)

        self.handler = QtLogHandler()
        self.handler.bridge.record.connect(self.append_record, QtCore.Qt.ConnectionType.QueuedConnection)

    def append_record(self, levelno: int, levelname: str, text: str) -> None:
        self.records.append((levelno, levelname, text))
        del self.records[:-MAX_LOG_LINES]
        if levelno >= self.min_level:
            self._append(levelname, text)

    def _append(self, levelname: str, text: str) -> None:
        color = LOG_LEVEL_COLORS.get(levelname, LOG_LEVEL_COLORS["INFO"])
        body = html.escape(text).replace("\n", "<br>").replace("  ", "&nbsp;&nbsp;")
        self.text.appendHtml(f'<span style="color:{color}; white-space:pre">{body}</span>')
        self.text.verticalScrollBar().setValue(self.text.verticalScrollBar().maximum())

    def _level_changed(self, index: int) -> None:
        self.min_level = logging.getLevelName(LEVELS[index])
        self.text.clear()
        for levelno, levelname, text in self.records:
            if levelno >= self.min_level:
                self._append(levelname, text)

    def clear(self) -> None:
        self.records.clear()
        self.text.clear()

    def plain_text(self) -> str:
        return self.text.toPlainText()

    def attach(self, logger: logging.Logger | None = None) -> None:
        logger = logger or logging.getLogger()
        if self.handler not in logger.handlers:
            logger.addHandler(self.handler)

    def detach(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self.handler)
