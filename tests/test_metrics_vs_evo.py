"""ATE / RPE / association / Umeyama against evo's Python API, on synthetic and real (KITTI 07) poses."""
from __future__ import annotations

import copy
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from evo.core import metrics as evo_metrics
from evo.core import sync as evo_sync
from evo.core.geometry import umeyama_alignment as evo_umeyama
from evo.core.trajectory import PoseTrajectory3D

from geometry import lie
from geometry.align import umeyama
from geometry.evaluate import evaluate, plot_evaluation
from geometry.metrics import ALIGN_MODES, ErrorStats, associate, ate, rpe
from scene.errors import ParallaxError
from scene.io.trajectory_io import read_trajectory
from scene.model import Trajectory

logging.getLogger("evo").setLevel(logging.ERROR)
STAT_NAMES = ("rmse", "mean", "median", "std", "min", "max", "sse")


# --- trajectories ---------------------------------------------------------------------------

def _smooth_gt(n=400, rate=100.0, seed=0) -> Trajectory:
    """A curving 3D path with orientations that turn along it (mocap-like 100 Hz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    s = t / t[-1] * 2 * np.pi
    positions = np.column_stack([4 * np.cos(s), 3 * np.sin(1.5 * s), 0.5 * np.sin(3 * s) + 1.0])
    rotvecs = np.column_stack([0.3 * np.sin(2 * s), 0.2 * np.cos(s), s]) + rng.normal(scale=1e-3, size=(n, 3))
    quats = lie.rotation_to_quat_wxyz(lie.so3_exp(rotvecs))
    return Trajectory(1341847980.79 + t, quats, positions)


def _perturbed(gt: Trajectory, seed: int, scale: float, every: int = 1, jitter: float = 0.0,
               noise: float = 0.03, rot_noise: float = 0.01) -> Trajectory:
    """gt moved by a random Sim(3), with position/rotation noise, subsampled and time-jittered."""
    rng = np.random.default_rng(seed)
    keep = np.arange(0, len(gt), every)
    offset = lie.sim3_exp(np.concatenate([rng.normal(size=3) * 5, rng.normal(size=3), [np.log(scale)]]))
    rotation, translation, s = lie.sim3_decompose(offset)
    positions = gt.world_from_cam_translation[keep] + rng.normal(scale=noise, size=(len(keep), 3))
    rotations = lie.so3_exp(rng.normal(scale=rot_noise, size=(len(keep), 3))) @ lie.quat_wxyz_to_rotation(
        gt.world_from_cam_quat_wxyz[keep])
    stamps = gt.timestamps[keep] + rng.uniform(-jitter, jitter, len(keep))
    return Trajectory(stamps, lie.rotation_to_quat_wxyz(rotation @ rotations), s * positions @ rotation.T + translation)


def _evo(traj: Trajectory) -> PoseTrajectory3D:
    return PoseTrajectory3D(traj.world_from_cam_translation.copy(), traj.world_from_cam_quat_wxyz.copy(),
                            traj.timestamps.copy())


def _evo_results(est: Trajectory, gt: Trajectory, align: str, max_diff=0.01, offset=0.0):
    ref, est_evo = evo_sync.associate_trajectories(_evo(gt), _evo(est), max_diff=max_diff, offset_2=offset)
    est_evo = copy.deepcopy(est_evo)
    alignment = None
    if align == "sim3":
        alignment = est_evo.align(ref, correct_scale=True)
    elif align == "se3":
        alignment = est_evo.align(ref)
    elif align == "scale":
        alignment = est_evo.align(ref, correct_only_scale=True)
    out = {"ref": ref, "est": est_evo, "alignment": alignment}
    for name, metric in (("ape", evo_metrics.APE(evo_metrics.PoseRelation.translation_part)),
                         ("ape_rot", evo_metrics.APE(evo_metrics.PoseRelation.rotation_angle_deg)),
                         ("rpe", evo_metrics.RPE(evo_metrics.PoseRelation.translation_part, 1,
                                                 evo_metrics.Unit.frames, all_pairs=False)),
                         ("rpe_rot", evo_metrics.RPE(evo_metrics.PoseRelation.rotation_angle_deg, 1,
                                                     evo_metrics.Unit.frames, all_pairs=False))):
        metric.process_data((ref, est_evo))
        out[name] = (metric.get_all_statistics(), metric.error)
    return out


def _assert_stats(ours, evo_stats: dict, evo_errors: np.ndarray, ours_errors: np.ndarray) -> None:
    for name in STAT_NAMES:
        expected = float(evo_stats[name])
        assert abs(getattr(ours, name) - expected) <= 1e-6 * max(1.0, abs(expected)), name
    assert ours_errors.shape == evo_errors.shape
    assert np.abs(ours_errors - evo_errors).max() <= 1e-6


def _compare_with_evo(est: Trajectory, gt: Trajectory, align: str, offset: float = 0.0) -> None:
    evo = _evo_results(est, gt, align, offset=offset)
    ours_ate = ate(est, gt, align=align, offset=offset)
    ours_rpe = rpe(est, gt, align=align, offset=offset)
    # same association
    assert np.array_equal(gt.timestamps[ours_ate.gt_indices], evo["ref"].timestamps)
    assert np.array_equal(est.timestamps[ours_ate.est_indices], evo["est"].timestamps)
    _assert_stats(ours_ate, *evo["ape"], ours_ate.errors)
    _assert_stats(ours_ate.rotation_deg, *evo["ape_rot"], ours_ate.rotation_errors_deg)
    _assert_stats(ours_rpe, *evo["rpe"], ours_rpe.errors)
    _assert_stats(ours_rpe.rotation_deg, *evo["rpe_rot"], ours_rpe.rotation_errors_deg)
    if evo["alignment"] is not None:
        rotation, translation, scale = evo["alignment"]
        a = ours_ate.alignment
        assert abs(a.scale - scale) < 1e-9
        if align != "scale":
            assert np.abs(a.rotation - rotation).max() < 1e-9
            assert np.abs(a.translation - translation).max() < 1e-9


# --- synthetic comparisons ------------------------------------------------------------------

@pytest.fixture(scope="module")
def gt() -> Trajectory:
    return _smooth_gt()


@pytest.mark.parametrize("align", ALIGN_MODES)
def test_same_rate_with_sim3_offset(gt, align):
    _compare_with_evo(_perturbed(gt, seed=1, scale=0.37), gt, align)


@pytest.mark.parametrize("align", ALIGN_MODES)
def test_sparser_jittered_estimate(gt, align):
    # 20 Hz estimate against 100 Hz ground truth, stamps jittered by up to 4 ms; gt is the longer one.
    _compare_with_evo(_perturbed(gt, seed=2, scale=2.5, every=5, jitter=0.004), gt, align)


@pytest.mark.parametrize("align", ("sim3", "none"))
def test_longer_estimate_with_gaps_and_time_offset(gt, align):
    # The estimate is the longer one here (gt drops poses), and its clock is 0.25 s ahead.
    est = _perturbed(gt, seed=3, scale=1.7, jitter=0.003)
    est = Trajectory(est.timestamps + 0.25, est.world_from_cam_quat_wxyz, est.world_from_cam_translation)
    keep = np.sort(np.random.default_rng(4).choice(len(gt), size=len(gt) - 60, replace=False))
    sparse_gt = Trajectory(gt.timestamps[keep], gt.world_from_cam_quat_wxyz[keep], gt.world_from_cam_translation[keep])
    _compare_with_evo(est, sparse_gt, align, offset=-0.25)


def test_association_matches_evo_on_unsorted_stamps(gt):
    est = _perturbed(gt, seed=5, scale=1.0, every=3, jitter=0.004)
    order = np.random.default_rng(6).permutation(len(gt))
    shuffled = Trajectory(gt.timestamps[order], gt.world_from_cam_quat_wxyz[order],
                          gt.world_from_cam_translation[order])
    ref, est_evo = evo_sync.associate_trajectories(_evo(est), _evo(shuffled), max_diff=0.01)
    est_idx, gt_idx = associate(shuffled, est)  # shuffled as "estimate": it is the longer trajectory
    assert np.array_equal(shuffled.timestamps[est_idx], est_evo.timestamps)
    assert np.array_equal(est.timestamps[gt_idx], ref.timestamps)


def test_perfect_estimate_has_zero_error(gt):
    est = _perturbed(gt, seed=7, scale=3.0, noise=0.0, rot_noise=0.0)
    result = ate(est, gt, "sim3")
    assert result.rmse < 1e-9 and result.rotation_deg.max < 1e-6
    assert result.alignment.scale == pytest.approx(1 / 3.0, rel=1e-12)
    assert rpe(est, gt, "sim3").rmse < 1e-9
    aligned = result.alignment.apply(est)
    assert np.abs(aligned.world_from_cam_translation - gt.world_from_cam_translation).max() < 1e-9
    assert np.abs(lie.quat_wxyz_to_rotation(aligned.world_from_cam_quat_wxyz)
                  - lie.quat_wxyz_to_rotation(gt.world_from_cam_quat_wxyz)).max() < 1e-9


def test_rpe_delta_and_all_pairs(gt):
    est = _perturbed(gt, seed=8, scale=1.0)
    ref, est_evo = evo_sync.associate_trajectories(_evo(gt), _evo(est))
    for delta, all_pairs in ((5, False), (3, True)):
        metric = evo_metrics.RPE(evo_metrics.PoseRelation.translation_part, delta, evo_metrics.Unit.frames,
                                 all_pairs=all_pairs)
        metric.process_data((ref, est_evo))
        ours = rpe(est, gt, align="none", delta=delta, all_pairs=all_pairs)
        _assert_stats(ours, metric.get_all_statistics(), metric.error, ours.errors)


# --- real data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kitti_gt() -> Trajectory:
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti07_f000_079"
    if not folder.exists():
        pytest.skip(f"real data set kitti07_f000_079 not found at {folder} (../shared/data is absent)")
    return read_trajectory(folder / "poses" / "07.txt")


@pytest.mark.parametrize("align", ALIGN_MODES)
def test_kitti07_perturbed_copy(kitti_gt, align):
    assert len(kitti_gt) == 80 and kitti_gt.timestamps[-1] > 8.0  # stamps from times.txt
    est = _perturbed(kitti_gt, seed=9, scale=0.05, noise=0.2, rot_noise=0.005)
    _compare_with_evo(est, kitti_gt, align)


def test_kitti07_evaluate_summary(kitti_gt, tmp_path):
    est = _perturbed(kitti_gt, seed=10, scale=0.05, noise=0.2, rot_noise=0.005)
    summary = evaluate(est, kitti_gt, align="sim3")
    evo = _evo_results(est, kitti_gt, "sim3")
    assert summary["matched_poses"] == 80
    for key, evo_key, stat in (("ate_rmse", "ape", "rmse"), ("ate_mean", "ape", "mean"),
                               ("ate_median", "ape", "median"), ("ate_max", "ape", "max"),
                               ("rpe_trans_rmse", "rpe", "rmse"), ("rpe_rot_rmse_deg", "rpe_rot", "rmse")):
        assert summary[key] == pytest.approx(evo[evo_key][0][stat], rel=1e-9, abs=1e-12), key
    assert summary["scale"] == pytest.approx(evo["alignment"][2], rel=1e-12)
    assert summary["path_length"] == pytest.approx(kitti_gt.path_length(), rel=1e-12)
    assert 36.0 < summary["path_length"] < 40.0  # README: ~38 m over these 80 frames
    assert summary["ate_percent_of_path"] == pytest.approx(100 * summary["ate_rmse"] / summary["path_length"])
    png = plot_evaluation(est, kitti_gt, summary, tmp_path / "eval.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.png"]


# --- Umeyama ----------------------------------------------------------------------------------

def test_umeyama_recovers_exact_similarity():
    rng = np.random.default_rng(11)
    src = rng.normal(size=(50, 3))
    rotation, translation, scale = lie.sim3_decompose(lie.sim3_exp(rng.normal(size=7)))
    dst = scale * src @ rotation.T + translation
    r, t, s = umeyama(src, dst, with_scale=True)
    assert np.abs(r - rotation).max() < 1e-12 and np.abs(t - translation).max() < 1e-12
    assert s == pytest.approx(scale, rel=1e-12)


def test_umeyama_matches_evo_with_noise():
    rng = np.random.default_rng(12)
    src = rng.normal(size=(30, 3))
    dst = 0.3 * src @ lie.so3_exp([0.4, -1.0, 2.5]).T + [1, 2, 3] + rng.normal(scale=0.05, size=(30, 3))
    for with_scale in (True, False):
        r, t, s = umeyama(src, dst, with_scale)
        er, et, es = evo_umeyama(src.T, dst.T, with_scale)
        assert np.abs(r - er).max() < 1e-12 and np.abs(t - et).max() < 1e-12 and abs(s - es) < 1e-12


def test_umeyama_reflection_is_not_returned():
    rng = np.random.default_rng(13)
    src = rng.normal(size=(20, 3))
    r, _, s = umeyama(src, src * [1, 1, -1], with_scale=True)  # a mirror image: best proper rotation
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12) and s > 0


def test_umeyama_needs_three_points():
    with pytest.raises(ParallaxError, match="at least 3 corresponding points, got 2"):
        umeyama(np.eye(3)[:2], np.eye(3)[:2])


def test_umeyama_rejects_collinear_points():
    line = np.outer(np.arange(10.0), [1.0, 2.0, 0.5])
    with pytest.raises(ParallaxError, match="collinear"):
        umeyama(line, line + 1.0)


def test_umeyama_poses_fixes_the_roll_about_a_straight_path_from_the_orientations():
    from geometry.align import umeyama_poses

    rng = np.random.default_rng(3)
    centres = np.outer(np.arange(8.0), [1.0, 0.2, 0.0])            # a straight path: centres alone cannot do it
    rotations = lie.so3_exp(rng.normal(0, 0.3, (8, 3)))
    turn = lie.so3_exp(np.array([[0.3, -1.1, 0.7]]))[0]
    moved = 2.5 * centres @ turn.T + [1.0, -2.0, 0.5]
    rotation, translation, scale = umeyama_poses(centres, rotations, moved, turn @ rotations)
    np.testing.assert_allclose(rotation, turn, atol=1e-9)
    np.testing.assert_allclose(translation, [1.0, -2.0, 0.5], atol=1e-9)
    assert scale == pytest.approx(2.5)
    with pytest.raises(ParallaxError, match="collinear"):
        umeyama(centres, moved)


def test_umeyama_rejects_coincident_points():
    same = np.ones((5, 3))
    with pytest.raises(ParallaxError, match="same position"):
        umeyama(same, np.random.default_rng(14).normal(size=(5, 3)))


def test_umeyama_rejects_nan_and_shape_mismatch():
    pts = np.random.default_rng(15).normal(size=(5, 3))
    bad = pts.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ParallaxError, match="NaN"):
        umeyama(pts, bad)
    with pytest.raises(ParallaxError, match=r"\(N, 3\)"):
        umeyama(pts, pts[:4])


# --- bad input to the metrics ---------------------------------------------------------------

def test_no_matching_timestamps(gt):
    est = Trajectory(gt.timestamps + 100.0, gt.world_from_cam_quat_wxyz, gt.world_from_cam_translation)
    with pytest.raises(ParallaxError, match="no matching timestamps .* max_diff=0.01"):
        ate(est, gt)


def test_too_few_matches_for_alignment(gt):
    est = Trajectory(gt.timestamps[:2], gt.world_from_cam_quat_wxyz[:2], gt.world_from_cam_translation[:2])
    with pytest.raises(ParallaxError, match="at least 3"):
        ate(est, gt, "sim3")
    assert ate(est, gt, "none").rmse == 0.0  # no alignment needs no minimum


def test_straight_line_trajectory_cannot_be_aligned(gt):
    n = 20
    straight = Trajectory(gt.timestamps[:n], gt.world_from_cam_quat_wxyz[:n],
                          np.outer(np.arange(n), [0.1, 0.0, 0.0]))
    with pytest.raises(ParallaxError, match="collinear"):
        ate(straight, straight, "se3")


def test_unknown_alignment_mode(gt):
    with pytest.raises(ParallaxError, match="unknown alignment 'affine'"):
        ate(gt, gt, "affine")


def test_bad_rpe_delta(gt):
    with pytest.raises(ParallaxError, match="delta"):
        rpe(gt, gt, delta=0)
    with pytest.raises(ParallaxError, match="at least 401 matched poses"):
        rpe(gt, gt, delta=400)


def test_negative_max_diff(gt):
    with pytest.raises(ParallaxError, match="max_diff"):
        associate(gt, gt, max_diff=-1.0)


def test_error_stats_of_nothing():
    with pytest.raises(ParallaxError, match="no errors"):
        ErrorStats.from_errors([])


def test_evaluate_module_does_not_import_matplotlib():
    code = "import sys, geometry.evaluate, geometry.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "False"
