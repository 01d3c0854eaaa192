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
