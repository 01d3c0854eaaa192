"""The scene tree dock: what the scene holds, with checkboxes that toggle 3D visibility."""
from __future__ import annotations

import os
from typing import Callable, Optional

from PyQt6 import QtCore, QtGui, QtWidgets

from . import style

KEY_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1  # (kind, name) of a toggleable item
GROUPS = (  # path, label
    ("sources", "Sources"),
    ("cameras", "Cameras"),
    ("images", "Images"),
    ("points", "Sparse points"),
    ("trajectories", "Trajectories"),
    ("clouds", "Point clouds"),
    ("nerf", "NeRF runs"),
)


def _swatch(rgba, size: int = 12) -> QtGui.QIcon:
    pix = QtGui.QPixmap(size, size)
    pix.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(pix)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    painter.setBrush(style.qcolor(rgba))
    painter.setPen(QtGui.QPen(QtGui.QColor(0, 0, 0, 120), 1))
    painter.drawRoundedRect(1, 1, size - 2, size - 2, 3, 3)
    painter.end()
    return QtGui.QIcon(pix)


class SceneTree(QtWidgets.QTreeWidget):
    visibility_changed = QtCore.pyqtSignal(str, str, bool)  # kind, name, visible

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Item", "Details"])
        self.setAlternatingRowColors(True)
        self.setUniformRowHeights(True)
        self.setIndentation(14)
        header = self.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Interactive)
        self.setColumnWidth(0, 150)
        self._nodes: dict[str, QtWidgets.QTreeWidgetItem] = {}
        self._touched: set[str] = set()
        self._updating = False
        self._warning_icon = self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_MessageBoxWarning)
        self._folder_icon = self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_DirIcon)
        self._file_icon = self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_FileIcon)
        self.itemChanged.connect(self._item_changed)
        for path, label in GROUPS:
            item = self._node(path, None, label, "")
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            item.setExpanded(path in ("cameras", "trajectories", "clouds"))

    # --- building -----------------------------------------------------------------------
    def _node(self, path: str, parent: Optional[str], label: str, info: str = "",
              key: Optional[tuple[str, str]] = None, checked: bool = True, tooltip: str = "",
              icon: Optional[QtGui.QIcon] = None, color: Optional[str] = None) -> QtWidgets.QTreeWidgetItem:
        item = self._nodes.get(path)
        if item is None:
            item = QtWidgets.QTreeWidgetItem()
            if parent is None:
                self.addTopLevelItem(item)
            else:
                self._nodes[parent].addChild(item)
            self._nodes[path] = item
            if key is not None:
                item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
                item.setData(0, KEY_ROLE, key)
                item.setCheckState(0, QtCore.Qt.CheckState.Checked if checked else QtCore.Qt.CheckState.Unchecked)
        self._touched.add(path)
        if item.text(0) != label:
            item.setText(0, label)
        if item.text(1) != info:
            item.setText(1, info)
        item.setToolTip(0, tooltip or label)
        item.setToolTip(1, tooltip or info)
        if icon is not None:
            item.setIcon(0, icon)
        brush = QtGui.QBrush(QtGui.QColor(color)) if color else QtGui.QBrush()
        item.setForeground(0, brush)
        item.setForeground(1, brush)
        return item

    def update_snapshot(self, snap, is_visible: Callable[[str, str], bool] = lambda k, n: True,
                        trajectory_colors: Optional[dict] = None) -> None:
        """Bring the tree in line with a snapshot, keeping expansion, selection and scroll."""
        self._updating = True
        try:
            self._touched = {path for path, _ in GROUPS}
            self._fill(snap, is_visible, trajectory_colors or style.trajectory_colors(snap.trajectories))
            for path in [p for p in self._nodes if p not in self._touched]:
                item = self._nodes.pop(path)
                (item.parent() or self.invisibleRootItem()).removeChild(item)
        finally:
            self._updating = False

    def _fill(self, snap, is_visible, colors) -> None:
        n_src = len(snap.sources)
        self._node("sources", None, "Sources", f"{n_src}")
        for i, src in enumerate(snap.sources):
            path = str(src.get("path", ""))
            layout = str(src.get("layout", src.get("kind", "")))
            icon = self._folder_icon if os.path.isdir(path) else self._file_icon
            self._node(f"sources/{i}", "sources", os.path.basename(path.rstrip("/\\")) or path, layout,
                       tooltip=path, icon=icon)

        guesses = sum(1 for c in snap.cameras.values() if c.intrinsics_source == "guess")
        self._node("cameras", None, "Cameras", f"{len(snap.cameras)}" + (f"  ({guesses} guessed)" if guesses else ""),
                   color=style.GUESS_COLOR if guesses else None)
        for cid, cam in sorted(snap.cameras.items()):
            guess = cam.intrinsics_source == "guess"
            base = f"cameras/{cid}"
            self._node(base, "cameras", f"Camera {cid}", f"{cam.model}  {cam.width}×{cam.height}"
                       + ("  ⚠ GUESS" if guess else ""), tooltip=cam.describe(),
                       icon=self._warning_icon if guess else None, color=style.GUESS_COLOR if guess else None)
            source_text = ("GUESS — focal = 1.2 × max(w, h); calibrate or supply intrinsics"
                           if guess else cam.intrinsics_source)
            self._node(base + "/source", base, "Intrinsics from", source_text,
                       color=style.GUESS_COLOR if guess else None)
            for pname, value in zip(cam.param_names, cam.params):
                self._node(f"{base}/p/{pname}", base, pname, f"{value:.6g}")

        n_reg = sum(1 for im in snap.images.values() if im.cam_from_world is not None)
        n_kp = sum(1 for im in snap.images.values() if len(im.keypoints))
        self._node("images", None, "Images", f"{len(snap.images):,}  ({n_reg:,} registered)",
                   key=("cameras", "registered"), checked=is_visible("cameras", "registered"),
                   tooltip="Show the camera frusta of registered images")
        self._node("images/registered", "images", "Registered", f"{n_reg:,}")
        self._node("images/unregistered", "images", "Not registered", f"{len(snap.images) - n_reg:,}")
        if n_kp:
            self._node("images/keypoints", "images", "With keypoints", f"{n_kp:,}")

        pts = snap.points
        info = f"{len(pts):,}"
        if len(pts):
            lengths = pts.track_lengths()
            if len(lengths) and lengths.sum():
                info += f"  · track {lengths.mean():.1f}"
            if len(pts.error):
                info += f"  · err {pts.error.mean():.2f} px"
        self._node("points", None, "Sparse points", info, key=("points", "sparse"),
                   checked=is_visible("points", "sparse"))

        self._node("trajectories", None, "Trajectories", f"{len(snap.trajectories)}")
        for name, traj in snap.trajectories.items():
            length = traj.path_length() if len(traj) > 1 else 0.0
            self._node(f"trajectories/{name}", "trajectories", name, f"{len(traj):,} poses · {length:.3g} m",
                       key=("trajectory", name), checked=is_visible("trajectory", name),
                       icon=_swatch(colors.get(name, style.TRAJECTORY_PALETTE[0])))

        self._node("clouds", None, "Point clouds", f"{len(snap.clouds)}")
        for name, cloud in snap.clouds.items():
            extra = " · coloured" if cloud.rgb is not None else ""
            self._node(f"clouds/{name}", "clouds", name, f"{len(cloud):,} points{extra}",
                       key=("cloud", name), checked=is_visible("cloud", name))

        self._node("nerf", None, "NeRF runs", f"{len(snap.nerf_runs)}")
        for name, run in snap.nerf_runs.items():
            base = f"nerf/{name}"
            self._node(base, "nerf", name, f"{run.preset} · {run.status}")
            for mname, value in sorted(run.metrics.items()):
                text = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
                self._node(f"{base}/m/{mname}", base, mname, text)

    # --- interaction --------------------------------------------------------------------
    def _item_changed(self, item: QtWidgets.QTreeWidgetItem, column: int) -> None:
        if self._updating or column != 0:
            return
        key = item.data(0, KEY_ROLE)
        if key:
            kind, name = key
            self.visibility_changed.emit(kind, name, item.checkState(0) == QtCore.Qt.CheckState.Checked)

    def item_for(self, path: str) -> Optional[QtWidgets.QTreeWidgetItem]:
        return self._nodes.get(path)

    def set_checked(self, kind: str, name: str, checked: bool) -> None:
        """Check or uncheck a toggleable item as the user would (emits visibility_changed)."""
        for item in self._nodes.values():
            if tuple(item.data(0, KEY_ROLE) or ()) == (kind, name):
                item.setCheckState(0, QtCore.Qt.CheckState.Checked if checked else QtCore.Qt.CheckState.Unchecked)
                return
        raise KeyError(f"no scene tree item for {kind} {name!r}")
