"""Two-view geometry on synthetic scenes with exact ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from geometry.camera_models import project, undistort_pixels
from geometry.lie import hat, so3_exp, so3_log
from geometry.two_view import TwoViewOptions, estimate_two_view
from scene.camera import Camera
from scene.rigid import Rigid3d

PINHOLE = Camera(1, "PINHOLE", 640, 480, [500.0, 500.0, 320.0, 240.0])
OPENCV = Camera(2, "OPENCV", 752, 480, [458.654, 457.296, 367.215, 248.375,
                                         -0.28340811, 0.07395907, 0.00019359, 1.76187114e-05])
OTHER = Camera(3, "SIMPLE_RADIAL", 800, 600, [620.0, 400.0, 300.0, -0.08])
GENERAL_MOTION = Rigid3d.from_rotation(so3_exp([0.03, -0.08, 0.02]), [-1.5, 0.15, 0.3])
# An oblique plane (70 deg) and a motion for which only one homography decomposition has the points
# in front of both cameras; most planar pairs are genuinely two-fold ambiguous (see the test below).
PLANE_ROTATION = so3_exp([-1.23, -0.12, 0.0])
PLANAR_MOTION = Rigid3d.from_rotation(so3_exp([-0.02, 0.05, -0.01]), [-1.33, -0.86, -0.26])


def _visible(camera, points_cam):
    xy = project(camera, points_cam)
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(xy), 1) & np.all((xy > 0) & (xy < [camera.width, camera.height]), 1)


def _observe(points_world, cam2_from_cam1, camera1, camera2, n, rng, noise=0.0, outliers=0.0):
    """Pixels of points visible in both views (camera 1 = world); outliers replace the first rows of xy2."""
    keep = _visible(camera1, points_world) & _visible(camera2, cam2_from_cam1.apply(points_world))
    points = points_world[keep][:n]
    xy1 = project(camera1, points) + rng.normal(0, noise, (len(points), 2))
    xy2 = project(camera2, cam2_from_cam1.apply(points)) + rng.normal(0, noise, (len(points), 2))
    k = int(outliers * len(points))
    xy2[:k] = rng.uniform([0, 0], [camera2.width, camera2.height], (k, 2))
    return points, xy1, xy2, k


def _general(n, rng, camera1=PINHOLE, camera2=PINHOLE, motion=GENERAL_MOTION, **kw):
    return _observe(rng.uniform([-6, -4.8, 4], [6, 4.8, 12], (4 * n, 3)), motion, camera1, camera2, n, rng, **kw)


def _planar(n, rng, plane_rotation=PLANE_ROTATION, motion=PLANAR_MOTION, **kw):
    grid = np.column_stack([rng.uniform(-30, 30, 10 * n), rng.uniform(-30, 30, 10 * n), np.zeros(10 * n)])
    return _observe(grid @ plane_rotation.T + [0, 0, 8], motion, PINHOLE, PINHOLE, n, rng, **kw)


def _errors(result, truth: Rigid3d) -> tuple[float, float]:
    """Rotation error and translation direction error, radians."""
    r = float(np.linalg.norm(so3_log(result.cam2_from_cam1.rotation @ truth.rotation.T)))
    t = truth.translation / np.linalg.norm(truth.translation)
    return r, float(np.arccos(np.clip(result.cam2_from_cam1.translation @ t, -1.0, 1.0)))


def test_general_scene_noise_free_is_exact():
    rng = np.random.default_rng(0)
    points, xy1, xy2, _ = _general(400, rng)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert res.model == "essential" and res.well_conditioned, res.reason
    r_err, t_err = _errors(res, GENERAL_MOTION)
    assert r_err < 1e-6 and t_err < 1e-6
    assert abs(np.linalg.norm(res.cam2_from_cam1.translation) - 1.0) < 1e-12
    assert res.inlier_mask.all() and res.triangulated_mask.all()
    # Points in camera 1's frame at the scale |t| = 1.
    scale = 1.0 / np.linalg.norm(GENERAL_MOTION.translation)
    np.testing.assert_allclose(res.points_cam1, points * scale, rtol=1e-6, atol=1e-6)
    assert res.median_triangulation_angle_deg > 5.0
    assert res.homography_score_ratio < 0.45 and res.homography_essential_inlier_ratio < 0.8


def test_pixel_convention_matters_for_exactness():
    """Feeding OpenCV-convention pixels (ours - 0.5) breaks the 1e-6 exactness above: the test has teeth."""
    rng = np.random.default_rng(0)
    _, xy1, xy2, _ = _general(400, rng)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1 - 0.5, xy2 - 0.5)
    assert max(_errors(res, GENERAL_MOTION)) > 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_general_scene_with_noise_and_outliers(seed):
    # 2000 correspondences: with 1000 the rotation error of this near-optimal estimator (Sampson
    # least squares) already reaches 0.10-0.12 deg on some seeds, with or without the outliers; the
    # rotation/translation coupling of a sideways motion, not a defect. 2000: max 0.071 deg over 20 seeds.
    rng = np.random.default_rng(seed)
    _, xy1, xy2, k = _general(2000, rng, noise=0.5, outliers=0.2)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert res.model == "essential" and res.well_conditioned, res.reason
    r_err, t_err = _errors(res, GENERAL_MOTION)
    assert np.degrees(r_err) < 0.1 and np.degrees(t_err) < 0.5
    assert res.inlier_mask[k:].mean() > 0.98          # true correspondences kept
    assert res.inlier_mask[:k].mean() < 0.05          # random ones rejected
    assert not np.any(res.triangulated_mask & ~res.inlier_mask)
    assert np.all(np.isnan(res.points_cam1[~res.triangulated_mask]))
    assert np.all(res.points_cam1[res.triangulated_mask, 2] > 0)


def test_distorted_and_different_cameras_are_exact():
    rng = np.random.default_rng(1)
    for cam1, cam2 in ((OPENCV, OPENCV), (OPENCV, OTHER)):
        points, xy1, xy2, _ = _general(400, rng, camera1=cam1, camera2=cam2)
        res = estimate_two_view(cam1, cam2, xy1, xy2)
        assert res.model == "essential" and res.well_conditioned, res.reason
        assert max(_errors(res, GENERAL_MOTION)) < 1e-6
    # Negative control: the same distorted pixels read as if the camera had no distortion.
    points, xy1, xy2, _ = _general(400, rng, camera1=OPENCV, camera2=OPENCV)
    undistorted_model = Camera(2, "PINHOLE", 752, 480, OPENCV.params[:4])
    res = estimate_two_view(undistorted_model, undistorted_model, xy1, xy2)
    assert res.num_inliers < 0.9 * len(points) or np.degrees(max(_errors(res, GENERAL_MOTION))) > 0.1


def test_returned_matrices_relate_the_documented_coordinates():
    rng = np.random.default_rng(2)
    _, xy1, xy2, _ = _general(300, rng, camera1=OPENCV, camera2=OTHER)
    res = estimate_two_view(OPENCV, OTHER, xy1, xy2)
    u1, u2 = undistort_pixels(OPENCV, xy1), undistort_pixels(OTHER, xy2)
    h1, h2 = np.column_stack([u1, np.ones(len(u1))]), np.column_stack([u2, np.ones(len(u2))])
    # F on undistorted pixels (COLMAP convention): point-to-epipolar-line distances ~ 0 (F is USAC's
    # output, not polished to machine precision: ~1e-4 px on exact data).
    lines = h1 @ res.fundamental.T
    dist = np.abs(np.einsum("ij,ij->i", h2, lines)) / np.linalg.norm(lines[:, :2], axis=1)
    assert dist.max() < 1e-3 and res.num_fundamental_inliers == len(xy1)
    # Shifted by half a pixel (OpenCV's convention) the same F is off by far more.
    lines = (h1 - [0.5, 0.5, 0]) @ res.fundamental.T
    dist = np.abs(np.einsum("ij,ij->i", h2 - [0.5, 0.5, 0], lines)) / np.linalg.norm(lines[:, :2], axis=1)
    assert dist.max() > 1e-2
    # E on normalized coordinates, and it matches F through the calibrations.
    K1 = np.array([[458.654, 0, 367.215], [0, 457.296, 248.375], [0, 0, 1]])
    K2 = np.array([[620.0, 0, 400.0], [0, 620.0, 300.0], [0, 0, 1]])
    n1, n2 = h1 @ np.linalg.inv(K1).T, h2 @ np.linalg.inv(K2).T
    lines = n1 @ res.essential.T
    dist = np.abs(np.einsum("ij,ij->i", n2, lines)) / np.linalg.norm(lines[:, :2], axis=1)
    assert 620.0 * dist.max() < 1e-3  # in pixels of camera 2
    # The refined pose is exact: its essential matrix has no residual at all.
    pose = res.cam2_from_cam1
    lines = n1 @ (hat(pose.translation) @ pose.rotation).T
    assert np.abs(np.einsum("ij,ij->i", n2, lines)).max() < 1e-12
    f_from_e = np.linalg.inv(K2).T @ res.essential @ np.linalg.inv(K1)
    f_from_e /= np.linalg.norm(f_from_e) * np.sign(f_from_e.ravel() @ res.fundamental.ravel())
    np.testing.assert_allclose(f_from_e, res.fundamental, atol=1e-5)


def test_planar_scene_selects_homography_and_recovers_pose():
    rng = np.random.default_rng(3)
    points, xy1, xy2, _ = _planar(600, rng)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert res.model == "homography" and res.well_conditioned, res.reason
    assert max(_errors(res, PLANAR_MOTION)) < 1e-6
    scale = 1.0 / np.linalg.norm(PLANAR_MOTION.translation)
    np.testing.assert_allclose(res.points_cam1, points * scale, rtol=1e-6, atol=1e-6)
    # H maps normalized coordinates of view 1 onto view 2 (USAC's output: ~1e-4 px on exact data).
    n1 = np.column_stack([(xy1 - [320, 240]) / 500, np.ones(len(xy1))])
    n2 = (xy2 - [320, 240]) / 500
    mapped = n1 @ res.homography.T
    assert 500 * np.abs(mapped[:, :2] / mapped[:, 2:] - n2).max() < 1e-3
    assert res.homography_essential_inlier_ratio > 0.95
    # With 0.5 px noise and 20 % outliers.
    _, xy1, xy2, k = _planar(600, rng, noise=0.5, outliers=0.2)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert res.model == "homography" and res.well_conditioned, res.reason
    r_err, t_err = _errors(res, PLANAR_MOTION)
    assert np.degrees(r_err) < 0.2 and np.degrees(t_err) < 1.0
    assert res.inlier_mask[:k].mean() < 0.05


def test_ambiguous_planar_decomposition_is_not_well_conditioned():
    """A plane seen nearly face-on: both physical decompositions keep every point in front of both cameras."""
    rng = np.random.default_rng(4)
    _, xy1, xy2, _ = _planar(600, rng, plane_rotation=so3_exp([0.3, 0.2, 0.0]),
                             motion=Rigid3d.from_rotation(so3_exp([0.03, -0.08, 0.02]), [-1.0, 0.0, 1.0]))
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert res.model == "homography"
    assert not res.well_conditioned and "ambiguous homography decomposition" in res.reason


def test_pure_rotation_is_not_well_conditioned():
    rng = np.random.default_rng(5)
    rotation_only = Rigid3d.from_rotation(so3_exp([0.03, -0.08, 0.02]), [0.0, 0.0, 0.0])
    _, xy1, xy2, _ = _general(500, rng, motion=rotation_only, noise=0.3)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert not res.well_conditioned
    assert "rotated or did not move" in res.reason or "too little parallax" in res.reason
    # The rotation itself is still right.
    assert np.degrees(np.linalg.norm(so3_log(res.cam2_from_cam1.rotation @ rotation_only.rotation.T))) < 0.1


@pytest.mark.parametrize("force_essential", [False, True])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_stationary_camera_is_never_well_conditioned(noise, force_essential):
    rng = np.random.default_rng(6)
    _, xy1, _, _ = _general(500, rng)
    xy2 = xy1 + rng.normal(0, noise, xy1.shape)
    options = TwoViewOptions(homography_score_threshold=1.01 if force_essential else 0.45)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2, options)
    assert not res.well_conditioned
    assert "rotated or did not move" in res.reason or "too little parallax" in res.reason, res.reason
    if force_essential and res.model == "essential":
        assert "too little parallax" in res.reason


def test_small_baseline_reports_too_little_parallax():
    rng = np.random.default_rng(7)
    tiny = Rigid3d.from_rotation(so3_exp([0.01, -0.02, 0.0]), [-0.03, 0.0, 0.0])  # ~0.2 deg at 8 m
    _, xy1, xy2, _ = _general(500, rng, motion=tiny, noise=0.2)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1, xy2)
    assert not res.well_conditioned and "too little parallax" in res.reason
    assert res.median_triangulation_angle_deg < 1.0


def test_bad_inputs():
    rng = np.random.default_rng(8)
    _, xy1, xy2, _ = _general(400, rng)
    res = estimate_two_view(PINHOLE, PINHOLE, xy1[:5], xy2[:5])
    assert not res.well_conditioned and "too few correspondences" in res.reason and res.model == "none"
    res = estimate_two_view(PINHOLE, PINHOLE, np.zeros((0, 2)), np.zeros((0, 2)))
    assert not res.well_conditioned and res.inlier_mask.shape == (0,)
    nan1 = xy1.copy()
    nan1[:10] = np.nan
    res = estimate_two_view(PINHOLE, PINHOLE, nan1, xy2)
    assert res.well_conditioned and not res.inlier_mask[:10].any() and res.inlier_mask[10:].all()
    assert max(_errors(res, GENERAL_MOTION)) < 1e-6
    res = estimate_two_view(PINHOLE, PINHOLE, np.full_like(xy1, np.nan), xy2)
    assert not res.well_conditioned and "too few correspondences" in res.reason
    with pytest.raises(ValueError):
        estimate_two_view(PINHOLE, PINHOLE, xy1, xy2[:-1])
    with pytest.raises(ValueError):
        estimate_two_view(PINHOLE, PINHOLE, xy1, xy2, TwoViewOptions(method="ransac"))
