"""One-call trajectory evaluation (ATE + RPE) and its plot, for the CLI, the GUI and benchmarks."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from scene.model import Trajectory

from .metrics import DEFAULT_MAX_DIFF, Alignment, associate, ate, rpe


def evaluate(est: Trajectory, gt: Trajectory, align: str = "sim3", max_diff: float = DEFAULT_MAX_DIFF,
             offset: float = 0.0) -> dict:
    """JSON-ready summary of ``est`` against ``gt`` (lengths in gt units, angles in degrees).

    ``path_length`` is the ground truth's length over the matched poses;
    ``ate_percent_of_path`` is 100 * ate_rmse / path_length (None for a zero-length path).
    The alignment (gt_from_est) is included so that ``plot_evaluation`` draws exactly what was measured.
    """
    absolute = ate(est, gt, align=align, max_diff=max_diff, offset=offset)
    relative = rpe(est, gt, align=align, delta=1, max_diff=max_diff, offset=offset)
    gt_matched = gt.world_from_cam_translation[absolute.gt_indices]
    path_length = float(np.linalg.norm(np.diff(gt_matched, axis=0), axis=1).sum())
    a = absolute.alignment
    return {
        "matched_poses": int(len(absolute.errors)),
        "est_poses": len(est),
        "gt_poses": len(gt),
        "align": align,
        "max_diff": float(max_diff),
        "offset": float(offset),
        "ate_rmse": absolute.rmse,
        "ate_mean": absolute.mean,
        "ate_median": absolute.median,
        "ate_std": absolute.std,
        "ate_max": absolute.max,
        "ate_rot_rmse_deg": absolute.rotation_deg.rmse,
        "rpe_trans_rmse": relative.rmse,
        "rpe_rot_rmse_deg": relative.rotation_deg.rmse,
        "scale": a.scale,
        "alignment": {"rotation": a.rotation.tolist(), "translation": a.translation.tolist(), "scale": a.scale},
        "path_length": path_length,
        "ate_percent_of_path": 100.0 * absolute.rmse / path_length if path_length > 0 else None,
    }


def _top_down_axes(positions: np.ndarray) -> tuple[int, int]:
    """The two world axes along which the ground truth spreads most (x-z for KITTI, x-y for TUM)."""
    spread = positions.max(axis=0) - positions.min(axis=0) if len(positions) else np.ones(3)
    first, second = sorted(np.argsort(spread)[-2:])
    return int(first), int(second)


def plot_evaluation(est: Trajectory, gt: Trajectory, result: dict, path_png) -> Path:
    """Save a PNG: aligned top-down trajectories (left) and the ATE over time (right)."""
    from matplotlib.figure import Figure  # a bare Figure renders PNG through Agg; no global backend switch

    from scene.atomic import atomic_write_bytes

    est_idx, gt_idx = associate(est, gt, result["max_diff"], result.get("offset", 0.0))
    stored = result["alignment"]
    alignment = Alignment(result["align"], np.array(stored["rotation"]), np.array(stored["translation"]),
                          float(stored["scale"]))
    est_aligned = alignment.apply_positions(est.world_from_cam_translation)
    gt_pos = gt.world_from_cam_translation
    errors = np.linalg.norm(est_aligned[est_idx] - gt_pos[gt_idx], axis=1)
    times = est.timestamps[est_idx] - est.timestamps[est_idx][0]

    figure = Figure(figsize=(12, 5), dpi=100)
    top, curve = figure.subplots(1, 2)
    u, v = _top_down_axes(gt_pos[gt_idx])
    names = "xyz"
    top.plot(gt_pos[:, u], gt_pos[:, v], color="0.2", lw=1.5, label="ground truth")
    top.plot(est_aligned[:, u], est_aligned[:, v], color="tab:blue", lw=1.2, label=f"estimate ({result['align']})")
    top.scatter(est_aligned[est_idx, u], est_aligned[est_idx, v], c=errors, cmap="viridis", s=8, zorder=3)
    top.set_xlabel(f"{names[u]} [m]")
    top.set_ylabel(f"{names[v]} [m]")
    top.set_aspect("equal", adjustable="datalim")
    top.set_title("top-down view, aligned")
    top.legend(loc="best")
    curve.plot(times, errors, color="tab:red", lw=1.2)
    curve.axhline(result["ate_rmse"], color="0.4", ls="--", lw=1, label=f"RMSE {result['ate_rmse']:.4g} m")
    curve.set_xlabel("time since first matched pose [s]")
    curve.set_ylabel("ATE [m]")
    curve.set_title(f"ATE over {result['matched_poses']} poses, scale {result['scale']:.4g}")
    curve.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path_png = Path(path_png)
    atomic_write_bytes(path_png, buffer.getvalue())
    return path_png
