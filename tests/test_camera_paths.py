"""Camera paths for NeRF renders (geometry/camera_paths.py): orbit, trajectory resampling, interpolation."""
from __future__ import annotations

import numpy as np
import pytest

from geometry.camera_paths import (Orbit, estimate_up, interpolate_cameras, look_at, orbit_from_cameras, orbit_path,
                                   resample_trajectory, slerp)
from scene.rigid import Rigid3d, matrix_to_quat_wxyz

CENTRE = np.array([1.0, -2.0, 0.5])
UP = np.array([0.0, 0.0, 1.0])


def _angle(a: Rigid3d, b: Rigid3d) -> float:
    r = a.rotation @ b.rotation.T
    return float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))


def test_look_at_points_the_optical_axis_at_the_target_with_image_up_along_up():
    pose = look_at([4.0, 0.0, 2.0], CENTRE, UP)
    in_camera = pose.apply([CENTRE])[0]
    np.testing.assert_allclose(in_camera[:2], 0.0, atol=1e-12)
    assert in_camera[2] == pytest.approx(np.linalg.norm(CENTRE - [4.0, 0.0, 2.0]))
    assert -pose.rotation[1] @ UP > 0.9  # OpenCV y is down: world up is image up


def test_orbit_looks_at_the_centre_keeps_its_radius_and_closes():
    orbit = Orbit(CENTRE, 2.5, np.radians(20.0), UP, np.array([1.0, 0.0, 0.0]))
    poses = orbit_path(orbit, 36)
    assert len(poses) == 36
    centres = np.array([p.center() for p in poses])
    offsets = centres - CENTRE
    np.testing.assert_allclose(np.linalg.norm(offsets[:, :2], axis=1), 2.5, rtol=1e-12)  # constant radius
    np.testing.assert_allclose(offsets[:, 2], 2.5 * np.tan(np.radians(20.0)), rtol=1e-12)  # constant height
    for pose in poses:
        ahead = pose.apply([CENTRE])[0]
        np.testing.assert_allclose(ahead[:2], 0.0, atol=1e-9)
        assert ahead[2] > 0
    steps = np.linalg.norm(np.diff(np.vstack([centres, centres[:1]]), axis=0), axis=1)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)  # the wrap-around step equals the others: closed
    angles = [_angle(poses[i], poses[(i + 1) % 36]) for i in range(36)]
    np.testing.assert_allclose(angles, angles[0], rtol=1e-6)
    assert np.linalg.norm(centres[0] - (CENTRE + [2.5, 0.0, offsets[0, 2]])) < 1e-12  # starts where asked


def test_orbit_fitted_to_cameras_around_an_object_recovers_centre_radius_elevation():
    ring = [look_at(CENTRE + [3.0 * np.cos(a), 3.0 * np.sin(a), 1.0], CENTRE, UP) for a in np.linspace(0, 5, 9)]
    orbit = orbit_from_cameras(ring, up=UP)
    np.testing.assert_allclose(orbit.centre, CENTRE, atol=1e-9)  # optical axes meet at the centre
    assert orbit.radius == pytest.approx(3.0)
    assert orbit.elevation == pytest.approx(np.arctan2(1.0, 3.0))
    np.testing.assert_allclose(orbit_from_cameras(ring).up, UP, atol=0.1)  # up estimated from the cameras
    # with sparse points the centre is their median
    points = CENTRE + np.random.default_rng(0).normal(scale=0.1, size=(500, 3)) + [0.3, 0.0, 0.0]
    assert np.linalg.norm(orbit_from_cameras(ring, points).centre - (CENTRE + [0.3, 0, 0])) < 0.03


def test_estimate_up_from_level_cameras():
    cams = [look_at([np.cos(a), 0.0, np.sin(a)], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]) for a in (0.1, 0.5)]
    np.testing.assert_allclose(estimate_up(cams), [0.0, 1.0, 0.0], atol=1e-9)


def _wobbly_trajectory() -> list[Rigid3d]:
    """A camera driving along an arc and turning with it, sampled at very uneven times."""
    s = np.sort(np.random.default_rng(3).uniform(0.0, 1.0, 40))
    s[0], s[-1] = 0.0, 1.0
    poses = []
    for u in s:
        angle = 1.5 * u
        centre = np.array([5.0 * np.sin(angle), 5.0 * (1.0 - np.cos(angle)), 1.0])
        heading = np.array([np.cos(angle), np.sin(angle), 0.0])
        poses.append(look_at(centre, centre + heading, UP))
    return poses


def test_resample_keeps_endpoints_and_moves_at_constant_speed():
    poses = _wobbly_trajectory()
    out = resample_trajectory(poses, 60)
    assert len(out) == 60
    assert out[0] == poses[0] and out[-1] == poses[-1]  # bit-exact endpoints
    centres = np.array([p.center() for p in out])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.std() / steps.mean() < 0.01  # even spacing although the input was uneven
    turns = np.array([_angle(a, b) for a, b in zip(out[:-1], out[1:])])
    assert turns.max() < 1.1 * 1.5 / 59  # smooth: no rotation jump beyond the even share
    input_steps = np.linalg.norm(np.diff([p.center() for p in poses], axis=0), axis=1)
    assert input_steps.std() / input_steps.mean() > 0.5  # (the input really was uneven)


def test_resample_smoothing_removes_jitter_and_keeps_the_ends():
    rng = np.random.default_rng(1)
    line = [look_at([x, 0.0, 0.0], [x + 1.0, 0.0, 0.0], UP) for x in np.linspace(0.0, 4.0, 41)]
    noisy = [Rigid3d(p.quat_wxyz, p.translation + rng.normal(scale=0.02, size=3)) for p in line]
    noisy[0], noisy[-1] = line[0], line[-1]
    out = resample_trajectory(noisy, 41, smooth_window=7)
    lateral = np.array([p.center()[1:] for p in out])
    raw = np.array([p.center()[1:] for p in noisy])
    assert np.abs(lateral).mean() < 0.5 * np.abs(raw).mean()
    np.testing.assert_allclose(out[0].center(), line[0].center(), atol=1e-12)
    np.testing.assert_allclose(out[-1].center(), line[-1].center(), atol=1e-12)


def test_interpolation_passes_exactly_through_the_chosen_cameras():
    keys = [look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0], UP), look_at([2.0, 0.0, 0.0], [2.0, 1.0, 0.5], UP),
            look_at([2.0, 3.0, 1.0], [0.0, 3.0, 1.0], UP)]
    path, index = interpolate_cameras(keys, 25)
    assert len(path) == 25 and index[0] == 0 and index[-1] == 24
    for key, i in zip(keys, index):
        assert path[i] == key
    # in-between frames lie on the straight segment between their two chosen cameras
    for k in range(len(keys) - 1):
        a, b = keys[k].center(), keys[k + 1].center()
        for pose in path[index[k] + 1:index[k + 1]]:
            c = pose.center()
            t = (c - a) @ (b - a) / ((b - a) @ (b - a))
            assert 0.0 < t < 1.0
            np.testing.assert_allclose(c, a + t * (b - a), atol=1e-12)
    # frames shared by segment length: the second segment is longer (3 vs 2 m) and gets more
    assert index[2] - index[1] > index[1] - index[0]


def test_slerp_halfway_and_short_arc():
    q0 = np.array([1.0, 0.0, 0.0, 0.0])
    q1 = matrix_to_quat_wxyz(look_at([0, 0, 0], [1, 0, 0], UP).rotation)
    mid = slerp(q0, q1, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(1.0)
    np.testing.assert_allclose(slerp(q0, -q1, 1.0), q1 * np.sign(q1 @ slerp(q0, -q1, 1.0)), atol=1e-12)
    np.testing.assert_allclose(slerp(q0, q1, 0.0), q0, atol=1e-12)


def test_path_input_errors():
    with pytest.raises(ValueError, match="empty"):
        resample_trajectory([], 10)
    with pytest.raises(ValueError, match="at least two"):
        interpolate_cameras([Rigid3d()], 5)
    with pytest.raises(ValueError, match="cannot pass through"):
        interpolate_cameras([Rigid3d(), Rigid3d(translation=[1.0, 0, 0])], 1)
    with pytest.raises(ValueError, match="at least one frame"):
        orbit_path(Orbit(CENTRE, 1.0, 0.0, UP, np.array([1.0, 0, 0])), 0)
