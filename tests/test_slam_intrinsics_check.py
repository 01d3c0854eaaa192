"""The focal check (slam.intrinsics_check): the first keyframes' preferred focal length, on the forward walk."""
from __future__ import annotations

import numpy as np
import pytest

from assets import demo_camera
from scene.camera import Camera
from slam.intrinsics_check import check_focal
from slam.system import System
from tests.test_slam_core import rendered


def _walk_system(focal_factor: float, frames: int = 30) -> System:
    timestamps, _, images = rendered("forward_walk")
    cam = demo_camera()
    params = cam.params.copy()
    params[:2] *= focal_factor
    system = System(Camera(1, cam.model, cam.width, cam.height, params, intrinsics_source="calib"))
    for image, ts in zip(images[:frames], timestamps[:frames]):
        system.step(image, ts)
    return system


def test_right_focal_length_is_confirmed_and_the_map_left_alone():
    system = _walk_system(1.0)
    m = system.map
    before = (m.kf_quat.copy(), m.kf_trans.copy(), m.xyz.copy(), m.obs_alive.copy())
    check = system.check_intrinsics()
    assert check is not None and check.keyframes >= 5 and check.observations >= 1000
    assert abs(check.focal_ratio - 1.0) < 0.05 and not check.suspicious
    assert abs(check.rms_free_px - check.rms_given_px) < 0.05
    after = (m.kf_quat, m.kf_trans, m.xyz, m.obs_alive)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # the check adjusts copies


def test_focal_length_five_times_too_short_is_found():
    check = _walk_system(0.2).check_intrinsics()
    # The images imply 5x the given focal length; several rounds of adjustment get most of the way.
    assert check.suspicious and 3.5 < check.focal_ratio < 6.0
    assert check.rms_free_px < check.rms_given_px - 0.1


def test_no_check_without_a_map():
    system = System(demo_camera())
    assert system.check_intrinsics() is None
    assert check_focal(system.map, demo_camera()) is None


@pytest.mark.parametrize("ratio, suspicious", [(1.0, False), (1.99, False), (2.01, True), (0.51, False),
                                               (0.49, True)])
def test_suspicious_beyond_a_factor_of_two(ratio, suspicious):
    from slam.intrinsics_check import FocalCheck
    assert FocalCheck(ratio, 1.0, 1.0, 5, 1000).suspicious is suspicious
