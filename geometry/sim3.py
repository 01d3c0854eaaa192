"""Sim(3) kernels (numba): exp/log, similarity from 3D-3D matches (RANSAC + reprojection refinement).

Conventions follow ``geometry.lie``: a similarity ``a_from_b`` is the 4x4 matrix ``[[s R, t], [0, 1]]``
with ``x_a = s R x_b + t``; tangent vectors are ``(rho, omega, sigma)`` with ``s = exp(sigma)``, and
``sim3_exp_kernel`` / ``sim3_log_kernel`` agree with ``lie.sim3_exp`` / ``lie.sim3_log`` (the tests
check it). Updates multiply on the left: ``S <- exp(delta) S``.

``estimate_sim3`` is what loop closing needs for monocular maps, where the two ends of a loop disagree
in scale: matched points known in two cameras' frames (``points_1``, ``points_2``), and the normalized
image coordinates where each camera sees its own copy. RANSAC draws 3 matches, fits Umeyama's
similarity and counts the matches whose reprojection error is within a chi-square gate in *both*
images (ORB-SLAM's Sim3Solver); the best hypothesis is then refined on the inliers by Levenberg-Marquardt
on those reprojection errors with a Huber loss (ORB-SLAM's OptimizeSim3), points held fixed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

_SERIES_RADIUS = 1.0
_SERIES_TERMS = 30
# Central-difference step of the numeric Jacobians (residuals are smooth; error ~1e-10).
_DIFF_STEP = 1e-6


# --- exp / log ----------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _poly_hat(w, a, b, c):
    """a I + b hat(w) + c hat(w)^2, with hat(w)^2 = w w^T - |w|^2 I (no small-matrix BLAS calls)."""
    theta2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    out = np.empty((3, 3))
    for r in range(3):
        for q in range(3):
            out[r, q] = c * w[r] * w[q]
        out[r, r] += a - c * theta2
    out[0, 1] -= b * w[2]
    out[0, 2] += b * w[1]
    out[1, 0] += b * w[2]
    out[1, 2] -= b * w[0]
    out[2, 0] -= b * w[1]
    out[2, 1] += b * w[0]
    return out


@njit(cache=True, nogil=True)
def _so3_exp(w):
    theta2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    theta = np.sqrt(theta2)
    if theta < 1e-4:
        a = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
        b = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
    else:
        a = np.sin(theta) / theta
        b = (1.0 - np.cos(theta)) / theta2
    return _poly_hat(w, 1.0, a, b)


@njit(cache=True, nogil=True)
def _so3_log(r):
    """Rotation vector through the quaternion (Shepperd), accurate near 0 and near pi."""
    tr = r[0, 0] + r[1, 1] + r[2, 2]
    q = np.empty(4)
    if tr >= r[0, 0] and tr >= r[1, 1] and tr >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + tr, 0.0))
        q[0], q[1], q[2], q[3] = 0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
        q[0], q[1], q[2], q[3] = (r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
        q[0], q[1], q[2], q[3] = (r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
        q[0], q[1], q[2], q[3] = (r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s
    q /= np.sqrt(np.sum(q * q))
    if q[0] < 0:
        q = -q
    vn = np.sqrt(q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if vn < 1e-8:
        factor = 2.0 / q[0] * (1.0 - vn * vn / (3.0 * q[0] * q[0]))
    else:
        factor = 2.0 * np.arctan2(vn, q[0]) / vn
    return factor * q[1:]


@njit(cache=True, nogil=True)
def _w_coefficients(sigma, theta):
    """W = a I + b Omega + c Omega^2 = integral_0^1 e^(sigma t) exp(t Omega) dt (see geometry.lie)."""
    z = complex(sigma, theta)
    if abs(z) < _SERIES_RADIUS:
        a = 0.0
        b = 0.0
        c = 0.0
        zp = complex(1.0, 0.0)
        sp = 1.0
        fact = 1.0
        for k in range(_SERIES_TERMS):
            fact *= k + 1.0
            a += sp / fact
            b += zp.imag / fact
            c += (sp - zp.real) / fact
            zp *= z
            sp *= sigma
        if theta == 0.0:
            return a, 0.0, 0.0
        return a, b / theta, c / (theta * theta)
    a = np.expm1(sigma) / sigma if sigma != 0.0 else 1.0
    if theta == 0.0:
        return a, 0.0, 0.0
    phi = (np.exp(z) - 1.0) / z
    return a, phi.imag / theta, (a - phi.real) / (theta * theta)


@njit(cache=True, nogil=True)
def _w_matrix(sigma, omega):
    theta = np.sqrt(omega[0] * omega[0] + omega[1] * omega[1] + omega[2] * omega[2])
    a, b, c = _w_coefficients(sigma, theta)
    return _poly_hat(omega, a, b, c)


@njit(cache=True, nogil=True)
def _det3(m):
    return (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]) - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
            + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))


@njit(cache=True, nogil=True)
def _solve3(a, b):
    """a^-1 b for a 3x3 matrix by cofactors (small fixed size: cheaper than a LAPACK call)."""
    inv = np.empty((3, 3))
    inv[0, 0] = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    inv[0, 1] = a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]
    inv[0, 2] = a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]
    inv[1, 0] = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
    inv[1, 1] = a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]
    inv[1, 2] = a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]
    inv[2, 0] = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
    inv[2, 1] = a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]
    inv[2, 2] = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    det = a[0, 0] * inv[0, 0] + a[0, 1] * inv[1, 0] + a[0, 2] * inv[2, 0]
    out = np.empty(3)
    for r in range(3):
        out[r] = (inv[r, 0] * b[0] + inv[r, 1] * b[1] + inv[r, 2] * b[2]) / det
    return out


@njit(cache=True, nogil=True)
def mul4_kernel(a, b):
    """a @ b for 4x4 similarities (explicit loops: numba's @ calls BLAS, slow at this size)."""
    out = np.zeros((4, 4))
    for r in range(3):
        for c in range(4):
            out[r, c] = a[r, 0] * b[0, c] + a[r, 1] * b[1, c] + a[r, 2] * b[2, c]
        out[r, 3] += a[r, 3]
    out[3, 3] = 1.0
    return out


@njit(cache=True, nogil=True)
def sim3_exp_kernel(xi):
    """(rho, omega, sigma) (7,) -> 4x4 [[s R, t], [0, 1]]."""
    out = np.eye(4)
    omega = xi[3:6].copy()
    out[:3, :3] = np.exp(xi[6]) * _so3_exp(omega)
    w = _w_matrix(xi[6], omega)
    for r in range(3):
        out[r, 3] = w[r, 0] * xi[0] + w[r, 1] * xi[1] + w[r, 2] * xi[2]
    return out


@njit(cache=True, nogil=True)
def sim3_scale_kernel(m):
    return np.cbrt(_det3(m))


@njit(cache=True, nogil=True)
def sim3_log_kernel(m):
    """4x4 similarity -> (rho, omega, sigma)."""
    s = sim3_scale_kernel(m)
    rot = m[:3, :3] / s
    omega = _so3_log(rot)
    sigma = np.log(s)
    rho = _solve3(_w_matrix(sigma, omega), m[:3, 3])
    out = np.empty(7)
    out[:3] = rho
    out[3:6] = omega
    out[6] = sigma
    return out


@njit(cache=True, nogil=True)
def sim3_inverse_kernel(m):
    s = sim3_scale_kernel(m)
    out = np.eye(4)
    rt = m[:3, :3].T / (s * s)          # (s R)^-1 = R^T / s
    out[:3, :3] = rt
    for r in range(3):
        out[r, 3] = -(rt[r, 0] * m[0, 3] + rt[r, 1] * m[1, 3] + rt[r, 2] * m[2, 3])
    return out


def sim3_matrix(rotation, translation, scale: float = 1.0) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(rotation, np.float64)
    out[:3, 3] = translation
    return out


def sim3_parts(matrix) -> tuple[np.ndarray, np.ndarray, float]:
    """4x4 similarity -> (R, t, s)."""
    m = np.asarray(matrix, np.float64)
    s = float(np.cbrt(np.linalg.det(m[:3, :3])))
    return m[:3, :3] / s, m[:3, 3].copy(), s


# --- Umeyama on small sets ------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def umeyama_kernel(src, dst):
    """4x4 similarity dst_from_src minimising sum |dst - (s R src + t)|^2; identity scale 0 if degenerate."""
    n = src.shape[0]
    mx = np.zeros(3)
    my = np.zeros(3)
    for i in range(n):
        mx += src[i]
        my += dst[i]
    mx /= n
    my /= n
    cov = np.zeros((3, 3))
    var = 0.0
    for i in range(n):
        dx = src[i] - mx
        dy = dst[i] - my
        var += dx[0] * dx[0] + dx[1] * dx[1] + dx[2] * dx[2]
        for a in range(3):
            for b in range(3):
                cov[a, b] += dy[a] * dx[b]
    out = np.eye(4)
    if not var > 1e-300:
        out[:3, :3] = 0.0
        return out
    cov /= n
    var /= n
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[2] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (d[0] * sign[0] + d[1] * sign[1] + d[2] * sign[2]) / var
    out[:3, :3] = scale * rot
    out[:3, 3] = my - scale * (rot @ mx)
    return out


# --- RANSAC and refinement on reprojection errors --------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _apply(m, p):
    out = np.empty(3)
    for a in range(3):
        out[a] = m[a, 0] * p[0] + m[a, 1] * p[1] + m[a, 2] * p[2] + m[a, 3]
    return out


@njit(cache=True, nogil=True)
def _reprojection_sq(s12, points_1, points_2, obs_1, obs_2, out1, out2):
    """Squared normalized-plane errors of points_2 mapped into camera 1 and points_1 into camera 2
    (inf when behind a camera)."""
    s21 = sim3_inverse_kernel(s12)
    for i in range(points_1.shape[0]):
        p = _apply(s12, points_2[i])
        if p[2] <= 0.0:
            out1[i] = np.inf
        else:
            ex, ey = p[0] / p[2] - obs_1[i, 0], p[1] / p[2] - obs_1[i, 1]
            out1[i] = ex * ex + ey * ey
        q = _apply(s21, points_1[i])
        if q[2] <= 0.0:
            out2[i] = np.inf
        else:
            ex, ey = q[0] / q[2] - obs_2[i, 0], q[1] / q[2] - obs_2[i, 1]
            out2[i] = ex * ex + ey * ey


@njit(cache=True, nogil=True)
def sim3_ransac_kernel(points_1, points_2, obs_1, obs_2, max_sq_1, max_sq_2, samples):
    """Best 1_from_2 similarity over the 3-match ``samples`` (H, 3), and its inlier mask."""
    n = points_1.shape[0]
    best = np.eye(4)
    best_count = -1
    best_mask = np.zeros(n, np.bool_)
    e1 = np.empty(n)
    e2 = np.empty(n)
    src = np.empty((3, 3))
    dst = np.empty((3, 3))
    for h in range(samples.shape[0]):
        a, b, c = samples[h, 0], samples[h, 1], samples[h, 2]
        if a == b or b == c or a == c:
            continue
        src[0], src[1], src[2] = points_2[a], points_2[b], points_2[c]
        dst[0], dst[1], dst[2] = points_1[a], points_1[b], points_1[c]
        s12 = umeyama_kernel(src, dst)
        if not _det3(s12) > 0.0:
            continue
        _reprojection_sq(s12, points_1, points_2, obs_1, obs_2, e1, e2)
        count = 0
        for i in range(n):
            if e1[i] <= max_sq_1[i] and e2[i] <= max_sq_2[i]:
                count += 1
        if count > best_count:
            best_count = count
            best = s12
            for i in range(n):
                best_mask[i] = e1[i] <= max_sq_1[i] and e2[i] <= max_sq_2[i]
    return best, best_mask


@njit(cache=True, nogil=True)
def _weighted_residuals(s12, points_1, points_2, obs_1, obs_2, inv_sigma_1, inv_sigma_2, mask, out):
    """(4N,) whitened reprojection residuals (rows of unused matches are 0); large for points behind."""
    s21 = sim3_inverse_kernel(s12)
    for i in range(points_1.shape[0]):
        if not mask[i]:
            out[4 * i:4 * i + 4] = 0.0
            continue
        p = _apply(s12, points_2[i])
        q = _apply(s21, points_1[i])
        z1 = p[2] if p[2] > 1e-9 else 1e-9
        z2 = q[2] if q[2] > 1e-9 else 1e-9
        out[4 * i] = (p[0] / z1 - obs_1[i, 0]) * inv_sigma_1[i]
        out[4 * i + 1] = (p[1] / z1 - obs_1[i, 1]) * inv_sigma_1[i]
        out[4 * i + 2] = (q[0] / z2 - obs_2[i, 0]) * inv_sigma_2[i]
        out[4 * i + 3] = (q[1] / z2 - obs_2[i, 1]) * inv_sigma_2[i]


@njit(cache=True, nogil=True)
def _huber_cost(r, delta, weights):
    """0.5 sum rho(|r_pair|^2) per image observation (pairs of rows); IRLS weights into ``weights``."""
    cost = 0.0
    d2 = delta * delta
    for i in range(r.shape[0] // 2):
        e2 = r[2 * i] * r[2 * i] + r[2 * i + 1] * r[2 * i + 1]
        if e2 <= d2:
            cost += 0.5 * e2
            weights[i] = 1.0
        else:
            e = np.sqrt(e2)
            cost += delta * e - 0.5 * d2
            weights[i] = delta / e
    return cost


@njit(cache=True, nogil=True)
def sim3_refine_kernel(s12, points_1, points_2, obs_1, obs_2, inv_sigma_1, inv_sigma_2, mask, delta, iterations):
    """Levenberg-Marquardt on the whitened two-way reprojection errors, Huber(delta), numeric Jacobian."""
    n = points_1.shape[0]
    r = np.empty(4 * n)
    r_try = np.empty(4 * n)
    w = np.empty(2 * n)
    w_try = np.empty(2 * n)
    jac = np.empty((4 * n, 7))
    rp = np.empty(4 * n)
    rm = np.empty(4 * n)
    _weighted_residuals(s12, points_1, points_2, obs_1, obs_2, inv_sigma_1, inv_sigma_2, mask, r)
    cost = _huber_cost(r, delta, w)
    lam = 1e-3
    relative = 1.0
    current = s12.copy()
    for _ in range(iterations):
        for k in range(7):
            d = np.zeros(7)
            d[k] = _DIFF_STEP
            _weighted_residuals(mul4_kernel(sim3_exp_kernel(d), current), points_1, points_2, obs_1, obs_2,
                                inv_sigma_1, inv_sigma_2, mask, rp)
            d[k] = -_DIFF_STEP
            _weighted_residuals(mul4_kernel(sim3_exp_kernel(d), current), points_1, points_2, obs_1, obs_2,
                                inv_sigma_1, inv_sigma_2, mask, rm)
            jac[:, k] = (rp - rm) / (2.0 * _DIFF_STEP)
        h = np.zeros((7, 7))
        g = np.zeros(7)
        for row in range(4 * n):
            wr = w[row // 2]
            for a in range(7):
                g[a] += wr * jac[row, a] * r[row]
                for b in range(7):
                    h[a, b] += wr * jac[row, a] * jac[row, b]
        improved = False
        for _attempt in range(10):
            damped = h.copy()
            for a in range(7):
                damped[a, a] += lam * max(h[a, a], 1e-9)
            step = np.linalg.solve(damped, -g)
            candidate = mul4_kernel(sim3_exp_kernel(step), current)
            _weighted_residuals(candidate, points_1, points_2, obs_1, obs_2, inv_sigma_1, inv_sigma_2, mask, r_try)
            cost_try = _huber_cost(r_try, delta, w_try)
            if cost_try < cost:
                current = candidate
                r[:] = r_try
                w[:] = w_try
                relative = (cost - cost_try) / max(cost, 1e-300)
                cost = cost_try
                lam = max(lam / 3.0, 1e-9)
                improved = True
                break
            lam *= 4.0
        if not improved or relative < 1e-10:
            break
    return current, cost


@dataclass(frozen=True)
class Sim3Estimate:
    one_from_two: np.ndarray     # 4x4 similarity mapping camera-2 coordinates to camera-1 coordinates
    inliers: np.ndarray          # (N,) bool
    scale: float


def _estimate(one_from_two: np.ndarray, inliers: np.ndarray) -> Sim3Estimate:
    return Sim3Estimate(one_from_two, inliers, float(np.cbrt(np.linalg.det(one_from_two[:3, :3]))))


def _match_arrays(points_1, points_2, obs_1, obs_2, sigma_1, sigma_2) -> tuple:
    """The matches as contiguous float64 arrays the kernels take: (N, 3) points, (N, 2) observations, (N,) sigmas."""
    def rows(values, width):
        return np.ascontiguousarray(values, np.float64).reshape(-1, width)

    return (rows(points_1, 3), rows(points_2, 3), rows(obs_1, 2), rows(obs_2, 2), rows(sigma_1, 1).reshape(-1),
            rows(sigma_2, 1).reshape(-1))


def estimate_sim3(points_1, points_2, obs_1, obs_2, sigma_1, sigma_2, iterations: int = 300, seed: int = 0,
                  chi2: float = 9.210, refine_rounds: int = 2, min_inliers: int = 3) -> Sim3Estimate | None:
    """Similarity camera1_from_camera2 from matched points.

    points_1/points_2 (N, 3): the same physical points in each camera's coordinates (map points of each
    side); obs_1/obs_2 (N, 2): normalized image coordinates of the keypoints each camera matched them to;
    sigma_1/sigma_2 (N,): measurement sigma in normalized units (pyramid-level scale / focal length).
    A match is an inlier when both reprojection errors are within ``chi2`` (2 dof; 9.21 is 99 %) sigmas^2.
    Returns None with fewer than ``min_inliers`` inliers. Deterministic for a given ``seed``.
    """
    p1, p2, o1, o2, s1, s2 = _match_arrays(points_1, points_2, obs_1, obs_2, sigma_1, sigma_2)
    n = len(p1)
    if not (len(p2) == len(o1) == len(o2) == len(s1) == len(s2) == n):
        raise ValueError("estimate_sim3: every input needs one row per match")
    if n < max(3, min_inliers):
        return None
    finite = (np.all(np.isfinite(p1), axis=1) & np.all(np.isfinite(p2), axis=1) & np.all(np.isfinite(o1), axis=1)
              & np.all(np.isfinite(o2), axis=1))
    if finite.sum() < 3:
        return None
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(finite)
    samples = valid[np.stack([rng.choice(len(valid), 3, replace=False) for _ in range(iterations)])]
    max1, max2 = chi2 * s1 ** 2, chi2 * s2 ** 2
    best, mask = sim3_ransac_kernel(p1, p2, o1, o2, max1, max2, samples.astype(np.int64))
    if mask.sum() < max(3, min_inliers):
        return None
    e1, e2 = np.empty(n), np.empty(n)
    delta = float(np.sqrt(chi2))
    for _ in range(refine_rounds):
        best, _ = sim3_refine_kernel(best, p1, p2, o1, o2, 1.0 / s1, 1.0 / s2, mask, delta, 10)
        _reprojection_sq(best, p1, p2, o1, o2, e1, e2)
        mask = finite & (e1 <= max1) & (e2 <= max2)
        if mask.sum() < max(3, min_inliers):
            return None
    return _estimate(best, mask)


def refine_sim3(one_from_two, points_1, points_2, obs_1, obs_2, sigma_1, sigma_2, chi2: float = 9.210,
                rounds: int = 2) -> Sim3Estimate:
    """Refine a similarity on all the given matches (Huber), reclassifying inliers after each round."""
    p1, p2, o1, o2, s1, s2 = _match_arrays(points_1, points_2, obs_1, obs_2, sigma_1, sigma_2)
    n = len(p1)
    mask = np.all(np.isfinite(p1), axis=1) & np.all(np.isfinite(p2), axis=1)
    best = np.ascontiguousarray(one_from_two, np.float64)
    e1, e2 = np.empty(n), np.empty(n)
    max1, max2 = chi2 * s1 ** 2, chi2 * s2 ** 2
    for _ in range(rounds):
        if mask.sum() < 3:
            break
        best, _ = sim3_refine_kernel(best, p1, p2, o1, o2, 1.0 / s1, 1.0 / s2, mask, float(np.sqrt(chi2)), 10)
        _reprojection_sq(best, p1, p2, o1, o2, e1, e2)
        mask = np.isfinite(e1) & (e1 <= max1) & (e2 <= max2)
    return _estimate(best, mask)
