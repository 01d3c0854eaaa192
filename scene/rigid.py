"""Rigid transforms as plain values: ``Rigid3d`` maps points from frame b to frame a.

Names carry the direction (``cam_from_world``): ``a_from_b * b_from_c == a_from_c``.
Quaternions follow COLMAP's storage order (w, x, y, z) unless the name says ``xyzw``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def quat_wxyz_to_matrix(quat_wxyz) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix. Normalises its input."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n == 0.0:
        raise ValueError(f"invalid quaternion {q.tolist()}")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat_wxyz(rotation) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = np.array([(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s])
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = np.array([(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = np.array([(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s])
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


@dataclass(frozen=True)
class Rigid3d:
    """x_a = rotation @ x_b + translation for a transform named ``a_from_b``.

    The quaternion given at construction is kept verbatim (``quat_wxyz``) so that
    COLMAP/TUM round trips are bit-exact; the matrix is derived from it.
    """

    quat_wxyz: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        q = np.array(self.quat_wxyz, dtype=np.float64).reshape(4)
        t = np.array(self.translation, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
            raise ValueError("transform contains NaN or infinity")
        if abs(np.linalg.norm(q) - 1.0) > 1e-6:
            q = q / np.linalg.norm(q)
        q.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "quat_wxyz", q)
        object.__setattr__(self, "translation", t)

    @classmethod
    def from_matrix(cls, matrix) -> "Rigid3d":
        m = np.asarray(matrix, dtype=np.float64)
        return cls(matrix_to_quat_wxyz(m[:3, :3]), m[:3, 3])

    @classmethod
    def from_rotation(cls, rotation, translation) -> "Rigid3d":
        return cls(matrix_to_quat_wxyz(rotation), translation)

    @property
    def rotation(self) -> np.ndarray:
        return quat_wxyz_to_matrix(self.quat_wxyz)

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def matrix3x4(self) -> np.ndarray:
        return self.matrix()[:3]

    def inverse(self) -> "Rigid3d":
        rot_t = self.rotation.T
        q = self.quat_wxyz * np.array([1.0, -1.0, -1.0, -1.0])
        return Rigid3d(q, -rot_t @ self.translation)

    def __mul__(self, other: "Rigid3d") -> "Rigid3d":
        return Rigid3d.from_rotation(self.rotation @ other.rotation,
                                     self.rotation @ other.translation + self.translation)

    def apply(self, points) -> np.ndarray:
        """Transform (N, 3) points from frame b to frame a."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.rotation.T + self.translation

    def center(self) -> np.ndarray:
        """For ``cam_from_world``: the camera centre in world coordinates."""
        return -self.rotation.T @ self.translation

    def __eq__(self, other) -> bool:
        return (isinstance(other, Rigid3d) and np.array_equal(self.quat_wxyz, other.quat_wxyz)
                and np.array_equal(self.translation, other.translation))

    def __hash__(self):
        return hash((self.quat_wxyz.tobytes(), self.translation.tobytes()))
