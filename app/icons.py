"""Line-art toolbar icons drawn with QPainter: consistent on every platform and theme."""
from __future__ import annotations

import math

from PyQt6 import QtCore, QtGui

FG = QtGui.QColor("#cfd3da")
ACCENT = QtGui.QColor("#6cb2f0")
SIZE = 64  # drawn at 64 px; Qt scales down for the toolbar


def _pen(color: QtGui.QColor, width: float = 4.5) -> QtGui.QPen:
    pen = QtGui.QPen(color, width)
    pen.setCapStyle(QtCore.Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(QtCore.Qt.PenJoinStyle.RoundJoin)
    return pen


def _video(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    p.drawRoundedRect(QtCore.QRectF(6, 14, 52, 36), 6, 6)
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.setBrush(ACCENT)
    p.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(26, 22), QtCore.QPointF(42, 32), QtCore.QPointF(26, 42)]))


def _images(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    p.drawRoundedRect(QtCore.QRectF(16, 8, 42, 32), 4, 4)
    p.setBrush(QtGui.QColor("#26282c"))
    p.drawRoundedRect(QtCore.QRectF(6, 22, 42, 32), 4, 4)
    p.setPen(_pen(ACCENT, 4))
    path = QtGui.QPainterPath(QtCore.QPointF(11, 49))
    path.lineTo(22, 36)
    path.lineTo(30, 44)
    path.lineTo(35, 39)
    path.lineTo(43, 49)
    p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
    p.drawPath(path)
    p.setBrush(ACCENT)
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.drawEllipse(QtCore.QPointF(36, 30), 3.5, 3.5)


def _project(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    path = QtGui.QPainterPath(QtCore.QPointF(6, 16))
    path.lineTo(24, 16)
    path.lineTo(29, 22)
    path.lineTo(58, 22)
    path.lineTo(58, 52)
    path.lineTo(6, 52)
    path.closeSubpath()
    p.drawPath(path)
    _cube(p, QtCore.QPointF(32, 38), 9, ACCENT, 3.5)


def _cube(p: QtGui.QPainter, c: QtCore.QPointF, r: float, color: QtGui.QColor, width: float) -> None:
    p.setPen(_pen(color, width))
    pts = [QtCore.QPointF(c.x() + r * math.cos(math.radians(a)), c.y() + r * math.sin(math.radians(a)))
           for a in (-90, -30, 30, 90, 150, 210)]
    p.drawPolygon(QtGui.QPolygonF(pts))
    for k in (1, 3, 5):  # the inner "Y": centre to alternate vertices
        p.drawLine(c, pts[k])


def _model(p: QtGui.QPainter) -> None:
    # A sparse model: points with two camera frusta looking at them.
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.setBrush(ACCENT)
    for x, y in ((30, 16), (40, 22), (24, 26), (36, 32), (46, 14), (28, 38), (42, 40)):
        p.drawEllipse(QtCore.QPointF(x, y), 3.2, 3.2)
    p.setPen(_pen(FG, 4))
    p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
    for apex, a, b in (((8, 58), (8, 40), (24, 50)), ((58, 58), (42, 52), (58, 40))):
        p.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(*apex), QtCore.QPointF(*a), QtCore.QPointF(*b)]))


def _save(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    path = QtGui.QPainterPath(QtCore.QPointF(8, 8))
    path.lineTo(46, 8)
    path.lineTo(56, 18)
    path.lineTo(56, 56)
    path.lineTo(8, 56)
    path.closeSubpath()
    p.drawPath(path)
    p.drawRect(QtCore.QRectF(18, 8, 24, 14))
    p.setPen(_pen(ACCENT))
    p.drawRoundedRect(QtCore.QRectF(18, 34, 28, 22), 2, 2)


def _tray_arrow(p: QtGui.QPainter, up: bool) -> None:
    p.setPen(_pen(FG))
    path = QtGui.QPainterPath(QtCore.QPointF(8, 36))
    path.lineTo(8, 56)
    path.lineTo(56, 56)
    path.lineTo(56, 36)
    p.drawPath(path)
    p.setPen(_pen(ACCENT))
    top, bottom = (8.0, 42.0)
    p.drawLine(QtCore.QPointF(32, top), QtCore.QPointF(32, bottom))
    tip, back = (top, top + 12) if up else (bottom, bottom - 12)
    p.drawPolyline(QtGui.QPolygonF([QtCore.QPointF(21, back), QtCore.QPointF(32, tip), QtCore.QPointF(43, back)]))


def _fit(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        cx, cy = 32 - sx * 24, 32 - sy * 24
        p.drawPolyline(QtGui.QPolygonF([QtCore.QPointF(cx, cy + sy * 14), QtCore.QPointF(cx, cy),
                                        QtCore.QPointF(cx + sx * 14, cy)]))
    _cube(p, QtCore.QPointF(32, 32), 13, ACCENT, 4)


def _reset(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    rect = QtCore.QRectF(12, 12, 40, 40)
    p.drawArc(rect, 60 * 16, 290 * 16)
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.setBrush(ACCENT)
    end = QtCore.QPointF(32 + 20 * math.cos(math.radians(60)), 32 - 20 * math.sin(math.radians(60)))
    p.drawPolygon(QtGui.QPolygonF([end + QtCore.QPointF(-12, -6), end + QtCore.QPointF(4, -10),
                                   end + QtCore.QPointF(0, 8)]))


def _stop(p: QtGui.QPainter) -> None:
    p.setPen(_pen(QtGui.QColor("#ff6b6b")))
    p.drawEllipse(QtCore.QRectF(8, 8, 48, 48))
    p.drawLine(QtCore.QPointF(23, 23), QtCore.QPointF(41, 41))
    p.drawLine(QtCore.QPointF(41, 23), QtCore.QPointF(23, 41))


def _open(p: QtGui.QPainter) -> None:
    p.setPen(_pen(FG))
    path = QtGui.QPainterPath(QtCore.QPointF(6, 52))
    path.lineTo(6, 12)
    path.lineTo(24, 12)
    path.lineTo(29, 18)
    path.lineTo(52, 18)
    path.lineTo(52, 26)
    p.drawPath(path)
    p.setPen(_pen(ACCENT))
    p.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(6, 52), QtCore.QPointF(16, 28), QtCore.QPointF(60, 28),
                                   QtCore.QPointF(50, 52)]))


_PAINTERS = {
    "video": _video, "images": _images, "project": _project, "model": _model, "save": _save,
    "export": lambda p: _tray_arrow(p, up=True), "import": lambda p: _tray_arrow(p, up=False),
    "fit": _fit, "reset": _reset, "stop": _stop, "open": _open,
}


def icon(name: str) -> QtGui.QIcon:
    """A line-art icon by name (see _PAINTERS); an empty icon for unknown names."""
    painter_fn = _PAINTERS.get(name)
    if painter_fn is None:
        return QtGui.QIcon()
    pixmap = QtGui.QPixmap(SIZE, SIZE)
    pixmap.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pixmap)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
    painter_fn(p)
    p.end()
    return QtGui.QIcon(pixmap)
