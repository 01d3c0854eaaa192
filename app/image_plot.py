"""An image shown in pixel coordinates (y down, square pixels, no axes): the frame views of the tabs."""
from __future__ import annotations

import pyqtgraph as pg

from . import style


def image_plot(parent) -> tuple[pg.PlotWidget, pg.ImageItem]:
    """A PlotWidget showing one row-major ImageItem with image pixel coordinates; overlays go on its plot item."""
    view = pg.PlotWidget(parent)
    view.setBackground(style.qcolor(style.VIEW_BACKGROUND))
    plot = view.getPlotItem()
    plot.hideAxis("left")
    plot.hideAxis("bottom")
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.setMouseEnabled(False, False)
    plot.vb.setAspectLocked(True)
    plot.vb.invertY(True)  # image rows grow downwards
    plot.vb.setDefaultPadding(0.0)
    item = pg.ImageItem(axisOrder="row-major")
    plot.addItem(item)
    return view, item


def show_pixels(item: pg.ImageItem, pixels) -> None:
    """Show 0..255 pixels as they are. uint8 goes straight into a QImage; levels of (0, 255) would run
    pyqtgraph's rescale over every pixel (1 ms of the GUI thread per 640x480 frame, at up to 20 Hz)."""
    levels = None if getattr(pixels, "dtype", None) == "uint8" else (0, 255)
    item.setImage(pixels, autoLevels=False, levels=levels)
