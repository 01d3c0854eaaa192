"""Intrinsics that a dataset publishes instead of shipping a calibration file.

TUM RGB-D: the colour camera of each Freiburg Kinect, as the dataset's page and ORB-SLAM's TUM1/2/3.yaml give
them (640x480, OpenCV k1 k2 p1 p2 k3). A TUM folder says which camera in its name
(``rgbd_dataset_freiburg3_long_office_household``, or a short ``fr3``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..camera import Camera

TUM_SIZE = (640, 480)
# fx, fy, cx, cy, k1, k2, p1, p2, k3
TUM_RGB = {
    1: (517.306408, 516.469215, 318.643040, 255.313989, 0.262383, -0.953104, -0.005358, 0.002628, 1.163314),
    2: (520.908620, 521.007327, 325.141442, 249.701764, 0.231222, -0.784899, -0.003257, -0.000105, 0.917205),
    3: (535.4, 539.2, 320.1, 247.6, 0.0, 0.0, 0.0, 0.0, 0.0),
}
_FREIBURG = re.compile(r"(?:freiburg|(?<![a-z])fr)_?([123])(?!\d)", re.IGNORECASE)


def tum_freiburg_camera(root: Path) -> Optional[int]:
    """1, 2 or 3 when the TUM folder's name names its Freiburg camera, else None."""
    match = _FREIBURG.search(Path(root).name)
    return int(match.group(1)) if match else None


def tum_camera(number: int, camera_id: int = 1) -> Camera:
    """The published colour-camera intrinsics of TUM RGB-D's Freiburg ``number`` Kinect, at 640x480."""
    fx, fy, cx, cy, k1, k2, p1, p2, k3 = TUM_RGB[number]
    if any((k1, k2, p1, p2, k3)):
        model, params = "FULL_OPENCV", (fx, fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0)
    else:
        model, params = "PINHOLE", (fx, fy, cx, cy)
    return Camera(camera_id, model, *TUM_SIZE, params, intrinsics_source="calib")
