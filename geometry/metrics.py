"""Trajectory accuracy: timestamp association, alignment, ATE and RPE (evo's definitions).

- ``associate`` matches poses by nearest timestamp within ``max_diff`` seconds, like evo's
  ``associate_trajectories`` (the shorter trajectory drives the matching).
- ``ate`` is evo's APE on the translation part: |aligned est position - gt position| per pose.
- ``rpe`` is evo's RPE on the translation part with ``delta`` frames between consecutive pairs:
  E_ij = (gt_i^-1 gt_j)^-1 (est_i^-1 est_j), error |t(E_ij)|.
Both also report rotation errors in degrees (angle of est^-1 gt, resp. of R(E_ij)).

Alignment modes (est is moved onto gt, as evo's ``--align`` / ``--correct_scale`` do):
``sim3`` (rotation, translation and scale), ``se3`` (rotation and translation), ``scale``
(scale about the origin only) and ``none``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scene.errors import ParallaxError
from scene.model import Trajectory

from .align import umeyama
from .lie import quat_wxyz_to_rotation, rotation_angle, rotation_to_quat_wxyz

ALIGN_MODES = ("sim3", "se3", "scale", "none")
DEFAULT_MAX_DIFF = 0.01  # seconds, evo's default


@dataclass(frozen=True)
class ErrorStats:
    """evo's statistics over one error array (std is the population standard deviation)."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float

    @classmethod
    def from_errors(cls, errors) -> "ErrorStats":
        e = np.asarray(errors, dtype=np.float64).reshape(-1)
        if e.size == 0:
            raise ParallaxError("no errors to summarise (no matched poses or pose pairs)")
        squared = e * e
        return cls(rmse=float(np.sqrt(np.mean(squared))), mean=float(np.mean(e)), median=float(np.median(e)),
                   std=float(np.std(e)), min=float(np.min(e)), max=float(np.max(e)), sse=float(np.sum(squared)))

    def as_dict(self) -> dict[str, float]:
        return {"rmse": self.rmse, "mean": self.mean, "median": self.median, "std": self.std,
                "min": self.min, "max": self.max, "sse": self.sse}


@dataclass(frozen=True)
class Alignment:
    """gt_from_est as a similarity: aligned position = scale * rotation @ p + translation."""

    mode: str
    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    @classmethod
    def identity(cls) -> "Alignment":
        return cls("none", np.eye(3), np.zeros(3), 1.0)

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply_positions(self, positions) -> np.ndarray:
        return self.scale * np.asarray(positions, dtype=np.float64) @ self.rotation.T + self.translation

    def apply_rotations(self, rotations) -> np.ndarray:
        return self.rotation @ np.asarray(rotations, dtype=np.float64)

    def apply(self, trajectory: Trajectory) -> Trajectory:
        """The trajectory moved by this alignment (camera orientations rotate, scale moves centres only)."""
        quats = rotation_to_quat_wxyz(self.apply_rotations(quat_wxyz_to_rotation(trajectory.world_from_cam_quat_wxyz)))
        return Trajectory(trajectory.timestamps.copy(), quats.reshape(-1, 4),
                          self.apply_positions(trajectory.world_from_cam_translation))


@dataclass(frozen=True)
class TrajectoryErrors:
    """ATE or RPE result. The top-level statistics are translation errors in the trajectory's units."""

    kind: str  # "ate" | "rpe"
    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float
    errors: np.ndarray  # per matched pose (ATE) or per pose pair (RPE)
    rotation_deg: ErrorStats
    rotation_errors_deg: np.ndarray
    timestamps: np.ndarray  # est timestamp of each error (the later pose of an RPE pair)
    alignment: Alignment
    est_indices: np.ndarray  # matched poses as indices into the input trajectories
    gt_indices: np.ndarray

    @property
    def translation(self) -> ErrorStats:
        return ErrorStats(self.rmse, self.mean, self.median, self.std, self.min, self.max, self.sse)


# --- association ---------------------------------------------------------------------------

def _match_stamps(short: np.ndarray, long: np.ndarray, max_diff: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into short, into long) of each short stamp's nearest long stamp within max_diff."""
    if len(long) == 0 or len(short) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if np.all(np.diff(long) >= 0):
        idx = np.minimum(np.searchsorted(long, short, side="right"), len(long) - 1)
        diff_ub = long[idx] - short
        diff_lb = np.where(idx > 0, short - long[np.maximum(idx - 1, 0)], np.inf)
        take_ub = (diff_ub <= max_diff) & (diff_ub < diff_lb)
        take_lb = ~take_ub & (diff_lb <= max_diff) & (diff_lb <= diff_ub)
        in_range = (short >= long[0] - max_diff) & (short <= long[-1] + max_diff)
        keep = in_range & (take_ub | take_lb)
        best = np.where(take_ub, idx, idx - 1)
        return np.flatnonzero(keep), best[keep].astype(np.int64)
    # Unsorted stamps: nearest by brute force, one short stamp at a time to bound memory.
    short_idx, long_idx = [], []
    for i, stamp in enumerate(short):
        diffs = np.abs(long - stamp)
        j = int(np.argmin(diffs))
        if diffs[j] <= max_diff:
            short_idx.append(i)
            long_idx.append(j)
    return np.asarray(short_idx, dtype=np.int64), np.asarray(long_idx, dtype=np.int64)


def associate(est: Trajectory, gt: Trajectory, max_diff: float = DEFAULT_MAX_DIFF,
              offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Matched (est_indices, gt_indices), ordered along the shorter trajectory.

    ``offset`` (seconds) is added to the estimate's timestamps before matching (evo's ``t_offset``).
    Raises ParallaxError when no timestamps match.
    """
    if not max_diff >= 0:
        raise ParallaxError(f"max_diff must be a non-negative number of seconds, got {max_diff}")
    est_stamps, gt_stamps = est.timestamps, gt.timestamps
    # Like evo: start from the trajectory with fewer poses (the estimate when both are equally long)
    # and shift the other one's stamps, so that ties resolve the same way.
    if len(est) > len(gt):
        gt_idx, est_idx = _match_stamps(gt_stamps, est_stamps + offset, max_diff)
    else:
        est_idx, gt_idx = _match_stamps(est_stamps, gt_stamps - offset, max_diff)
    if len(est_idx) == 0:
        def span(stamps):
            return f"{stamps[0]:.6f}..{stamps[-1]:.6f} s" if len(stamps) else "no poses"
        raise ParallaxError(
            f"no matching timestamps between the estimate ({len(est)} poses, {span(est_stamps + offset)}) "
            f"and the ground truth ({len(gt)} poses, {span(gt_stamps)}) "
            f"within max_diff={max_diff} s and offset={offset} s")
    return est_idx, gt_idx


# --- alignment -----------------------------------------------------------------------------

def estimate_alignment(est_positions, gt_positions, mode: str = "sim3") -> Alignment:
    """Alignment moving matched est positions onto gt positions (Umeyama)."""
    if mode not in ALIGN_MODES:
        raise ParallaxError(f"unknown alignment {mode!r}; choose one of {', '.join(ALIGN_MODES)}")
    if mode == "none":
        return Alignment.identity()
    rotation, translation, scale = umeyama(est_positions, gt_positions, with_scale=(mode != "se3"))
    if mode == "scale":
        return Alignment("scale", np.eye(3), np.zeros(3), scale)
    return Alignment(mode, rotation, translation, scale)


# --- metrics -------------------------------------------------------------------------------

def _matched(est: Trajectory, gt: Trajectory, max_diff: float, offset: float, align: str):
    est_idx, gt_idx = associate(est, gt, max_diff, offset)
    est_pos = est.world_from_cam_translation[est_idx]
    gt_pos = gt.world_from_cam_translation[gt_idx]
    alignment = estimate_alignment(est_pos, gt_pos, align)
    est_rot = alignment.apply_rotations(quat_wxyz_to_rotation(est.world_from_cam_quat_wxyz[est_idx]))
    gt_rot = quat_wxyz_to_rotation(gt.world_from_cam_quat_wxyz[gt_idx])
    return est_idx, gt_idx, alignment, alignment.apply_positions(est_pos), est_rot, gt_pos, gt_rot


def _result(kind, errors, rot_errors_deg, timestamps, alignment, est_idx, gt_idx) -> TrajectoryErrors:
    stats = ErrorStats.from_errors(errors)
    return TrajectoryErrors(kind, stats.rmse, stats.mean, stats.median, stats.std, stats.min, stats.max, stats.sse,
                            np.asarray(errors), ErrorStats.from_errors(rot_errors_deg), np.asarray(rot_errors_deg),
                            np.asarray(timestamps), alignment, est_idx, gt_idx)


def ate(est: Trajectory, gt: Trajectory, align: str = "sim3", max_diff: float = DEFAULT_MAX_DIFF,
        offset: float = 0.0) -> TrajectoryErrors:
    """Absolute trajectory error (evo APE, translation part) after association and alignment."""
    est_idx, gt_idx, alignment, est_pos, est_rot, gt_pos, gt_rot = _matched(est, gt, max_diff, offset, align)
    errors = np.linalg.norm(est_pos - gt_pos, axis=1)
    rot_deg = np.degrees(rotation_angle(np.swapaxes(est_rot, 1, 2) @ gt_rot)).reshape(-1)
    return _result("ate", errors, rot_deg, est.timestamps[est_idx], alignment, est_idx, gt_idx)


def sim3_ate(est: Trajectory, gt: Trajectory, min_poses: int = 5) -> TrajectoryErrors | None:
    """``ate`` after a Sim(3) alignment when one can be had, else None: fewer than ``min_poses`` poses
    matched in time, centres all at one place or on a line, or a non-finite result. For a live estimate
    (the SLAM tab) and a result about to be moved into the ground truth's frame."""
    if len(est) < min_poses:
        return None
    try:
        errors = ate(est, gt, align="sim3")
    except (ParallaxError, ValueError, np.linalg.LinAlgError):
        return None
    if len(errors.errors) < min_poses or not np.isfinite(errors.rmse) or not errors.alignment.scale > 0:
        return None
    return errors


def pair_indices(n: int, delta: int = 1, all_pairs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pose pairs (i, j) delta frames apart: consecutive (0, d), (d, 2d)... or every i (all_pairs)."""
    if all_pairs:
        first = np.arange(0, max(n - delta, 0))
        return first, first + delta
    ids = np.arange(0, n, delta)
    return ids[:-1], ids[1:]


def rpe(est: Trajectory, gt: Trajectory, align: str = "sim3", delta: int = 1, all_pairs: bool = False,
        max_diff: float = DEFAULT_MAX_DIFF, offset: float = 0.0) -> TrajectoryErrors:
    """Relative pose error (evo RPE, translation part, ``delta`` in frames of the matched poses)."""
    if int(delta) != delta or delta < 1:
        raise ParallaxError(f"RPE delta must be a whole number of frames >= 1, got {delta}")
    delta = int(delta)
    est_idx, gt_idx, alignment, est_pos, est_rot, gt_pos, gt_rot = _matched(est, gt, max_diff, offset, align)
    i, j = pair_indices(len(est_idx), delta, all_pairs)
    if len(i) == 0:
        raise ParallaxError(f"RPE needs at least {delta + 1} matched poses for delta={delta}, got {len(est_idx)}")

    def relative(rot, pos):
        rot_i_t = np.swapaxes(rot[i], 1, 2)
        return rot_i_t @ rot[j], (rot_i_t @ (pos[j] - pos[i])[:, :, None])[:, :, 0]

    gt_rel_rot, gt_rel_t = relative(gt_rot, gt_pos)
    est_rel_rot, est_rel_t = relative(est_rot, est_pos)
    # E = gt_rel^-1 est_rel: rotation gt_rel_R^T est_rel_R, translation gt_rel_R^T (est_rel_t - gt_rel_t).
    err_rot = np.swapaxes(gt_rel_rot, 1, 2) @ est_rel_rot
    errors = np.linalg.norm(est_rel_t - gt_rel_t, axis=1)
    rot_deg = np.degrees(rotation_angle(err_rot)).reshape(-1)
    return _result("rpe", errors, rot_deg, est.timestamps[est_idx[j]], alignment, est_idx, gt_idx)
