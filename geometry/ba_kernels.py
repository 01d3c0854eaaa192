"""numba kernels for bundle adjustment: residuals, analytic Jacobians, normal equations, Schur complement.

Conventions (shared with ``geometry.bundle_adjustment``):

- Poses are ``cam_from_world`` as rotation matrices ``R`` (N, 3, 3) and translations ``t`` (N, 3);
  a pose update is a left multiplication ``cam_from_world <- exp(delta) * cam_from_world`` with
  ``delta = (rho, omega)`` in ``geometry.lie``'s SE(3) tangent order (translation part first).
  At delta = 0 a camera-frame point moves by ``d p_cam = rho + omega x p_cam``, so
  ``d p_cam / d delta = [I, -hat(p_cam)]``.
- Points are updated additively (3 dof).
- Intrinsics enter through the "full" vector ``(fx, fy, cx, cy, k1, k2, p1, p2)`` which every supported
  COLMAP model maps to linearly: ``full = expand @ params``. A camera's free parameters have the
  8 x P block ``free_map`` (columns of ``expand``), so d pixel / d free = d pixel / d full @ free_map.
- Residuals are projected minus observed pixels (COLMAP pixel convention on both sides).
- Robust losses act on s = |r|^2 (pixels^2), Ceres-style: cost = 0.5 * sum rho(s); the IRLS weight is rho'(s).
  ``loss_type``: 0 trivial, 1 Huber, 2 Cauchy; ``scale`` a in pixels.

The reduced camera system's variables are the free pose blocks (6 each) followed by the free intrinsics
of each camera. Per observation, ``cidx`` (K, Dc) holds the global column of each of its Dc = 6 + Pmax
camera-side Jacobian columns, -1 where the column is fixed or unused.
"""
from __future__ import annotations

import numpy as np
from numba import njit

LOSS_TRIVIAL, LOSS_HUBER, LOSS_CAUCHY = 0, 1, 2


# --- geometry ---------------------------------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _rigid_apply(rot, trans, x0, x1, x2):
    """rot @ (x0, x1, x2) + trans, unrolled (the one place the hot loops transform a point)."""
    return (rot[0, 0] * x0 + rot[0, 1] * x1 + rot[0, 2] * x2 + trans[0],
            rot[1, 0] * x0 + rot[1, 1] * x1 + rot[1, 2] * x2 + trans[1],
            rot[2, 0] * x0 + rot[2, 1] * x1 + rot[2, 2] * x2 + trans[2])


# --- losses -----------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def robust_rho(s, loss_type, scale):
    """rho(s) for squared residual norm s (pixels^2)."""
    if loss_type == LOSS_HUBER:
        a2 = scale * scale
        if s <= a2:
            return s
        return 2.0 * scale * np.sqrt(s) - a2
    if loss_type == LOSS_CAUCHY:
        a2 = scale * scale
        return a2 * np.log1p(s / a2)
    return s


@njit(cache=True, nogil=True)
def robust_weight(s, loss_type, scale):
    """rho'(s): the IRLS weight."""
    if loss_type == LOSS_HUBER:
        if s <= scale * scale:
            return 1.0
        return scale / np.sqrt(s)
    if loss_type == LOSS_CAUCHY:
        return 1.0 / (1.0 + s / (scale * scale))
    return 1.0


# --- projection with Jacobians ------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _project_full(pc0, pc1, pc2, full, out_pix, out_dpdc, out_dfull, want_jac):
    """Pixel of camera-frame point; optionally d pixel / d p_cam (2x3) and d pixel / d full (2x8).

    Returns False when the point is not in front of the camera.
    """
    if not pc2 > 0.0:
        return False
    fx, fy, cx, cy = full[0], full[1], full[2], full[3]
    k1, k2, p1, p2 = full[4], full[5], full[6], full[7]
    iz = 1.0 / pc2
    u = pc0 * iz
    v = pc1 * iz
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2 * r2
    xd = u + u * radial + 2.0 * p1 * u * v + p2 * (r2 + 2.0 * u * u)
    yd = v + v * radial + 2.0 * p2 * u * v + p1 * (r2 + 2.0 * v * v)
    out_pix[0] = fx * xd + cx
    out_pix[1] = fy * yd + cy
    if not want_jac:
        return True
    dr = 2.0 * (k1 + 2.0 * k2 * r2)  # d(radial)/du = dr * u
    dxu = 1.0 + radial + u * u * dr + 2.0 * p1 * v + 6.0 * p2 * u
    dxv = u * v * dr + 2.0 * p1 * u + 2.0 * p2 * v
    dyu = u * v * dr + 2.0 * p2 * v + 2.0 * p1 * u
    dyv = 1.0 + radial + v * v * dr + 2.0 * p2 * u + 6.0 * p1 * v
    # d pixel / d (u, v) then d (u, v) / d p_cam = [[1/z, 0, -u/z], [0, 1/z, -v/z]]
    a00, a01 = fx * dxu, fx * dxv
    a10, a11 = fy * dyu, fy * dyv
    out_dpdc[0, 0] = a00 * iz
    out_dpdc[0, 1] = a01 * iz
    out_dpdc[0, 2] = -(a00 * u + a01 * v) * iz
    out_dpdc[1, 0] = a10 * iz
    out_dpdc[1, 1] = a11 * iz
    out_dpdc[1, 2] = -(a10 * u + a11 * v) * iz
    r4 = r2 * r2
    out_dfull[0, 0] = xd
    out_dfull[0, 1] = 0.0
    out_dfull[0, 2] = 1.0
    out_dfull[0, 3] = 0.0
    out_dfull[0, 4] = fx * u * r2
    out_dfull[0, 5] = fx * u * r4
    out_dfull[0, 6] = fx * 2.0 * u * v
    out_dfull[0, 7] = fx * (r2 + 2.0 * u * u)
    out_dfull[1, 0] = 0.0
    out_dfull[1, 1] = yd
    out_dfull[1, 2] = 0.0
    out_dfull[1, 3] = 1.0
    out_dfull[1, 4] = fy * v * r2
    out_dfull[1, 5] = fy * v * r4
    out_dfull[1, 6] = fy * (r2 + 2.0 * v * v)
    out_dfull[1, 7] = fy * 2.0 * u * v
    return True


@njit(cache=True, nogil=True)
def linearize(rotations, translations, points, cam_full, cam_free_map, cam_free_count, cam_free_offset,
              image_camera, pose_offset, obs_image, obs_point, obs_xy, obs_active):
    """Residuals and Jacobians of every observation.

    Returns residuals (K, 2), Jc (K, 2, Dc) camera-side Jacobian, cidx (K, Dc), Jp (K, 2, 3) point
    Jacobian, valid (K,) bool (active and in front of its camera).
    """
    k_obs = obs_image.shape[0]
    pmax = cam_free_map.shape[2]
    dc = 6 + pmax
    res = np.zeros((k_obs, 2))
    jc = np.empty((k_obs, 2, dc))  # read only where cidx >= 0 and valid
    cidx = -np.ones((k_obs, dc), dtype=np.int64)
    jp = np.empty((k_obs, 2, 3))
    valid = np.zeros(k_obs, dtype=np.bool_)
    pix = np.empty(2)
    dpdc = np.empty((2, 3))
    dfull = np.empty((2, 8))
    for k in range(k_obs):
        if not obs_active[k]:
            continue
        i = obs_image[k]
        j = obs_point[k]
        c = image_camera[i]
        r = rotations[i]
        x0, x1, x2 = points[j, 0], points[j, 1], points[j, 2]
        pc0, pc1, pc2 = _rigid_apply(r, translations[i], x0, x1, x2)
        if not _project_full(pc0, pc1, pc2, cam_full[c], pix, dpdc, dfull, True):
            continue
        valid[k] = True
        res[k, 0] = pix[0] - obs_xy[k, 0]
        res[k, 1] = pix[1] - obs_xy[k, 1]
        for row in range(2):
            a0, a1, a2 = dpdc[row, 0], dpdc[row, 1], dpdc[row, 2]
            # translation part: d p_cam / d rho = I
            jc[k, row, 0] = a0
            jc[k, row, 1] = a1
            jc[k, row, 2] = a2
            # rotation part: A @ (-hat(p_cam)); -hat(p) = [[0, z, -y], [-z, 0, x], [y, -x, 0]]
            jc[k, row, 3] = -a1 * pc2 + a2 * pc1
            jc[k, row, 4] = a0 * pc2 - a2 * pc0
            jc[k, row, 5] = -a0 * pc1 + a1 * pc0
            # point: A @ R
            for m in range(3):
                jp[k, row, m] = a0 * r[0, m] + a1 * r[1, m] + a2 * r[2, m]
            for m in range(cam_free_count[c]):
                acc = 0.0
                for q in range(8):
                    acc += dfull[row, q] * cam_free_map[c, q, m]
                jc[k, row, 6 + m] = acc
        if pose_offset[i] >= 0:
            for m in range(6):
                cidx[k, m] = pose_offset[i] + m
        for m in range(cam_free_count[c]):
            cidx[k, 6 + m] = cam_free_offset[c] + m
    return res, jc, cidx, jp, valid


@njit(cache=True, nogil=True)
def evaluate_cost(rotations, translations, points, cam_full, image_camera, obs_image, obs_point, obs_xy,
                  obs_active, loss_type, scale):
    """(robust cost 0.5 sum rho, sum of squared norms, number of active observations behind their camera)."""
    pix = np.empty(2)
    dpdc = np.empty((2, 3))
    dfull = np.empty((2, 8))
    cost = 0.0
    sq = 0.0
    behind = 0
    for k in range(obs_image.shape[0]):
        if not obs_active[k]:
            continue
        i = obs_image[k]
        j = obs_point[k]
        r = rotations[i]
        x0, x1, x2 = points[j, 0], points[j, 1], points[j, 2]
        pc0, pc1, pc2 = _rigid_apply(r, translations[i], x0, x1, x2)
        if not _project_full(pc0, pc1, pc2, cam_full[image_camera[i]], pix, dpdc, dfull, False):
            behind += 1
            continue
        d0 = pix[0] - obs_xy[k, 0]
        d1 = pix[1] - obs_xy[k, 1]
        s = d0 * d0 + d1 * d1
        sq += s
        cost += 0.5 * robust_rho(s, loss_type, scale)
    return cost, sq, behind


@njit(cache=True, nogil=True)
def residual_norms(rotations, translations, points, cam_full, image_camera, obs_image, obs_point, obs_xy):
    """|projected - observed| per observation; NaN behind the camera."""
    pix = np.empty(2)
    dpdc = np.empty((2, 3))
    dfull = np.empty((2, 8))
    out = np.full(obs_image.shape[0], np.nan)
    for k in range(obs_image.shape[0]):
        i = obs_image[k]
        j = obs_point[k]
        r = rotations[i]
        x0, x1, x2 = points[j, 0], points[j, 1], points[j, 2]
        pc0, pc1, pc2 = _rigid_apply(r, translations[i], x0, x1, x2)
        if _project_full(pc0, pc1, pc2, cam_full[image_camera[i]], pix, dpdc, dfull, False):
            out[k] = np.hypot(pix[0] - obs_xy[k, 0], pix[1] - obs_xy[k, 1])
    return out


# --- normal equations and the Schur complement ------------------------------------------------

@njit(cache=True, nogil=True)
def build_normal_equations(res, jc, cidx, jp, valid, obs_point, point_free, n_cam_vars, n_points,
                           loss_type, scale):
    """Accumulate the weighted normal equations H = J^T W J, g = J^T W r in block form.

    Returns U (nC, nC) dense camera block, gc (nC), V (M, 3, 3) point blocks, gp (M, 3), Wk (K, Dc, 3)
    camera-point off-diagonal block of each observation, weights (K,).
    """
    k_obs, _, dc = jc.shape
    u_mat = np.zeros((n_cam_vars, n_cam_vars))
    gc = np.zeros(n_cam_vars)
    v_blk = np.zeros((n_points, 3, 3))
    gp = np.zeros((n_points, 3))
    wk = np.empty((k_obs, dc, 3))  # read only for free points at columns with cidx >= 0
    weights = np.zeros(k_obs)
    for k in range(k_obs):
        if not valid[k]:
            continue
        s = res[k, 0] * res[k, 0] + res[k, 1] * res[k, 1]
        w = robust_weight(s, loss_type, scale)
        weights[k] = w
        for a in range(dc):
            ia = cidx[k, a]
            if ia < 0:
                continue
            ja0 = jc[k, 0, a] * w
            ja1 = jc[k, 1, a] * w
            gc[ia] += ja0 * res[k, 0] + ja1 * res[k, 1]
            for b in range(dc):
                ib = cidx[k, b]
                if ib < ia:  # upper triangle only (also skips -1); mirrored below
                    continue
                u_mat[ia, ib] += ja0 * jc[k, 0, b] + ja1 * jc[k, 1, b]
        j = obs_point[k]
        if not point_free[j]:
            continue
        for m in range(3):
            jm0 = jp[k, 0, m] * w
            jm1 = jp[k, 1, m] * w
            gp[j, m] += jm0 * res[k, 0] + jm1 * res[k, 1]
            for n in range(3):
                v_blk[j, m, n] += jm0 * jp[k, 0, n] + jm1 * jp[k, 1, n]
        for a in range(dc):
            if cidx[k, a] < 0:
                continue
            ja0 = jc[k, 0, a] * w
            ja1 = jc[k, 1, a] * w
            for m in range(3):
                wk[k, a, m] = ja0 * jp[k, 0, m] + ja1 * jp[k, 1, m]
    for a in range(n_cam_vars):
        for b in range(a):
            u_mat[a, b] = u_mat[b, a]
    return u_mat, gc, v_blk, gp, wk, weights


@njit(cache=True, nogil=True)
def _inverse_3x3(a, out):
    """Inverse by the adjugate; False when (numerically) singular."""
    c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    c01 = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
    c02 = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
    det = a[0, 0] * c00 + a[0, 1] * c01 + a[0, 2] * c02
    scale = abs(a[0, 0]) + abs(a[1, 1]) + abs(a[2, 2])
    if not (det > 1e-14 * scale * scale * scale) or not np.isfinite(det):
        return False
    inv = 1.0 / det
    out[0, 0] = c00 * inv
    out[1, 0] = c01 * inv
    out[2, 0] = c02 * inv
    out[0, 1] = (a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]) * inv
    out[1, 1] = (a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]) * inv
    out[2, 1] = (a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]) * inv
    out[0, 2] = (a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]) * inv
    out[1, 2] = (a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]) * inv
    out[2, 2] = (a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]) * inv
    return True


@njit(cache=True, nogil=True)
def schur_reduce(u_mat, gc, v_blk, gp, wk, cidx, point_ptr, point_obs, lam, diag_u, diag_v):
    """Eliminate the points from the damped system (H + lam D) delta = -g.

    Returns S (nC, nC), b (nC) of the reduced camera system S delta_c = b, the damped inverse point
    blocks V^-1 (M, 3, 3) and ok (M,) -- False where a point block is singular even when damped (that
    point then stays where it is this step).
    ``point_ptr``/``point_obs``: CSR lists of each free point's valid observations.
    """
    n_c = u_mat.shape[0]
    n_points = v_blk.shape[0]
    dc = wk.shape[1]
    s_mat = u_mat.copy()
    for a in range(n_c):
        s_mat[a, a] += lam * diag_u[a]
    b = -gc.copy()
    v_inv = np.zeros((n_points, 3, 3))
    ok = np.zeros(n_points, dtype=np.bool_)
    max_track = 0
    for j in range(n_points):
        max_track = max(max_track, point_ptr[j + 1] - point_ptr[j])
    # Per point, W summed per distinct camera column: observations that share a camera's intrinsics
    # (or, rarely, an image) then cost one column instead of one each, and the hot loop has no -1 gaps.
    slot = -np.ones(n_c, dtype=np.int64)
    cols = np.empty(max_track * dc, dtype=np.int64)
    w_sum = np.empty((max_track * dc, 3))
    y = np.empty((max_track * dc, 3))
    damped = np.empty((3, 3))
    inv = np.empty((3, 3))
    for j in range(n_points):
        start, end = point_ptr[j], point_ptr[j + 1]
        if start == end:
            continue
        for m in range(3):
            for n in range(3):
                damped[m, n] = v_blk[j, m, n]
            damped[m, m] += lam * diag_v[j, m]
        if not _inverse_3x3(damped, inv):
            continue
        ok[j] = True
        v_inv[j] = inv
        n_cols = 0
        for q in range(start, end):
            k = point_obs[q]
            for a in range(dc):
                ia = cidx[k, a]
                if ia < 0:
                    continue
                c = slot[ia]
                if c < 0:
                    c = n_cols
                    slot[ia] = c
                    cols[c] = ia
                    w_sum[c, 0] = 0.0
                    w_sum[c, 1] = 0.0
                    w_sum[c, 2] = 0.0
                    n_cols += 1
                w_sum[c, 0] += wk[k, a, 0]
                w_sum[c, 1] += wk[k, a, 1]
                w_sum[c, 2] += wk[k, a, 2]
        for c in range(n_cols):
            slot[cols[c]] = -1
            w0, w1, w2 = w_sum[c, 0], w_sum[c, 1], w_sum[c, 2]
            # Y = W V^-1
            y0 = w0 * inv[0, 0] + w1 * inv[1, 0] + w2 * inv[2, 0]
            y1 = w0 * inv[0, 1] + w1 * inv[1, 1] + w2 * inv[2, 1]
            y2 = w0 * inv[0, 2] + w1 * inv[1, 2] + w2 * inv[2, 2]
            y[c, 0], y[c, 1], y[c, 2] = y0, y1, y2
            b[cols[c]] += y0 * gp[j, 0] + y1 * gp[j, 1] + y2 * gp[j, 2]
        # S -= Y W^T over the point's columns; symmetric, so compute one triangle and mirror it.
        for c1 in range(n_cols):
            ia = cols[c1]
            y0, y1, y2 = y[c1, 0], y[c1, 1], y[c1, 2]
            s_mat[ia, ia] -= y0 * w_sum[c1, 0] + y1 * w_sum[c1, 1] + y2 * w_sum[c1, 2]
            for c2 in range(c1 + 1, n_cols):
                ib = cols[c2]
                val = y0 * w_sum[c2, 0] + y1 * w_sum[c2, 1] + y2 * w_sum[c2, 2]
                s_mat[ia, ib] -= val
                s_mat[ib, ia] -= val
    return s_mat, b, v_inv, ok


@njit(cache=True, nogil=True)
def back_substitute(delta_c, gp, wk, cidx, point_ptr, point_obs, v_inv, ok):
    """delta_p_j = -V_j^-1 (g_j + sum_a W_a^T delta_c)."""
    n_points = gp.shape[0]
    dc = wk.shape[1]
    delta_p = np.zeros((n_points, 3))
    acc = np.empty(3)
    for j in range(n_points):
        if not ok[j]:
            continue
        for m in range(3):
            acc[m] = gp[j, m]
        for q in range(point_ptr[j], point_ptr[j + 1]):
            k = point_obs[q]
            for a in range(dc):
                ia = cidx[k, a]
                if ia < 0:
                    continue
                for m in range(3):
                    acc[m] += wk[k, a, m] * delta_c[ia]
        for m in range(3):
            delta_p[j, m] = -(v_inv[j, m, 0] * acc[0] + v_inv[j, m, 1] * acc[1] + v_inv[j, m, 2] * acc[2])
    return delta_p


# --- SE(3) update -------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _se3_exp_into(xi, rot, trans):
    """exp((rho, omega)) as rotation and translation (lie.se3_exp in numba)."""
    w0, w1, w2 = xi[3], xi[4], xi[5]
    theta2 = w0 * w0 + w1 * w1 + w2 * w2
    theta = np.sqrt(theta2)
    if theta < 1e-4:
        # series: sin t / t, (1 - cos t) / t^2, (t - sin t) / t^3
        a = 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0
        b = 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0
        c = 1.0 / 6.0 - theta2 / 120.0 + theta2 * theta2 / 5040.0
    else:
        a = np.sin(theta) / theta
        b = (1.0 - np.cos(theta)) / theta2
        c = (theta - np.sin(theta)) / (theta2 * theta)
    k = np.zeros((3, 3))
    k[0, 1], k[0, 2] = -w2, w1
    k[1, 0], k[1, 2] = w2, -w0
    k[2, 0], k[2, 1] = -w1, w0
    k2 = k @ k
    for m in range(3):
        for n in range(3):
            eye = 1.0 if m == n else 0.0
            rot[m, n] = eye + a * k[m, n] + b * k2[m, n]
    for m in range(3):
        acc = 0.0
        for n in range(3):
            eye = 1.0 if m == n else 0.0
            acc += (eye + b * k[m, n] + c * k2[m, n]) * xi[n]
        trans[m] = acc


@njit(cache=True, nogil=True)
def apply_pose_updates(rotations, translations, delta_c, pose_offset):
    """cam_from_world <- exp(delta) * cam_from_world for every free pose."""
    new_r = rotations.copy()
    new_t = translations.copy()
    er = np.empty((3, 3))
    et = np.empty(3)
    xi = np.empty(6)
    for i in range(rotations.shape[0]):
        o = pose_offset[i]
        if o < 0:
            continue
        for m in range(6):
            xi[m] = delta_c[o + m]
        _se3_exp_into(xi, er, et)
        for m in range(3):
            for n in range(3):
                new_r[i, m, n] = er[m, 0] * rotations[i, 0, n] + er[m, 1] * rotations[i, 1, n] \
                    + er[m, 2] * rotations[i, 2, n]
            new_t[i, m] = er[m, 0] * translations[i, 0] + er[m, 1] * translations[i, 1] \
                + er[m, 2] * translations[i, 2] + et[m]
    return new_r, new_t


# --- pose-only optimisation (tracking hot path) -------------------------------------------------

@njit(cache=True, nogil=True)
def _pose_only_round(rot, trans, points, obs_xy, active, full, loss_type, scale, max_iterations):
    """Levenberg-Marquardt on one pose with a robust loss over the active correspondences."""
    n = points.shape[0]
    pix = np.empty(2)
    dpdc = np.empty((2, 3))
    dfull = np.empty((2, 8))
    h = np.empty((6, 6))
    g = np.empty(6)
    jrow = np.empty(6)
    er = np.empty((3, 3))
    et = np.empty(3)
    lam = 1e-4
    nu = 2.0
    iterations = 0
    need_linearize = True
    use = active.copy()
    cost = 0.0
    while iterations < max_iterations:
        if need_linearize:
            h[:, :] = 0.0
            g[:] = 0.0
            cost = 0.0
            for k in range(n):
                if not use[k]:
                    continue
                x0, x1, x2 = points[k, 0], points[k, 1], points[k, 2]
                pc0, pc1, pc2 = _rigid_apply(rot, trans, x0, x1, x2)
                if not _project_full(pc0, pc1, pc2, full, pix, dpdc, dfull, True):
                    use[k] = False  # behind the camera where this round starts: no usable residual
                    continue
                r0 = pix[0] - obs_xy[k, 0]
                r1 = pix[1] - obs_xy[k, 1]
                s = r0 * r0 + r1 * r1
                cost += 0.5 * robust_rho(s, loss_type, scale)
                w = robust_weight(s, loss_type, scale)
                for row in range(2):
                    a0, a1, a2 = dpdc[row, 0], dpdc[row, 1], dpdc[row, 2]
                    jrow[0], jrow[1], jrow[2] = a0, a1, a2
                    jrow[3] = -a1 * pc2 + a2 * pc1
                    jrow[4] = a0 * pc2 - a2 * pc0
                    jrow[5] = -a0 * pc1 + a1 * pc0
                    rr = r0 if row == 0 else r1
                    for a in range(6):
                        g[a] += w * jrow[a] * rr
                        for b in range(a, 6):
                            h[a, b] += w * jrow[a] * jrow[b]
            for a in range(6):
                for b in range(a):
                    h[a, b] = h[b, a]
            need_linearize = False
            if np.max(np.abs(g)) <= 1e-10:
                break
        damped = h.copy()
        for a in range(6):
            damped[a, a] += lam * min(max(h[a, a], 1e-6), 1e32)
        iterations += 1
        delta = np.linalg.solve(damped, -g)
        if not np.all(np.isfinite(delta)):
            lam *= nu
            nu *= 2.0
            continue
        _se3_exp_into(delta, er, et)
        new_rot = er @ rot
        new_trans = er @ trans + et
        new_cost = 0.0
        behind = False
        for k in range(n):
            if not use[k]:
                continue
            x0, x1, x2 = points[k, 0], points[k, 1], points[k, 2]
            pc0, pc1, pc2 = _rigid_apply(new_rot, new_trans, x0, x1, x2)
            if not _project_full(pc0, pc1, pc2, full, pix, dpdc, dfull, False):
                behind = True  # a step must not push a used point behind the camera
                break
            r0 = pix[0] - obs_xy[k, 0]
            r1 = pix[1] - obs_xy[k, 1]
            new_cost += 0.5 * robust_rho(r0 * r0 + r1 * r1, loss_type, scale)
        predicted = 0.0
        for a in range(6):
            predicted += 0.5 * delta[a] * (lam * min(max(h[a, a], 1e-6), 1e32) * delta[a] - g[a])
        if not behind and new_cost < cost and predicted > 0.0:
            ratio = (cost - new_cost) / predicted
            rot = new_rot
            trans = new_trans
            need_linearize = True
            lam *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
            nu = 2.0
            step = np.sqrt(np.sum(delta * delta))
            if (cost - new_cost) <= 1e-10 * cost or step <= 1e-12:
                break
        else:
            lam *= nu
            nu *= 2.0
            if lam > 1e16:
                break
    return rot, trans, iterations


@njit(cache=True, nogil=True)
def pose_only_optimize(rot, trans, points, obs_xy, full, loss_type, scale, max_iterations, inlier_threshold,
                       rounds):
    """ORB-SLAM-style rounds: optimise on the current inliers, reclassify every correspondence.

    Returns (rotation, translation, inlier mask, iterations).
    """
    n = points.shape[0]
    active = np.ones(n, dtype=np.bool_)
    for k in range(n):
        for m in range(3):
            if not np.isfinite(points[k, m]):
                active[k] = False
    total = 0
    pix = np.empty(2)
    dpdc = np.empty((2, 3))
    dfull = np.empty((2, 8))
    thr2 = inlier_threshold * inlier_threshold
    for _ in range(rounds):
        rot, trans, it = _pose_only_round(rot, trans, points, obs_xy, active, full, loss_type, scale,
                                          max_iterations)
        total += it
        changed = False
        for k in range(n):
            inlier = False
            x0, x1, x2 = points[k, 0], points[k, 1], points[k, 2]
            if np.isfinite(x0) and np.isfinite(x1) and np.isfinite(x2):
                pc0, pc1, pc2 = _rigid_apply(rot, trans, x0, x1, x2)
                if _project_full(pc0, pc1, pc2, full, pix, dpdc, dfull, False):
                    r0 = pix[0] - obs_xy[k, 0]
                    r1 = pix[1] - obs_xy[k, 1]
                    inlier = r0 * r0 + r1 * r1 <= thr2
            if inlier != active[k]:
                changed = True
            active[k] = inlier
        if not changed:
            break
    return rot, trans, active, total
