"""Absolute pose (PnP + USAC + refinement) on synthetic scenes with exact ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from geometry.absolute_pose import AbsolutePoseOptions, PoseEstimationFailed, estimate_absolute_pose
from geometry.camera_models import project
from geometry.lie import so3_exp, so3_log
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.rigid import Rigid3d

CAMERAS = {
    "PINHOLE": Camera(1, "PINHOLE", 640, 480, [500.0, 505.0, 320.0, 240.0]),
    "SIMPLE_RADIAL": Camera(2, "SIMPLE_RADIAL", 800, 600, [620.0, 400.0, 300.0, -0.08]),
    "OPENCV": Camera(3, "OPENCV", 752, 480, [458.654, 457.296, 367.215, 248.375,
                                             -0.28340811, 0.07395907, 0.00019359, 1.76187114e-05]),
}
TRUTH = Rigid3d.from_rotation(so3_exp([0.2, -0.3, 0.1]), [0.5, -0.2, 3.0])


def _scene(camera, n, rng, noise=0.0, outliers=0.0):
    points_cam = rng.uniform([-5, -4, 4], [5, 4, 14], (4 * n, 3))
    xy = project(camera, points_cam)
    keep = np.all((xy > 0) & (xy < [camera.width, camera.height]), axis=1)
    points_cam, xy = points_cam[keep][:n], xy[keep][:n]
    xy = xy + rng.normal(0, noise, xy.shape)
    k = int(outliers * n)
    xy[:k] = rng.uniform([0, 0], [camera.width, camera.height], (k, 2))
    return TRUTH.inverse().apply(points_cam), xy, k


def _errors(pose: Rigid3d) -> tuple[float, float]:
    return (float(np.linalg.norm(so3_log(pose.rotation @ TRUTH.rotation.T))),
            float(np.linalg.norm(pose.center() - TRUTH.center())))


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_exact_pose_from_noise_free_data(model):
    camera = CAMERAS[model]
    points, xy, _ = _scene(camera, 300, np.random.default_rng(0))
    pose, inliers, num = estimate_absolute_pose(camera, points, xy)
    assert num == len(points) and inliers.all()
    r_err, c_err = _errors(pose)
    assert r_err < 1e-9 and c_err < 1e-9


def test_pixel_convention_matters_for_exactness():
    """OpenCV-convention pixels (ours - 0.5) move the pose far beyond the 1e-9 above: the test has teeth."""
    camera = CAMERAS["PINHOLE"]
    points, xy, _ = _scene(camera, 300, np.random.default_rng(0))
    pose, _, _ = estimate_absolute_pose(camera, points, xy - 0.5)
    assert max(_errors(pose)) > 1e-4


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_robust_to_outliers_and_noise(model):
    camera = CAMERAS[model]
    rng = np.random.default_rng(1)
    points, xy, k = _scene(camera, 500, rng, noise=0.5, outliers=0.3)
    pose, inliers, num = estimate_absolute_pose(camera, points, xy)
    r_err, c_err = _errors(pose)
    assert np.degrees(r_err) < 0.05 and c_err < 0.01
    assert inliers[k:].mean() > 0.99 and inliers[:k].sum() <= 1
    assert num == inliers.sum()


def test_too_few_or_degenerate_correspondences_raise():
    camera = CAMERAS["PINHOLE"]
    rng = np.random.default_rng(2)
    points, xy, _ = _scene(camera, 100, rng)
    with pytest.raises(PoseEstimationFailed, match="at least 4"):
        estimate_absolute_pose(camera, points[:3], xy[:3])
    with pytest.raises(ParallaxError):
        estimate_absolute_pose(camera, np.zeros((0, 3)), np.zeros((0, 2)))
    nan_points = points.copy()
    nan_points[:] = np.nan
    with pytest.raises(ParallaxError, match="at least 4"):
        estimate_absolute_pose(camera, nan_points, xy)
    with pytest.raises(ParallaxError, match="collinear"):
        line = np.outer(np.linspace(1, 5, 20), [0.3, 0.1, 1.0]) + [0, 0, 4]
        estimate_absolute_pose(camera, TRUTH.inverse().apply(line), project(camera, line))
    with pytest.raises(ParallaxError, match="coincide"):
        estimate_absolute_pose(camera, np.ones((10, 3)), xy[:10])
    with pytest.raises(ParallaxError, match="inliers"):
        estimate_absolute_pose(camera, points, xy, AbsolutePoseOptions(min_num_inliers=1000))
    with pytest.raises(ValueError):
        estimate_absolute_pose(camera, points, xy[:-1])
    with pytest.raises(ValueError):
        estimate_absolute_pose(camera, points, xy, AbsolutePoseOptions(method="ransac"))


def test_rows_with_nan_are_never_inliers():
    camera = CAMERAS["OPENCV"]
    points, xy, _ = _scene(camera, 200, np.random.default_rng(3))
    points[:5] = np.nan
    xy[5:10] = np.inf
    pose, inliers, num = estimate_absolute_pose(camera, points, xy)
    assert not inliers[:10].any() and inliers[10:].all() and num == 190
    assert max(_errors(pose)) < 1e-9
