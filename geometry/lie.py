"""SO(3), SE(3) and Sim(3) as plain arrays: exp/log maps, composition, inverses.

Tangent-vector order follows Sophus: SE(3) ``xi = (rho, omega)`` (translation part first),
Sim(3) ``xi = (rho, omega, sigma)`` with scale ``s = exp(sigma)``. Group elements are 4x4
matrices; a Sim(3) matrix is ``[[s R, t], [0, 1]]`` so that ``x_a = s R x_b + t``.

``so3_exp``/``so3_log`` also accept stacks (..., 3) / (..., 3, 3).
"""
from __future__ import annotations

import numpy as np

# Below this |z| the Taylor series of (e^z - 1)/z is used instead of the closed form.
_SERIES_RADIUS = 1.0
_SERIES_TERMS = 30


def hat(omega) -> np.ndarray:
    """(..., 3) vector -> (..., 3, 3) skew-symmetric matrix with hat(a) @ b == cross(a, b)."""
    w = np.asarray(omega, dtype=np.float64)
    out = np.zeros(w.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -w[..., 2], w[..., 1]
    out[..., 1, 0], out[..., 1, 2] = w[..., 2], -w[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -w[..., 1], w[..., 0]
    return out


def vee(matrix) -> np.ndarray:
    """Inverse of ``hat`` (uses the antisymmetric part)."""
    m = np.asarray(matrix, dtype=np.float64)
    return 0.5 * np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                           m[..., 1, 0] - m[..., 0, 1]], axis=-1)


# --- SO(3) ----------------------------------------------------------------------------------

def so3_exp(omega) -> np.ndarray:
    """Rotation vector (axis * angle), shape (..., 3) -> rotation matrix (..., 3, 3)."""
    w = np.asarray(omega, dtype=np.float64)
    if w.shape[-1:] != (3,):
        raise ValueError(f"rotation vector must end in 3 values, got shape {w.shape}")
    theta2 = np.sum(w * w, axis=-1)
    theta = np.sqrt(theta2)
    small = theta < 1e-4
    safe = np.where(small, 1.0, theta)
    # Series keep sin(t)/t and (1-cos t)/t^2 exact to rounding for tiny angles.
    a = np.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - np.cos(safe)) / (safe * safe))
    k = hat(w)
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotation_to_quat_wxyz(rotation) -> np.ndarray:
    """(..., 3, 3) rotation -> (..., 4) unit quaternion (w, x, y, z) with w >= 0 (Shepperd)."""
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must end in 3x3, got shape {r.shape}")
    flat = r.reshape(-1, 3, 3)
    q = np.empty((len(flat), 4))
    diag = np.stack([flat[:, 0, 0], flat[:, 1, 1], flat[:, 2, 2]], axis=1)
    trace = diag.sum(axis=1)
    # Pick the largest of (w, x, y, z) to divide by: no cancellation anywhere, also near pi.
    choice = np.argmax(np.column_stack([trace, diag]), axis=1)
    for case in range(4):
        m = flat[choice == case]
        if not len(m):
            continue
        if case == 0:
            s = 2.0 * np.sqrt(1.0 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2])
            qc = np.column_stack([0.25 * s, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s,
                                  (m[:, 1, 0] - m[:, 0, 1]) / s])
        elif case == 1:
            s = 2.0 * np.sqrt(1.0 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2])
            qc = np.column_stack([(m[:, 2, 1] - m[:, 1, 2]) / s, 0.25 * s, (m[:, 0, 1] + m[:, 1, 0]) / s,
                                  (m[:, 0, 2] + m[:, 2, 0]) / s])
        elif case == 2:
            s = 2.0 * np.sqrt(1.0 + m[:, 1, 1] - m[:, 0, 0] - m[:, 2, 2])
            qc = np.column_stack([(m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 0, 1] + m[:, 1, 0]) / s, 0.25 * s,
                                  (m[:, 1, 2] + m[:, 2, 1]) / s])
        else:
            s = 2.0 * np.sqrt(1.0 + m[:, 2, 2] - m[:, 0, 0] - m[:, 1, 1])
            qc = np.column_stack([(m[:, 1, 0] - m[:, 0, 1]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s,
                                  (m[:, 1, 2] + m[:, 2, 1]) / s, 0.25 * s])
        q[choice == case] = qc
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0
    return q.reshape(r.shape[:-2] + (4,))


def quat_wxyz_to_rotation(quat_wxyz) -> np.ndarray:
    """(..., 4) quaternion (w, x, y, z), normalised here -> (..., 3, 3) rotation."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm == 0.0):
        raise ValueError("quaternions must be finite and non-zero")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    out = np.empty(q.shape[:-1] + (3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
    out[..., 1, 0], out[..., 1, 1], out[..., 1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
    out[..., 2, 0], out[..., 2, 1], out[..., 2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    return out


def quat_wxyz_to_rotvec(quat_wxyz) -> np.ndarray:
    """(..., 4) quaternion -> (..., 3) rotation vector with angle in [0, pi]."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    vn = np.linalg.norm(v, axis=-1)
    # angle / |v| = 2 atan2(|v|, w) / |v|; its series 2/w (1 - |v|^2 / (3 w^2)) for tiny |v|.
    small = vn < 1e-8
    factor = np.where(small, 2.0 / w * (1.0 - vn * vn / (3.0 * w * w)),
                      2.0 * np.arctan2(vn, w) / np.where(small, 1.0, vn))
    return factor[..., None] * v


def so3_log(rotation) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> rotation vector (..., 3), accurate near 0 and near pi."""
    return quat_wxyz_to_rotvec(rotation_to_quat_wxyz(rotation))


def rotation_angle(rotation) -> np.ndarray | float:
    """Angle in radians, in [0, pi], of (..., 3, 3) rotations."""
    angle = np.linalg.norm(so3_log(rotation), axis=-1)
    return float(angle) if np.ndim(angle) == 0 else angle


# --- SE(3) / Sim(3) -------------------------------------------------------------------------

def _w_coefficients(sigma: float, theta: float) -> tuple[float, float, float]:
    """W = a I + b Omega + c Omega^2 with W = integral_0^1 e^(sigma t) exp(t Omega) dt.

    With z = sigma + i theta and phi(z) = (e^z - 1) / z: a = phi(sigma), b = Im phi(z) / theta,
    c = (a - Re phi(z)) / theta^2. For SE(3) sigma = 0, which gives the usual V matrix.
    Cancellation in b, c only costs absolute error ~eps after multiplying by Omega, Omega^2.
    """
    z = complex(sigma, theta)
    if abs(z) < _SERIES_RADIUS:
        k = np.arange(_SERIES_TERMS)
        factorials = np.cumprod(k + 1.0)  # (k + 1)!
        z_powers = z ** k
        sigma_powers = sigma ** k.astype(np.float64)
        a = float(np.sum(sigma_powers / factorials))
        if theta == 0.0:
            return a, 0.0, 0.0  # multiplied by a zero Omega anyway
        b = float(np.sum(z_powers.imag / factorials)) / theta
        # a - Re phi term by term, so a tiny theta keeps its leading term.
        c = float(np.sum((sigma_powers - z_powers.real) / factorials)) / (theta * theta)
        return a, b, c
    a = np.expm1(sigma) / sigma if sigma != 0.0 else 1.0
    if theta == 0.0:
        return a, 0.0, 0.0
    phi = (np.exp(z) - 1.0) / z
    return a, phi.imag / theta, (a - phi.real) / (theta * theta)


def _w_matrix(sigma: float, omega: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(omega))
    a, b, c = _w_coefficients(float(sigma), theta)
    k = hat(omega)
    return a * np.eye(3) + b * k + c * (k @ k)


def _vector(xi, size: int, name: str) -> np.ndarray:
    v = np.asarray(xi, dtype=np.float64).reshape(-1)
    if v.size != size or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be {size} finite values, got {np.asarray(xi).shape}")
    return v


def _matrix4(m, name: str) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite 4x4 matrix, got shape {a.shape}")
    return a


def se3_exp(xi) -> np.ndarray:
    """(rho, omega) -> 4x4 rigid transform."""
    v = _vector(xi, 6, "se3 tangent")
    out = np.eye(4)
    out[:3, :3] = so3_exp(v[3:])
    out[:3, 3] = _w_matrix(0.0, v[3:]) @ v[:3]
    return out


def se3_log(transform) -> np.ndarray:
    """4x4 rigid transform -> (rho, omega)."""
    m = _matrix4(transform, "SE(3) matrix")
    omega = so3_log(m[:3, :3])
    rho = np.linalg.solve(_w_matrix(0.0, omega), m[:3, 3])
    return np.concatenate([rho, omega])


def sim3_exp(xi) -> np.ndarray:
    """(rho, omega, sigma) -> 4x4 similarity [[s R, t], [0, 1]] with s = exp(sigma)."""
    v = _vector(xi, 7, "sim3 tangent")
    out = np.eye(4)
    out[:3, :3] = np.exp(v[6]) * so3_exp(v[3:6])
    out[:3, 3] = _w_matrix(v[6], v[3:6]) @ v[:3]
    return out


def sim3_decompose(transform) -> tuple[np.ndarray, np.ndarray, float]:
    """[[s R, t], [0, 1]] -> (R, t, s)."""
    m = _matrix4(transform, "Sim(3) matrix")
    det = np.linalg.det(m[:3, :3])
    if not det > 0.0:
        raise ValueError(f"Sim(3) matrix has non-positive determinant {det}")
    s = float(np.cbrt(det))
    return m[:3, :3] / s, m[:3, 3].copy(), s


def sim3_from_parts(rotation, translation, scale: float = 1.0) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(rotation, dtype=np.float64)
    out[:3, 3] = translation
    return out


def sim3_log(transform) -> np.ndarray:
    """4x4 similarity -> (rho, omega, sigma)."""
    rotation, translation, scale = sim3_decompose(transform)
    omega = so3_log(rotation)
    sigma = float(np.log(scale))
    rho = np.linalg.solve(_w_matrix(sigma, omega), translation)
    return np.concatenate([rho, omega, [sigma]])


def compose(a_from_b, b_from_c) -> np.ndarray:
    """a_from_c for 4x4 SE(3) or Sim(3) matrices (or stacks of them)."""
    return np.asarray(a_from_b, dtype=np.float64) @ np.asarray(b_from_c, dtype=np.float64)


def se3_inverse(a_from_b) -> np.ndarray:
    """Exact inverse of rigid transforms (..., 4, 4) using R^T."""
    m = np.asarray(a_from_b, dtype=np.float64)
    out = np.zeros_like(m)
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def sim3_inverse(a_from_b) -> np.ndarray:
    """Inverse of [[s R, t], [0, 1]]: [[R^T / s, -R^T t / s], [0, 1]]."""
    rotation, translation, scale = sim3_decompose(a_from_b)
    return sim3_from_parts(rotation.T / scale, -rotation.T @ translation / scale)


def relative(a_from_b, a_from_c) -> np.ndarray:
    """b_from_c = inverse(a_from_b) @ a_from_c for rigid transforms (stacks allowed)."""
    return se3_inverse(a_from_b) @ np.asarray(a_from_c, dtype=np.float64)
