"""Lie groups: exp/log round trips on random and edge cases, against scipy (Rotation, expm)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

from geometry import lie


def _random_axes(rng, n):
    axes = rng.normal(size=(n, 3))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def _edge_rotvecs(rng) -> np.ndarray:
    """Identity, tiny angles, ordinary angles and angles at / just below pi, on random axes."""
    angles = np.array([0.0, 1e-15, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 0.1, 1.0, 2.0, 3.0,
                       np.pi - 1e-3, np.pi - 1e-6, np.pi - 1e-9, np.pi - 1e-12, np.pi])
    axes = _random_axes(rng, len(angles) * 5)
    axes[:5] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, -1, 1]]  # axis-aligned cases too
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * np.repeat(angles, 5)[:, None]


def _random_rotvecs(rng, n=500) -> np.ndarray:
    return _random_axes(rng, n) * rng.uniform(0, np.pi, n)[:, None]


def test_so3_exp_matches_scipy():
    rng = np.random.default_rng(0)
    rotvecs = np.vstack([_edge_rotvecs(rng), _random_rotvecs(rng)])
    assert np.abs(lie.so3_exp(rotvecs) - Rotation.from_rotvec(rotvecs).as_matrix()).max() < 1e-14


def test_so3_log_matches_scipy_away_from_pi():
    rng = np.random.default_rng(1)
    rotvecs = _random_axes(rng, 500) * rng.uniform(0, 3.0, 500)[:, None]
    rotations = Rotation.from_rotvec(rotvecs).as_matrix()
    assert np.abs(lie.so3_log(rotations) - Rotation.from_matrix(rotations).as_rotvec()).max() < 1e-13


def test_so3_exp_log_round_trip_edge_cases():
    rng = np.random.default_rng(2)
    rotvecs = np.vstack([_edge_rotvecs(rng), _random_rotvecs(rng)])
    rotations = lie.so3_exp(rotvecs)
    back = lie.so3_exp(lie.so3_log(rotations))
    assert np.abs(back - rotations).max() < 1e-12
    # The log itself is exact below pi; at pi the axis sign is free, so compare rotations there.
    below_pi = np.linalg.norm(rotvecs, axis=1) < np.pi - 1e-6
    assert np.abs(lie.so3_log(rotations[below_pi]) - rotvecs[below_pi]).max() < 1e-12


def test_so3_log_tiny_angles_keep_relative_precision():
    for angle in (1e-15, 1e-12, 1e-9, 1e-6):
        omega = np.array([0.6, -0.8, 0.0]) * angle
        assert np.abs(lie.so3_log(lie.so3_exp(omega)) - omega).max() < 1e-12 * angle + 1e-300


def test_so3_log_near_pi_angle():
    for angle in (np.pi, np.pi - 1e-10, np.pi - 1e-7):
        omega = np.array([2.0, -1.0, 0.5]) / np.linalg.norm([2.0, -1.0, 0.5]) * angle
        log = lie.so3_log(lie.so3_exp(omega))
        assert np.linalg.norm(log) == pytest.approx(angle, abs=1e-12)
        assert abs(abs(log @ omega) / (angle * np.linalg.norm(log)) - 1.0) < 1e-12


def test_quaternion_conversions_match_scipy():
    rng = np.random.default_rng(3)
    rotations = Rotation.from_rotvec(np.vstack([_edge_rotvecs(rng), _random_rotvecs(rng)]))
    quat_xyzw = rotations.as_quat()
    quat_wxyz = np.roll(quat_xyzw, 1, axis=1)
    quat_wxyz[quat_wxyz[:, 0] < 0] *= -1
    ours = lie.rotation_to_quat_wxyz(rotations.as_matrix())
    # w == 0 (angle pi) leaves the sign free
    sign = np.where(np.sum(ours * quat_wxyz, axis=1) < 0, -1.0, 1.0)[:, None]
    assert np.abs(ours - sign * quat_wxyz).max() < 1e-14
    assert np.abs(lie.quat_wxyz_to_rotation(quat_wxyz) - rotations.as_matrix()).max() < 1e-14


def _generator(xi, sim: bool) -> np.ndarray:
    m = np.zeros((4, 4))
    m[:3, :3] = lie.hat(xi[3:6]) + (xi[6] * np.eye(3) if sim else 0.0)
    m[:3, 3] = xi[:3]
    return m


def _tangents(rng, size: int) -> np.ndarray:
    """Random tangents with rotation angles up to just below pi, plus tiny and zero ones."""
    out = []
    for magnitude in (0.0, 1e-14, 1e-10, 1e-7, 1e-4, 1e-2, 0.3, 1.0):
        for _ in range(size):
            xi = rng.normal(size=7) * magnitude
            angle = np.linalg.norm(xi[3:6])
            if angle > 3.0:  # keep the log's principal branch (angle < pi)
                xi[3:6] *= 3.0 / angle
            out.append(xi)
    for _ in range(size * 4):
        xi = rng.normal(size=7) * np.array([3, 3, 3, 0, 0, 0, 0.7])
        xi[3:6] = _random_axes(rng, 1)[0] * rng.uniform(0, np.pi - 1e-3)
        out.append(xi)
    return np.array(out)


def test_se3_exp_matches_matrix_exponential():
    for xi in _tangents(np.random.default_rng(4), 10):
        expected = expm(_generator(xi, sim=False))
        assert np.abs(lie.se3_exp(xi[:6]) - expected).max() < 1e-12 * max(1.0, np.abs(expected).max())


def test_sim3_exp_matches_matrix_exponential():
    for xi in _tangents(np.random.default_rng(5), 10):
        expected = expm(_generator(xi, sim=True))
        got = lie.sim3_exp(xi)
        assert np.abs(got - expected).max() < 1e-12 * max(1.0, np.abs(expected).max())
        assert lie.sim3_decompose(got)[2] == pytest.approx(np.exp(xi[6]), rel=1e-14)


def test_se3_and_sim3_exp_log_round_trip():
    for xi in _tangents(np.random.default_rng(6), 10):
        t_se3 = lie.se3_exp(xi[:6])
        assert np.abs(lie.se3_exp(lie.se3_log(t_se3)) - t_se3).max() < 1e-12 * max(1.0, np.abs(t_se3).max())
        assert np.abs(lie.se3_log(t_se3) - xi[:6]).max() < 1e-12 * max(1.0, np.abs(xi).max())
        t_sim3 = lie.sim3_exp(xi)
        assert np.abs(lie.sim3_exp(lie.sim3_log(t_sim3)) - t_sim3).max() < 1e-12 * max(1.0, np.abs(t_sim3).max())
        assert np.abs(lie.sim3_log(t_sim3) - xi).max() < 1e-11 * max(1.0, np.abs(xi).max())


def test_identity_maps_to_zero():
    assert np.array_equal(lie.se3_exp(np.zeros(6)), np.eye(4))
    assert np.array_equal(lie.sim3_exp(np.zeros(7)), np.eye(4))
    assert np.array_equal(lie.se3_log(np.eye(4)), np.zeros(6))
    assert np.array_equal(lie.sim3_log(np.eye(4)), np.zeros(7))
    assert np.array_equal(lie.so3_log(np.eye(3)), np.zeros(3))


def test_compose_and_inverse():
    rng = np.random.default_rng(7)
    a = lie.sim3_exp(rng.normal(size=7))
    b = lie.sim3_exp(rng.normal(size=7))
    assert np.abs(lie.compose(a, lie.sim3_inverse(a)) - np.eye(4)).max() < 1e-12
    assert np.abs(lie.sim3_inverse(lie.compose(a, b)) - lie.compose(lie.sim3_inverse(b), lie.sim3_inverse(a))
                  ).max() < 1e-12
    r = lie.se3_exp(rng.normal(size=6))
    assert np.abs(lie.se3_inverse(r) - np.linalg.inv(r)).max() < 1e-13
    assert np.abs(lie.relative(r, a) - np.linalg.inv(r) @ a).max() < 1e-12
    stack = np.stack([r, lie.se3_exp(rng.normal(size=6))])
    assert np.abs(lie.se3_inverse(stack) @ stack - np.eye(4)).max() < 1e-13


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="6 finite values"):
        lie.se3_exp(np.zeros(5))
    with pytest.raises(ValueError, match="7 finite values"):
        lie.sim3_exp([0, 0, 0, 0, 0, np.nan, 0])
    with pytest.raises(ValueError, match="4x4"):
        lie.se3_log(np.eye(3))
    with pytest.raises(ValueError, match="determinant"):
        lie.sim3_log(np.diag([1.0, 1.0, -1.0, 1.0]))
