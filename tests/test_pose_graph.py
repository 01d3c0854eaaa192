"""Sim(3) kernels (geometry/sim3.py) and the Sim(3) pose graph (geometry/pose_graph.py) on synthetic loops
with exact ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from geometry import lie
from geometry.pose_graph import optimize_pose_graph
from geometry.sim3 import (estimate_sim3, mul4_kernel, refine_sim3, sim3_exp_kernel, sim3_inverse_kernel,
                           sim3_log_kernel, sim3_matrix, sim3_parts)
from scene.errors import ParallaxError


# --- kernels ------------------------------------------------------------------------------------------

def test_sim3_kernels_agree_with_geometry_lie():
    rng = np.random.default_rng(0)
    for scale in (1e-9, 1e-4, 0.3, 1.0, 2.5):   # tiny, small (series) and large (closed form) tangents
        for _ in range(20):
            xi = rng.normal(size=7) * scale
            xi[3:6] *= min(1.0, 3.0 / max(np.linalg.norm(xi[3:6]), 1e-300))  # rotation angle below pi
            m = sim3_exp_kernel(xi)
            assert np.allclose(m, lie.sim3_exp(xi), atol=1e-13, rtol=0)
            assert np.allclose(sim3_log_kernel(m), xi, atol=1e-11 * max(1.0, scale), rtol=0)
            assert np.allclose(sim3_inverse_kernel(m), np.linalg.inv(m), atol=1e-12, rtol=0)
            other = sim3_exp_kernel(rng.normal(size=7))
            assert np.allclose(mul4_kernel(m, other), m @ other, atol=1e-13, rtol=0)
    rotation, translation, scale = sim3_parts(sim3_matrix(lie.so3_exp([0.1, 0.2, 0.3]), [1, 2, 3], 2.5))
    assert np.isclose(scale, 2.5) and np.allclose(translation, [1, 2, 3])
    assert np.allclose(rotation, lie.so3_exp([0.1, 0.2, 0.3]))


def _two_views(rng, n=200, noise=1 / 500, outliers=40):
    """Points in camera 2, the same points in camera 1 through a known similarity, noisy normalized
    observations, and ``outliers`` corrupted 3D matches."""
    one_from_two = sim3_matrix(lie.so3_exp([0.1, -0.2, 0.3]), [0.3, -0.1, 0.2], 1.7)
    p2 = rng.uniform([-1, -1, 2], [1, 1, 4], (n, 3))
    p1 = p2 @ one_from_two[:3, :3].T + one_from_two[:3, 3]
    o1 = p1[:, :2] / p1[:, 2:] + rng.normal(scale=noise, size=(n, 2))
    o2 = p2[:, :2] / p2[:, 2:] + rng.normal(scale=noise, size=(n, 2))
    p1[:outliers] += rng.normal(scale=0.5, size=(outliers, 3))
    return one_from_two, p1, p2, o1, o2, np.full(n, noise)


def _errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(|scale error|, rotation error in degrees, translation error) of a similarity."""
    r_est, t_est, s_est = sim3_parts(estimate)
    r_true, t_true, s_true = sim3_parts(truth)
    angle = float(np.degrees(lie.rotation_angle(r_est.T @ r_true)))
    return abs(s_est - s_true), angle, float(np.linalg.norm(t_est - t_true))


def test_estimate_sim3_is_exact_on_exact_observations_despite_outliers():
    truth, p1, p2, o1, o2, sigma = _two_views(np.random.default_rng(1), noise=0.0)
    sigma = np.full(len(p1), 1 / 500)
    est = estimate_sim3(p1, p2, o1, o2, sigma, sigma, seed=0)
    assert est is not None and np.isclose(est.scale, 1.7, rtol=0, atol=1e-9)
    assert max(_errors(est.one_from_two, truth)) < 1e-7
    assert not est.inliers[:40].any() and est.inliers[40:].all()


def test_estimate_sim3_with_pixel_noise_and_outliers():
    truth, p1, p2, o1, o2, sigma = _two_views(np.random.default_rng(1))
    est = estimate_sim3(p1, p2, o1, o2, sigma, sigma, seed=0)
    assert est is not None
    d_scale, d_angle, d_trans = _errors(est.one_from_two, truth)
    assert d_scale < 0.01 * 1.7 and d_angle < 0.2 and d_trans < 0.01
    assert not est.inliers[:40].any()           # every corrupted match rejected
    assert est.inliers[40:].mean() > 0.9        # chi2 99 % gate: nearly every good one kept
    again = estimate_sim3(p1, p2, o1, o2, sigma, sigma, seed=0)
    assert np.array_equal(again.one_from_two, est.one_from_two)  # deterministic for a seed


def test_refine_sim3_moves_a_perturbed_similarity_back():
    truth, p1, p2, o1, o2, _ = _two_views(np.random.default_rng(2), noise=0.0, outliers=0)
    sigma = np.full(len(p1), 1 / 500)
    start = sim3_exp_kernel(np.array([0.01, -0.01, 0.02, 0.005, -0.01, 0.005, 0.02])) @ truth
    assert max(_errors(start, truth)) > 0.01
    refined = refine_sim3(start, p1, p2, o1, o2, sigma, sigma)
    assert refined.inliers.all() and max(_errors(refined.one_from_two, truth)) < 1e-7


def test_estimate_sim3_gives_up_on_unrelated_points_and_checks_shapes():
    rng = np.random.default_rng(3)
    p1, p2 = rng.uniform([-1, -1, 2], [1, 1, 4], (2, 60, 3))
    o1, o2 = p1[:, :2] / p1[:, 2:], p2[:, :2] / p2[:, 2:]
    sigma = np.full(60, 1 / 500)
    assert estimate_sim3(p1, p2, o1, o2, sigma, sigma, min_inliers=20) is None
    assert estimate_sim3(p1[:2], p2[:2], o1[:2], o2[:2], sigma[:2], sigma[:2]) is None
    with pytest.raises(ValueError, match="one row per match"):
        estimate_sim3(p1, p2[:10], o1, o2, sigma, sigma)


# --- pose graph ---------------------------------------------------------------------------------------

def _circle(n: int) -> np.ndarray:
    """(n, 4, 4) cam_from_world of cameras on an ellipse looking sideways (scale 1)."""
    out = []
    for i in range(n):
        a = 2 * np.pi * i / n
        world_from_cam = sim3_matrix(lie.so3_exp([0, 0, a]) @ lie.so3_exp([np.pi / 2, 0, 0]),
                                     [3 * np.cos(a), 2 * np.sin(a), 1.5 + 0.2 * np.sin(2 * a)])
        out.append(np.linalg.inv(world_from_cam))
    return np.array(out)


def _loop_edges(n: int):
    edge_i = np.concatenate([np.arange(n - 1), [n - 1], np.arange(0, n - 2, 5)])   # odometry, loop, chords
    edge_j = np.concatenate([np.arange(1, n), [0], np.arange(2, n, 5)])
    return edge_i, edge_j


def _drifted_chain(truth: np.ndarray, rng, sigma_t=0.01, sigma_r=0.005, scale_drift=0.01) -> np.ndarray:
    """Integrate the true odometry with a noisy, scale-drifting error per step (monocular drift)."""
    out = [truth[0]]
    for i in range(1, len(truth)):
        step = truth[i] @ np.linalg.inv(truth[i - 1])
        noise = sim3_exp_kernel(np.concatenate([rng.normal(scale=sigma_t, size=3), rng.normal(scale=sigma_r, size=3),
                                                [scale_drift]]))
        out.append(noise @ step @ out[-1])
    return np.array(out)


def test_pose_graph_recovers_the_ground_truth_of_a_drifted_loop():
    truth = _circle(40)
    rng = np.random.default_rng(0)
    edge_i, edge_j = _loop_edges(len(truth))
    measurements = np.array([truth[i] @ np.linalg.inv(truth[j]) for i, j in zip(edge_i, edge_j)])
    initial = _drifted_chain(truth, rng)
    fixed = np.zeros(len(truth), bool)
    fixed[0] = True
    assert np.abs(initial - truth).max() > 0.5          # the drift is large: metres and percent of scale
    result = optimize_pose_graph(initial, edge_i, edge_j, measurements, fixed)
    assert result.final_cost < 1e-20 < result.initial_cost
    assert np.abs(result.poses - truth).max() < 1e-9
    assert np.array_equal(result.poses[0], initial[0])  # the fixed node does not move


def test_pose_graph_spreads_a_loop_correction_over_drifted_odometry():
    """Odometry measured with drift (as tracking would), one exact loop edge: the optimised chain is far
    closer to the truth than the drifted one, everywhere along the loop."""
    truth = _circle(60)
    rng = np.random.default_rng(1)
    drifted = _drifted_chain(truth, rng, sigma_t=0.002, sigma_r=0.002, scale_drift=0.004)
    edge_i, edge_j = np.arange(len(truth) - 1), np.arange(1, len(truth))
    measurements = [drifted[i] @ np.linalg.inv(drifted[j]) for i, j in zip(edge_i, edge_j)]
    edge_i, edge_j = np.append(edge_i, len(truth) - 1), np.append(edge_j, 0)
    measurements.append(truth[-1] @ np.linalg.inv(truth[0]))
    fixed = np.zeros(len(truth), bool)
    fixed[0] = True
    result = optimize_pose_graph(drifted, edge_i, edge_j, np.array(measurements), fixed)

    def centre_errors(poses):
        return np.array([np.linalg.norm(np.linalg.inv(p)[:3, 3] - np.linalg.inv(t)[:3, 3])
                         for p, t in zip(poses, truth)])

    before, after = centre_errors(drifted), centre_errors(result.poses)
    assert before.max() > 0.2
    assert after.max() < 0.25 * before.max() and np.sqrt(np.mean(after ** 2)) < 0.25 * np.sqrt(np.mean(before ** 2))
    scales = np.array([sim3_parts(p)[2] for p in result.poses])
    assert np.all(np.abs(np.log(scales)) < 0.5 * abs(np.log(sim3_parts(drifted[-1])[2])) + 1e-3)


def test_pose_graph_with_nothing_to_optimise():
    truth = _circle(5)
    result = optimize_pose_graph(truth, [0], [1], [truth[0] @ np.linalg.inv(truth[1])], np.ones(5, bool))
    assert result.iterations == 0 and np.array_equal(result.poses, truth)


@pytest.mark.parametrize("case, message", [
    ("no_fixed", "fix at least one node"),
    ("index", "edge indices"),
    ("self", "to itself"),
    ("fixed_shape", "one flag per node"),
    ("reflection", "not a similarity"),
    ("nan", "NaN"),
    ("weights", "weights"),
    ("shape", r"\(K, 4, 4\)"),
])
def test_pose_graph_rejects_bad_input(case, message):
    poses = _circle(4)
    edge_i, edge_j = np.array([0, 1, 2]), np.array([1, 2, 3])
    z = np.array([poses[i] @ np.linalg.inv(poses[j]) for i, j in zip(edge_i, edge_j)])
    fixed = np.array([True, False, False, False])
    weights = None
    if case == "no_fixed":
        fixed = np.zeros(4, bool)
    elif case == "index":
        edge_j = np.array([1, 2, 4])
    elif case == "self":
        edge_j = np.array([1, 2, 2])
    elif case == "fixed_shape":
        fixed = np.array([True, False])
    elif case == "reflection":
        z[1] = z[1] @ np.diag([1.0, 1.0, -1.0, 1.0])
    elif case == "nan":
        poses = poses.copy()
        poses[2, 0, 3] = np.nan
    elif case == "weights":
        weights = np.array([1.0, -1.0, 1.0])
    elif case == "shape":
        poses = poses[:, :3]
    with pytest.raises(ParallaxError, match=message):
        optimize_pose_graph(poses, edge_i, edge_j, z, fixed, weights)
