"""The dark Fusion theme and the colours the 3D view and the scene tree share."""
from __future__ import annotations

from PyQt6 import QtGui, QtWidgets

# 3D view colours (RGBA in 0..1). Ground truth is green everywhere in Parallax.
VIEW_BACKGROUND = (0.105, 0.11, 0.125, 1.0)
GRID_COLOR = (150, 155, 165, 60)  # 0..255 for GLGridItem
FRUSTUM_COLOR = (0.93, 0.33, 0.31, 1.0)
FRUSTUM_SELECTED_COLOR = (1.0, 0.86, 0.2, 1.0)
GROUND_TRUTH_COLOR = (0.25, 0.85, 0.35, 1.0)
TRAJECTORY_PALETTE = (
    (1.0, 0.58, 0.12, 1.0),  # orange: the first estimate (usually "slam")
    (0.30, 0.62, 1.0, 1.0),  # blue
    (0.78, 0.45, 0.95, 1.0),  # purple
    (0.25, 0.85, 0.85, 1.0),  # cyan
    (0.95, 0.45, 0.65, 1.0),  # pink
)
DEFAULT_POINT_RGB = (0.80, 0.82, 0.86)  # clouds that carry no colours

# Log levels in the log dock.
LOG_LEVEL_COLORS = {
    "DEBUG": "#8a8f98",
    "INFO": "#d6d9de",
    "WARNING": "#f0b429",
    "ERROR": "#ff6b6b",
    "CRITICAL": "#ff4d8d",
}
GUESS_COLOR = "#f0b429"  # intrinsics that were guessed
ACCENT = "#3d8fd6"


GROUND_TRUTH_NAMES = ("ground_truth", "groundtruth", "gt")


def trajectory_colors(names) -> dict[str, tuple[float, float, float, float]]:
    """Stable colour per trajectory name: ground truth green, the others from the palette in order."""
    colors, order = {}, 0
    for name in names:
        if name.lower() in GROUND_TRUTH_NAMES:
            colors[name] = GROUND_TRUTH_COLOR
        else:
            colors[name] = TRAJECTORY_PALETTE[order % len(TRAJECTORY_PALETTE)]
            order += 1
    return colors


def qcolor(rgba) -> QtGui.QColor:
    r, g, b, a = (list(rgba) + [1.0])[:4]
    return QtGui.QColor.fromRgbF(float(r), float(g), float(b), float(a))


def _palette() -> QtGui.QPalette:
    p = QtGui.QPalette()
    role, group = QtGui.QPalette.ColorRole, QtGui.QPalette.ColorGroup
    colors = {
        role.Window: "#26282c",
        role.WindowText: "#dcdfe4",
        role.Base: "#1d1f22",
        role.AlternateBase: "#24262a",
        role.ToolTipBase: "#2f3237",
        role.ToolTipText: "#e6e8eb",
        role.PlaceholderText: "#7c818a",
        role.Text: "#dcdfe4",
        role.Button: "#2e3035",
        role.ButtonText: "#dcdfe4",
        role.BrightText: "#ffffff",
        role.Light: "#3a3d43",
        role.Midlight: "#34373c",
        role.Mid: "#2a2c30",
        role.Dark: "#17181b",
        role.Shadow: "#0d0e10",
        role.Highlight: ACCENT,
        role.HighlightedText: "#ffffff",
        role.Link: "#6cb2f0",
        role.LinkVisited: "#a18cf0",
    }
    for r, c in colors.items():
        p.setColor(r, QtGui.QColor(c))
    for r in (role.WindowText, role.Text, role.ButtonText, role.HighlightedText):
        p.setColor(group.Disabled, r, QtGui.QColor("#6b7078"))
    p.setColor(group.Disabled, role.Highlight, QtGui.QColor("#3a3d43"))
    return p


STYLE_SHEET = """
QMainWindow::separator { background: #1b1c1f; width: 3px; height: 3px; }
QDockWidget { titlebar-close-icon: none; font-weight: 600; }
QDockWidget::title {
    background: #2b2d31; padding: 5px 8px; border-bottom: 1px solid #1b1c1f; text-align: left;
}
QToolBar { background: #2a2c30; border: none; border-bottom: 1px solid #1b1c1f; spacing: 2px; padding: 3px; }
QToolBar QToolButton { padding: 4px 6px; border-radius: 4px; }
QToolBar QToolButton:hover { background: #383b41; }
QToolBar QToolButton:pressed, QToolBar QToolButton:checked { background: #2f4a63; }
QStatusBar { background: #222428; border-top: 1px solid #1b1c1f; }
QStatusBar QLabel { color: #aeb3bb; padding: 0 4px; }
QTreeWidget, QPlainTextEdit, QListWidget { border: none; }
QTreeWidget::item { padding: 2px 0; }
QHeaderView::section { background: #2b2d31; border: none; border-right: 1px solid #1b1c1f; padding: 4px 6px; }
QProgressBar { border: 1px solid #3a3d43; border-radius: 3px; background: #1d1f22; text-align: center;
               color: #e6e8eb; max-height: 16px; }
QProgressBar::chunk { background: #3d8fd6; border-radius: 2px; }
QMenu { border: 1px solid #3a3d43; }
QMenu::item:selected { background: #2f4a63; }
QSlider::groove:horizontal { height: 4px; background: #3a3d43; border-radius: 2px; }
QSlider::handle:horizontal { background: #6cb2f0; width: 12px; margin: -5px 0; border-radius: 6px; }
QSlider::sub-page:horizontal { background: #3d8fd6; border-radius: 2px; }
QLabel#overlay { color: #c9ced6; background: #2a2c30; border-bottom: 1px solid #1b1c1f; padding: 2px 10px; }
QLabel#placeholder { color: #7c818a; font-size: 13px; background: rgb(27, 28, 32); }
QLabel#frameInfo { color: #aeb3bb; }
"""


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion with a muted dark palette, the look of modern reconstruction tools."""
    app.setStyle("Fusion")
    app.setPalette(_palette())
    app.setStyleSheet(STYLE_SHEET)
