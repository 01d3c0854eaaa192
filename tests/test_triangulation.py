"""Triangulation kernels on synthetic scenes with exact ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from geometry.camera_models import project
from geometry.lie import so3_exp
from geometry.triangulation import (as_projection_matrices, cheirality, max_triangulation_angles,
                                    reprojection_errors, triangulate_multiview, triangulate_two_view,
                                    triangulation_angles)
from scene.camera import Camera
from scene.rigid import Rigid3d

OPENCV_CAM = Camera(1, "OPENCV", 752, 480, [458.654, 457.296, 367.215, 248.375,
                                             -0.28340811, 0.07395907, 0.00019359, 1.76187114e-05])
PINHOLE_CAM = Camera(2, "PINHOLE", 640, 480, [500.0, 510.0, 320.0, 240.0])


def _poses(k: int, rng, offset=(0.0, 0.0, 0.0)) -> list[Rigid3d]:
    """Cameras on a short arc looking at the origin region (+z), world shifted by ``offset``."""
    poses = []
    for i in range(k):
        rotation = so3_exp(rng.normal(0, 0.05, 3))
        center = np.array([i * 0.6 - 0.3 * k, rng.normal(0, 0.2), rng.normal(0, 0.2)]) + offset
        poses.append(Rigid3d.from_rotation(rotation, -rotation @ center))
    return poses


def _points(n: int, rng, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    return rng.uniform([-3, -3, 4], [3, 3, 20], (n, 3)) + np.asarray(offset)


def _rays(pose: Rigid3d, points: np.ndarray) -> np.ndarray:
    return pose.apply(points)


@pytest.mark.parametrize("method", ["dlt", "midpoint"])
@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (1000.0, -500.0, 250.0)])
def test_two_view_exact_for_noise_free_rays(method, offset):
    rng = np.random.default_rng(0)
    cam1, cam2 = _poses(2, rng, offset)
    points = _points(500, rng, offset)
    rays1 = _rays(cam1, points)
    rays2 = _rays(cam2, points)
    rays2 /= rays2[:, 2:]  # any positive ray length is accepted
    tri = triangulate_two_view(cam1, cam2, rays1, rays2, method=method)
    assert np.abs(tri - points).max() < 1e-9


def test_multiview_exact_for_noise_free_rays_with_any_track_length():
    rng = np.random.default_rng(1)
    poses = _poses(6, rng)
    points = _points(300, rng)
    lengths = rng.integers(2, 7, len(points))
    ptr = np.concatenate([[0], np.cumsum(lengths)])
    image_idx = np.concatenate([rng.choice(6, size=k, replace=False) for k in lengths])
    point_of_obs = np.repeat(np.arange(len(points)), lengths)
    rays = np.array([poses[i].apply(points[j][None])[0] for i, j in zip(image_idx, point_of_obs)])
    for refine in (False, True):
        tri, ok = triangulate_multiview(poses, ptr, image_idx, rays, refine=refine)
        assert ok.all()
        assert np.abs(tri - points).max() < 1e-9
    # The same poses as (K, 4, 4) matrices and as (quat_wxyz, translation) give the same answer.
    as_4x4 = np.stack([p.matrix() for p in poses])
    as_quat = (np.stack([p.quat_wxyz for p in poses]), np.stack([p.translation for p in poses]))
    np.testing.assert_allclose(as_projection_matrices(as_4x4), as_projection_matrices(as_quat), atol=1e-15)
    tri2, _ = triangulate_multiview(as_quat, ptr, image_idx, rays)
    assert np.abs(tri2 - points).max() < 1e-9


def test_refinement_lowers_reprojection_error_under_noise():
    rng = np.random.default_rng(2)
    poses = _poses(4, rng)
    points = _points(400, rng)
    ptr = np.arange(len(points) + 1) * 4
    image_idx = np.tile(np.arange(4), len(points))
    rays = np.concatenate([np.stack([p.apply(x[None])[0] for p in poses]) for x in points])
    rays /= rays[:, 2:]
    rays[:, :2] += rng.normal(0, 1.0 / 500, (len(rays), 2))  # 1 px at f = 500

    def cost(tri):
        obs = np.stack([poses[i].apply(tri[j][None])[0] for j, i in zip(np.repeat(np.arange(len(tri)), 4), image_idx)])
        r = obs[:, :2] / obs[:, 2:] - rays[:, :2]
        return (r ** 2).sum(1).reshape(-1, 4).sum(1)

    dlt, ok_dlt = triangulate_multiview(poses, ptr, image_idx, rays, refine=False)
    refined, ok_ref = triangulate_multiview(poses, ptr, image_idx, rays, refine=True)
    assert ok_dlt.all() and ok_ref.all()
    assert np.all(cost(refined) <= cost(dlt) * (1 + 1e-12))
    assert cost(refined).sum() < 0.99 * cost(dlt).sum()
    # At the noise level: relative depth error ~ depth * noise / baseline <= 20 * 0.002 / 1.8 = 2.2 %.
    assert np.median(np.linalg.norm(refined - points, axis=1) / points[:, 2]) < 0.02


def test_two_view_methods_agree_at_noise_level():
    """DLT is the default; the midpoint is within a few % in 3D error (see the module docstring)."""
    rng = np.random.default_rng(3)
    cam1, cam2 = _poses(2, rng)
    points = _points(2000, rng)
    rays1, rays2 = _rays(cam1, points), _rays(cam2, points)
    rays1, rays2 = rays1 / rays1[:, 2:], rays2 / rays2[:, 2:]
    rays1[:, :2] += rng.normal(0, 0.5 / 500, (len(points), 2))
    rays2[:, :2] += rng.normal(0, 0.5 / 500, (len(points), 2))
    err = {m: np.median(np.linalg.norm(triangulate_two_view(cam1, cam2, rays1, rays2, m) - points, axis=1))
           for m in ("dlt", "midpoint")}
    assert err["dlt"] < 0.2 and abs(err["dlt"] - err["midpoint"]) < 0.1 * err["dlt"]


def test_cheirality_flags_points_behind_a_camera():
    rng = np.random.default_rng(4)
    cam1, cam2 = _poses(2, rng)
    points = _points(50, rng)
    behind = cam2.inverse().apply(np.array([[0.1, 0.2, -3.0]]))  # 3 units behind camera 2
    all_points = np.vstack([points, behind])
    mask = cheirality([cam1, cam2], all_points)
    assert mask[:-1].all() and not mask[-1]
    # Per-track check: observed only by camera 1 (in front of it), the point passes.
    assert cheirality([cam1, cam2], behind, point_ptr=[0, 1], obs_image_idx=[0])[0] == (cam1.apply(behind)[0, 2] > 0)
    # Rays that meet behind the cameras (diverging in front of them) triangulate but are not ok.
    x = np.array([[0.0, 0.0, -5.0]])
    c1 = Rigid3d(translation=[0.5, 0, 0])
    c2 = Rigid3d(translation=[-0.5, 0, 0])
    r1, r2 = -c1.apply(x), -c2.apply(x)  # mirrored: z > 0, but they intersect at z = -5
    tri, ok = triangulate_multiview([c1, c2], [0, 2], [0, 1], np.vstack([r1, r2]))
    assert np.all(np.isfinite(tri)) and not ok[0]


def test_near_parallel_rays_are_flagged_by_angle():
    c1, c2 = Rigid3d(), Rigid3d(translation=[-1.0, 0, 0])
    near = np.array([[0.0, 0.0, 10.0]])
    far = np.array([[0.0, 0.0, 1e7]])
    angles = np.degrees(triangulation_angles(c1.center(), c2.center(), np.vstack([near, far])))
    np.testing.assert_allclose(angles[0], np.degrees(np.arctan(0.1)), rtol=1e-12)
    assert angles[1] < 1e-5
    tri = triangulate_two_view(c1, c2, c1.apply(far), c2.apply(far))
    assert np.degrees(triangulation_angles(c1.center(), c2.center(), tri))[0] < 1e-4
    # Exactly parallel rays carry no depth: NaN from both methods, not ok in the multi-view kernel.
    parallel = np.array([[0.1, 0.0, 1.0]])
    for method in ("dlt", "midpoint"):
        assert np.isnan(triangulate_two_view(c1, c2, parallel, parallel, method)).all()
    _, ok = triangulate_multiview([c1, c2], [0, 2], [0, 1], np.vstack([parallel, parallel]))
    assert not ok[0]
    # Zero baseline: a track seen from two cameras at one centre is never a point.
    _, ok = triangulate_multiview([c1, c1], [0, 2], [0, 1], np.vstack([near, near]))
    assert not ok[0]


def test_max_triangulation_angles_over_tracks():
    poses = [Rigid3d(translation=[-x, 0.0, 0.0]) for x in (0.0, 1.0, 2.0)]
    point = np.array([[1.0, 0.0, 1.0]])
    # centres at x = 0, 1, 2; the point at (1, 0, 1): angle 90 deg between centres 0 and 2.
    angles = max_triangulation_angles(poses, [0, 3], [0, 1, 2], point)
    np.testing.assert_allclose(np.degrees(angles), [90.0], rtol=1e-12)
    angles = max_triangulation_angles(poses, [0, 2], [0, 1], point)
    np.testing.assert_allclose(np.degrees(angles), [45.0], rtol=1e-12)


def test_reprojection_errors_through_distorted_models_in_pixels():
    rng = np.random.default_rng(5)
    poses = _poses(3, rng)
    points = _points(100, rng)
    cameras = [OPENCV_CAM, PINHOLE_CAM]
    image_camera_idx = np.array([0, 1, 0])
    ptr = np.arange(len(points) + 1) * 3
    image_idx = np.tile(np.arange(3), len(points))
    xy = np.concatenate([np.stack([project(cameras[image_camera_idx[i]], poses[i].apply(x[None]))[0]
                                   for i in range(3)]) for x in points])
    err = reprojection_errors(cameras, poses, points, xy, ptr, image_idx, image_camera_idx)
    assert err.max() < 1e-9
    shifted = xy.copy()
    shifted[1::3] += [3.0, 4.0]
    err = reprojection_errors(cameras, poses, points, shifted, ptr, image_idx, image_camera_idx)
    np.testing.assert_allclose(err[1::3], 5.0, atol=1e-9)
    assert err[0::3].max() < 1e-9
    behind = poses[0].inverse().apply(np.array([[0.0, 0.0, -2.0]]))
    err = reprojection_errors(PINHOLE_CAM, poses[:1], behind, np.zeros((1, 2)), [0, 1], [0])
    assert np.isinf(err[0])


def test_bad_inputs():
    c1, c2 = Rigid3d(), Rigid3d(translation=[-1.0, 0, 0])
    x = np.array([[0.2, 0.1, 5.0]])
    r1, r2 = c1.apply(x), c2.apply(x)
    nan = np.full((1, 3), np.nan)
    # A NaN ray, a ray with z <= 0, a single observation, the same image twice: no point.
    rays = np.vstack([r1, nan, r1, r2 * [1, 1, -1], r1, r1, r1])
    tri, ok = triangulate_multiview([c1, c2], [0, 2, 4, 5, 7], [0, 1, 0, 1, 0, 0, 0], rays)
    assert not ok.any() and np.isnan(tri).all()
    with pytest.raises(ValueError):
        triangulate_two_view(c1, c2, r1, np.vstack([r2, r2]))
    with pytest.raises(ValueError):
        triangulate_two_view(c1, c2, r1[:, :2], r2[:, :2])
    with pytest.raises(ValueError):
        triangulate_two_view(c1, c2, r1, r2, method="optimal")
    with pytest.raises(ValueError):
        triangulate_multiview([c1, c2], [0, 3], [0, 1], np.vstack([r1, r2]))  # ptr past the end
    with pytest.raises(ValueError):
        triangulate_multiview([c1, c2], [0, 2], [0, 2], np.vstack([r1, r2]))  # image 2 does not exist
    with pytest.raises(ValueError):
        as_projection_matrices(np.full((2, 3, 4), np.nan))
    with pytest.raises(ValueError):
        cheirality([c1], np.zeros((2, 3)), point_ptr=[0, 1], obs_image_idx=[0])
