"""Sim(3) pose-graph optimisation (Levenberg-Marquardt), as loop closing needs it (ORB-SLAM's
essential-graph optimisation).

Nodes are similarities ``cam_from_world`` (4x4 ``[[s R, t], [0, 1]]``, see ``geometry.sim3``); an edge
(i, j) carries a measured ``i_from_j`` similarity Z and the residual

    r_ij = log(Z^-1 * S_i * S_j^-1)        (7-vector: rho, omega, sigma)

weighted by a scalar per edge. Updates multiply on the left, ``S <- exp(delta) S``. The Jacobian blocks
are central differences of that exact residual (numba); the normal equations are block-sparse (7x7
blocks) and solved by a sparse LU (scipy). Nodes marked ``fixed`` hold the gauge: at least one is needed
(similarity gauge: 7 degrees of freedom).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from numba import njit

from geometry.sim3 import mul4_kernel, sim3_exp_kernel, sim3_inverse_kernel, sim3_log_kernel
from scene.errors import ParallaxError

_DIFF_STEP = 1e-6


@dataclass(frozen=True)
class PoseGraphOptions:
    max_iterations: int = 20
    initial_lambda: float = 1e-6
    function_tolerance: float = 1e-12   # stop when the relative cost decrease falls below this
    step_tolerance: float = 1e-12       # ... or the step's norm does


@dataclass
class PoseGraphResult:
    poses: np.ndarray            # (K, 4, 4) optimised cam_from_world similarities
    initial_cost: float          # 0.5 * sum w |r|^2
    final_cost: float
    iterations: int
    seconds: float


@njit(cache=True, nogil=True)
def _residual(s_i, s_j, z_inv):
    return sim3_log_kernel(mul4_kernel(mul4_kernel(z_inv, s_i), sim3_inverse_kernel(s_j)))


@njit(cache=True, nogil=True)
def _edge_terms(poses, edge_i, edge_j, z_inv, weights):
    """Residuals (E, 7), Jacobian blocks d r / d delta_i and d r / d delta_j (E, 7, 7), cost."""
    n_edges = edge_i.shape[0]
    res = np.empty((n_edges, 7))
    jac_i = np.empty((n_edges, 7, 7))
    jac_j = np.empty((n_edges, 7, 7))
    cost = 0.0
    for e in range(n_edges):
        s_i, s_j, zi = poses[edge_i[e]], poses[edge_j[e]], z_inv[e]
        r = _residual(s_i, s_j, zi)
        res[e] = r
        cost += 0.5 * weights[e] * np.sum(r * r)
        for k in range(7):
            d = np.zeros(7)
            d[k] = _DIFF_STEP
            plus = sim3_exp_kernel(d)
            d[k] = -_DIFF_STEP
            minus = sim3_exp_kernel(d)
            jac_i[e, :, k] = (_residual(mul4_kernel(plus, s_i), s_j, zi)
                              - _residual(mul4_kernel(minus, s_i), s_j, zi)) / (2 * _DIFF_STEP)
            jac_j[e, :, k] = (_residual(s_i, mul4_kernel(plus, s_j), zi)
                              - _residual(s_i, mul4_kernel(minus, s_j), zi)) / (2 * _DIFF_STEP)
    return res, jac_i, jac_j, cost


@njit(cache=True, nogil=True)
def _cost(poses, edge_i, edge_j, z_inv, weights):
    cost = 0.0
    for e in range(edge_i.shape[0]):
        r = _residual(poses[edge_i[e]], poses[edge_j[e]], z_inv[e])
        cost += 0.5 * weights[e] * np.sum(r * r)
    return cost


@njit(cache=True, nogil=True)
def _normal_equations(res, jac_i, jac_j, edge_i, edge_j, slot, weights, n_vars):
    """COO triplets of H = J^T W J (7x7 blocks, duplicates summed later) and the gradient g = J^T W r."""
    n_edges = edge_i.shape[0]
    rows = np.empty(n_edges * 4 * 49, np.int64)
    cols = np.empty(n_edges * 4 * 49, np.int64)
    vals = np.empty(n_edges * 4 * 49)
    grad = np.zeros(n_vars)
    c = 0
    for e in range(n_edges):
        w = weights[e]
        si, sj = slot[edge_i[e]], slot[edge_j[e]]
        for side_a in range(2):
            sa = si if side_a == 0 else sj
            if sa < 0:
                continue
            ja = jac_i[e] if side_a == 0 else jac_j[e]
            for a in range(7):
                acc = 0.0
                for r in range(7):
                    acc += ja[r, a] * res[e, r]
                grad[7 * sa + a] += w * acc
            for side_b in range(2):
                sb = si if side_b == 0 else sj
                if sb < 0:
                    continue
                jb = jac_i[e] if side_b == 0 else jac_j[e]
                for a in range(7):
                    for b in range(7):
                        acc = 0.0
                        for r in range(7):
                            acc += ja[r, a] * jb[r, b]
                        rows[c] = 7 * sa + a
                        cols[c] = 7 * sb + b
                        vals[c] = w * acc
                        c += 1
    return rows[:c], cols[:c], vals[:c], grad


@njit(cache=True, nogil=True)
def _apply_step(poses, step, slot):
    out = poses.copy()
    for k in range(poses.shape[0]):
        s = slot[k]
        if s >= 0:
            out[k] = mul4_kernel(sim3_exp_kernel(step[7 * s:7 * s + 7].copy()), poses[k])
    return out


def _check(poses, edge_i, edge_j, measurements, fixed, weights):
    poses = np.ascontiguousarray(poses, np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ParallaxError(f"pose graph: poses must be (K, 4, 4), got {poses.shape}")
    k = len(poses)
    edge_i = np.ascontiguousarray(edge_i, np.int64).reshape(-1)
    edge_j = np.ascontiguousarray(edge_j, np.int64).reshape(-1)
    measurements = np.ascontiguousarray(measurements, np.float64)
    if len(edge_j) != len(edge_i) or measurements.shape != (len(edge_i), 4, 4):
        raise ParallaxError(f"pose graph: {len(edge_i)} edges need as many j indices and (E, 4, 4) measurements, "
                            f"got {len(edge_j)} and {measurements.shape}")
    if len(edge_i) and (min(edge_i.min(), edge_j.min()) < 0 or max(edge_i.max(), edge_j.max()) >= k):
        raise ParallaxError(f"pose graph: edge indices must lie in [0, {k})")
    if np.any(edge_i == edge_j):
        raise ParallaxError("pose graph: an edge joins a node to itself")
    fixed = np.asarray(fixed, bool).reshape(-1)
    if fixed.shape != (k,):
        raise ParallaxError(f"pose graph: fixed must have one flag per node ({k}), got {fixed.shape}")
    if k and not fixed.any():
        raise ParallaxError("pose graph: fix at least one node (the similarity gauge is free otherwise)")
    weights = np.ones(len(edge_i)) if weights is None else np.ascontiguousarray(weights, np.float64).reshape(-1)
    if weights.shape != edge_i.shape or np.any(~np.isfinite(weights)) or np.any(weights < 0):
        raise ParallaxError("pose graph: weights must be one finite non-negative value per edge")
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(measurements))):
        raise ParallaxError("pose graph: poses or measurements contain NaN or infinity")
    for name, mats in (("pose", poses), ("measurement", measurements)):
        if len(mats) and not np.all(np.linalg.det(mats[:, :3, :3]) > 0):
            raise ParallaxError(f"pose graph: a {name} is not a similarity (non-positive determinant)")
    return poses, edge_i, edge_j, measurements, fixed, weights


def optimize_pose_graph(poses, edge_i, edge_j, measurements, fixed, weights=None,
                        options: PoseGraphOptions | None = None) -> PoseGraphResult:
    """Minimise 0.5 * sum_e w_e |log(Z_e^-1 S_i S_j^-1)|^2 over the free nodes' similarities.

    poses (K, 4, 4) initial cam_from_world similarities; edge_i/edge_j (E,) node indices; measurements
    (E, 4, 4) measured i_from_j; fixed (K,) bool; weights (E,) or None (all 1).
    """
    options = options or PoseGraphOptions()
    t0 = time.perf_counter()
    poses, edge_i, edge_j, measurements, fixed, weights = _check(poses, edge_i, edge_j, measurements, fixed, weights)
    z_inv = np.stack([np.linalg.inv(z) for z in measurements]) if len(measurements) else np.zeros((0, 4, 4))
    slot = np.full(len(poses), -1, np.int64)
    free = np.flatnonzero(~fixed)
    slot[free] = np.arange(len(free))
    n_vars = 7 * len(free)
    initial = cost = float(_cost(poses, edge_i, edge_j, z_inv, weights)) if len(edge_i) else 0.0
    if n_vars == 0 or len(edge_i) == 0:
        return PoseGraphResult(poses.copy(), initial, cost, 0, time.perf_counter() - t0)
    lam = options.initial_lambda
    iterations = 0
    for _ in range(options.max_iterations):
        iterations += 1
        res, jac_i, jac_j, cost = _edge_terms(poses, edge_i, edge_j, z_inv, weights)
        rows, cols, vals, grad = _normal_equations(res, jac_i, jac_j, edge_i, edge_j, slot, weights, n_vars)
        hessian = scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(n_vars, n_vars))
        diag = np.maximum(hessian.diagonal(), 1e-9)
        accepted = False
        for _attempt in range(10):
            damped = (hessian + scipy.sparse.diags(lam * diag)).tocsc()
            try:
                step = scipy.sparse.linalg.spsolve(damped, -grad)
            except RuntimeError:
                step = np.full(n_vars, np.nan)
            if np.all(np.isfinite(step)):
                candidate = _apply_step(poses, step, slot)
                new_cost = float(_cost(candidate, edge_i, edge_j, z_inv, weights))
                if new_cost < cost:
                    accepted = True
                    decrease = (cost - new_cost) / max(cost, 1e-300)
                    poses, cost = candidate, new_cost
                    lam = max(lam / 10.0, 1e-12)
                    break
            lam *= 10.0
        if not accepted or decrease < options.function_tolerance \
                or np.linalg.norm(step) < options.step_tolerance:
            break
    return PoseGraphResult(poses, initial, cost, iterations, time.perf_counter() - t0)
