"""Camera models against OpenCV (projectPoints / undistortPointsIter) and their own inverses."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from geometry import camera_models as cm
from scene.camera import Camera
from scene.errors import UnsupportedFormat

W, H = 752, 480
CAMERAS = {
    "SIMPLE_PINHOLE": [500.0, 376.0, 240.0],
    "PINHOLE": [458.654, 457.296, 367.215, 248.375],
    "SIMPLE_RADIAL": [460.0, 370.0, 245.0, -0.12],
    "RADIAL": [460.0, 370.0, 245.0, -0.21, 0.05],
    # EuRoC V1_01 cam0 (radial-tangential)
    "OPENCV": [458.654, 457.296, 367.215, 248.375, -0.28340811, 0.07395907, 0.00019359, 1.76187114e-05],
}
CV_ITER = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-20)


@pytest.fixture(params=sorted(CAMERAS))
def camera(request) -> Camera:
    return Camera(1, request.param, W, H, CAMERAS[request.param])


def _test_pixels(rng, n=4000) -> np.ndarray:
    """Random pixels over the whole image plus its corners, edges and 0.5 px from the border."""
    random = np.column_stack([rng.uniform(0, W, n), rng.uniform(0, H, n)])
    edge = np.linspace(0, 1, 41)
    border = np.vstack([np.column_stack([edge * W, np.zeros_like(edge)]),
                        np.column_stack([edge * W, np.full_like(edge, H)]),
                        np.column_stack([np.zeros_like(edge), edge * H]),
                        np.column_stack([np.full_like(edge, W), edge * H]),
                        [[0.5, 0.5], [W - 0.5, H - 0.5], [0.5, H - 0.5], [W - 0.5, 0.5]]])
    return np.vstack([random, border])


def _cv(camera: Camera):
    return camera.calibration_matrix(), cm.opencv_dist_coeffs(camera)


def test_project_matches_cv2_project_points(camera):
    rng = np.random.default_rng(1)
    k, dist = _cv(camera)
    # Rays through random and border pixels, found with OpenCV alone, at random depths.
    rays = cv2.undistortPointsIter(_test_pixels(rng).reshape(-1, 1, 2), k, dist, None, None, CV_ITER).reshape(-1, 2)
    depth = rng.uniform(0.3, 50.0, len(rays))
    points = np.column_stack([rays * depth[:, None], depth])
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, dist)
    ours = cm.project(camera, points)
    assert np.abs(ours - expected.reshape(-1, 2)).max() < 1e-6


def test_undistort_pixels_matches_cv2_undistort_points(camera):
    pixels = _test_pixels(np.random.default_rng(2))
    k, dist = _cv(camera)
    expected = cv2.undistortPointsIter(pixels.reshape(-1, 1, 2), k, dist, None, k, CV_ITER).reshape(-1, 2)
    ours = cm.undistort_pixels(camera, pixels)
    assert np.all(np.isfinite(ours))
    assert np.abs(ours - expected).max() < 1e-6


def test_project_unproject_round_trip(camera):
    pixels = _test_pixels(np.random.default_rng(3))
    rays = cm.unproject(camera, pixels)
    assert rays.shape == (len(pixels), 3)
    assert np.array_equal(rays[:, 2], np.ones(len(pixels)))
    depth = np.random.default_rng(4).uniform(0.1, 100.0, len(pixels))
    assert np.abs(cm.project(camera, rays) - pixels).max() < 1e-9
    assert np.abs(cm.project(camera, rays * depth[:, None]) - pixels).max() < 1e-9


def test_distort_pixels_inverts_undistort_pixels(camera):
    pixels = _test_pixels(np.random.default_rng(5))
    assert np.abs(cm.distort_pixels(camera, cm.undistort_pixels(camera, pixels)) - pixels).max() < 1e-9


def test_normalized_distortion_round_trip_to_1e12():
    xy = np.random.default_rng(6).uniform(-0.8, 0.8, (2000, 2))
    for model, params in CAMERAS.items():
        distorted = cm.distort_normalized(model, params, xy)
        assert np.abs(cm.undistort_normalized(model, params, distorted) - xy).max() < 1e-12


def test_simple_radial_uses_colmap_formula():
    # COLMAP SIMPLE_RADIAL: u = f * x * (1 + k r^2) + cx
    x, y, f, cx, cy, k = 0.3, -0.2, 460.0, 370.0, 245.0, -0.12
    r2 = x * x + y * y
    px = cm.project(Camera(1, "SIMPLE_RADIAL", W, H, [f, cx, cy, k]), [[x * 2.0, y * 2.0, 2.0]])
    assert px[0] == pytest.approx([f * x * (1 + k * r2) + cx, f * y * (1 + k * r2) + cy], abs=1e-12)


def test_pinhole_camera_has_same_intrinsics_without_distortion():
    cam = Camera(3, "OPENCV", W, H, CAMERAS["OPENCV"])
    pinhole = cm.pinhole_camera(cam)
    assert pinhole.model == "PINHOLE" and pinhole.camera_id == 3
    assert np.array_equal(pinhole.params, CAMERAS["OPENCV"][:4])
    rays = cm.unproject(cam, _test_pixels(np.random.default_rng(7), 100))
    assert np.abs(cm.project(pinhole, rays) - cm.undistort_pixels(cam, _test_pixels(np.random.default_rng(7), 100))
                  ).max() < 1e-9


def test_points_behind_camera_project_to_nan():
    cam = Camera(1, "PINHOLE", W, H, CAMERAS["PINHOLE"])
    px = cm.project(cam, [[0.1, 0.2, -1.0], [0.0, 0.0, 0.0], [0.1, 0.2, 1.0]])
    assert np.all(np.isnan(px[:2])) and np.all(np.isfinite(px[2]))


def test_uninvertible_distortion_gives_nan_not_garbage():
    # Strong barrel distortion folds back beyond r ~ 1.3: no undistorted point maps that far out.
    out = cm.undistort_normalized("SIMPLE_RADIAL", [1.0, 0.0, 0.0, -0.2], [[5.0, 0.0], [0.1, 0.0]])
    assert np.all(np.isnan(out[0])) and np.all(np.isfinite(out[1]))


def test_unsupported_model_is_rejected():
    fisheye = Camera(1, "OPENCV_FISHEYE", W, H, [400.0, 400.0, 376.0, 240.0, 0.1, 0.0, 0.0, 0.0])
    with pytest.raises(UnsupportedFormat, match="OPENCV_FISHEYE"):
        cm.project(fisheye, np.ones((1, 3)))


def test_wrong_array_shapes_are_rejected():
    cam = Camera(1, "PINHOLE", W, H, CAMERAS["PINHOLE"])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        cm.project(cam, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        cm.unproject(cam, np.ones((4, 3)))
