"""Smoke tests of the SLAM benchmark (bench/slam_bench.py, bench/vo_baseline.py, bench/run.py --only slam).

Frames are rendered in memory from the demo room (640 x 480), so nothing is written to the demo cache.
"""
from __future__ import annotations

import functools

import time

import numpy as np
import pytest

from assets import camera_path, demo_camera, render_frame
from bench.run import SLAM_TITLE, replace_section
from bench.slam_bench import RESULT_KEYS, Sequence, bench_method, markdown_section, median_run
from bench.vo_baseline import run_vo
from scene.model import Trajectory
from scene.rigid import Rigid3d


@functools.lru_cache(maxsize=None)
def _orbit30():
    # The first 30 frames of the benchmark's 120-frame orbit (a whole turn in 20 frames would be 18 deg/frame).
    timestamps, poses = camera_path("orbit", 120, 30.0)
    camera = demo_camera(640, 480)
    images = [render_frame(p, camera)[0] for p in poses[:30]]
    return timestamps[:30], poses[:30], images, camera


def orbit(frames: int):
    timestamps, poses, images, camera = _orbit30()
    return timestamps[:frames], poses[:frames], images[:frames], camera


def test_vo_baseline_gives_one_pose_per_frame():
    timestamps, poses, images, camera = orbit(20)
    result = run_vo(images, camera, timestamps)
    assert len(result.cam_from_world) == 20 and len(result.timings_ms) == 20
    assert np.array_equal(result.timestamps, timestamps)
    first = result.cam_from_world[0]
    assert np.allclose(first.quat_wxyz, [1, 0, 0, 0]) and np.allclose(first.translation, 0)
    assert result.tracked == 20, result.failures
    # Unit translation per step: consecutive camera centres are exactly 1 apart.
    centres = np.array([p.inverse().translation for p in result.cam_from_world])
    assert np.allclose(np.linalg.norm(np.diff(centres, axis=0), axis=1), 1.0, atol=1e-9)


def test_vo_baseline_survives_blank_frames():
    _, _, images, camera = orbit(20)
    black = np.zeros_like(images[0])
    result = run_vo([images[0], black, black, images[1]], camera)
    assert len(result.cam_from_world) == 4
    assert result.cam_from_world[1] is None and result.cam_from_world[2] is None
    assert result.cam_from_world[3] is not None  # matched against frame 0, the last frame with a pose


def test_slam_bench_returns_the_documented_keys(tmp_path):
    timestamps, poses, images, camera = orbit(30)
    gt = Trajectory.from_poses(timestamps, poses)
    seq = Sequence("orbit30", images, np.asarray(timestamps), camera, gt, tmp_path, [f"{i}.png" for i in range(30)])
    rows = [bench_method("parallax_slam", seq, runs=2), bench_method("opencv_vo", seq, runs=1),
            bench_method("parallax_slam_play", seq, runs=1)]
    for row in rows:
        assert tuple(row) == RESULT_KEYS
        assert row["frames"] == 30 and 0 <= row["tracked"] <= 30
        assert row["total_s"] > 0 and row["frame_ms_median"] > 0
    slam, vo, play = rows
    # Play mode: the keyframes after the initial two were mapped on the thread, and timed there.
    assert play["stage_ms"]["keyframes"] >= 3 and play["stage_ms"]["mapping_ms_per_keyframe"] > 0
    assert play["init_frame"] is not None and play["tracked_after_init_pct"] == 100.0
    assert slam["deterministic"] is True          # Step mode is deterministic: two runs, same poses
    assert slam["init_frame"] is not None and slam["init_frame"] < 30
    assert slam["ate_pct"] is not None and np.isfinite(slam["ate_pct"])
    assert vo["tracked"] == 30 and vo["deterministic"] is None
    lines = markdown_section(rows, runs=2, pycolmap_runs=1)
    assert lines[0] == SLAM_TITLE and sum(line.startswith("| orbit30 |") for line in lines) == 3


def test_real_time_play_feeds_each_frame_at_its_timestamp(tmp_path, monkeypatch):
    """The tab's "Real time" playback: no frame is stepped before its timestamp after the first."""
    from slam.system import System

    timestamps, poses, images, camera = orbit(30)
    seq = Sequence("orbit30", images, np.asarray(timestamps), camera, Trajectory.from_poses(timestamps, poses),
                   tmp_path, [f"{i}.png" for i in range(30)])
    stepped, step = [], System.step

    def timed_step(self, image, timestamp=None, *args, **kwargs):
        stepped.append((time.perf_counter(), timestamp))
        return step(self, image, timestamp, *args, **kwargs)

    monkeypatch.setattr(System, "step", timed_step)
    row = bench_method("parallax_slam_play_realtime", seq, runs=1)
    assert tuple(row) == RESULT_KEYS and row["tracked_after_init_pct"] == 100.0
    start = stepped[0][0]
    assert all(t - start >= ts - timestamps[0] - 1e-3 for t, ts in stepped)
    assert row["total_s"] >= timestamps[-1] - timestamps[0]
    line = [x for x in markdown_section([row], runs=1, pycolmap_runs=1) if x.startswith("| orbit30 |")][0]
    assert "| parallax_slam_play_realtime |" in line and "loop(s) closed" in line


def test_runs_that_differ_are_reported_by_the_run_with_the_median_ate():
    runs = [{"ate_pct": 0.67}, {"ate_pct": 0.11}, {"ate_pct": 0.29}]
    assert median_run(runs) == 2
    assert median_run(runs[:2]) == 1                                  # even count: the lower middle
    assert median_run([{"ate_pct": None}, {"ate_pct": 0.4}, {"ate_pct": 0.2}]) == 2
    assert median_run([{"ate_pct": None}, {"ate_pct": None}]) == 0


def test_the_note_lists_every_runs_ate_where_the_runs_differ(tmp_path):
    timestamps, poses, images, camera = orbit(30)
    gt = Trajectory.from_poses(timestamps, poses)
    seq = Sequence("orbit30", images, np.asarray(timestamps), camera, gt, tmp_path, [f"{i}.png" for i in range(30)])
    row = bench_method("parallax_slam", seq, runs=1)
    assert row["ate_pct_runs"] is None
    differing = dict(row, method="parallax_slam_play", deterministic=False, ate_pct_runs=[0.67, 0.11, 0.29])
    line = [x for x in markdown_section([differing], runs=3, pycolmap_runs=1) if x.startswith("| orbit30 |")][0]
    assert "ATE % per run 0.67 / 0.11 / 0.29" in line and "| no |" in line


def test_bench_method_rejects_unknown_methods(tmp_path):
    _, _, images, camera = orbit(20)
    seq = Sequence("x", images[:2], np.arange(2.0), camera, None, tmp_path, ["a", "b"])
    with pytest.raises(ValueError):
        bench_method("orb_slam3", seq)
    with pytest.raises(ValueError):
        bench_method("pycolmap", seq, work=None)


def test_only_slam_replaces_just_its_section(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Demo scene\n\nrow\n\n" + SLAM_TITLE + "\n\nold\n\n"
                      "## Agreement with the reference tools\n\n- note\n")
    replace_section(report, SLAM_TITLE, [SLAM_TITLE, "", "new", ""])
    text = report.read_text()
    assert "old" not in text and "new" in text and "## Demo scene\n\nrow" in text and "- note" in text
    # The section says when and at which commit it was measured (the report's header dates the last full run).
    stamp = text.split(SLAM_TITLE + "\n\n", 1)[1].splitlines()[0]
    assert stamp.startswith("This section: `make bench` run finished 20") and " at commit " in stamp
    fresh = tmp_path / "fresh.md"
    fresh.write_text("# Benchmarks\n\n## Agreement with the reference tools\n\n- note\n")
    replace_section(fresh, SLAM_TITLE, [SLAM_TITLE, "", "new", ""])
    assert fresh.read_text().index("new") < fresh.read_text().index("## Agreement")


def test_orientation_drift_ignores_the_world_frame_and_the_centres_and_measures_the_drift():
    from bench.slam_bench import orientation_drift_deg
    from geometry.lie import so3_exp

    timestamps, poses, _, _ = orbit(12)
    gt = Trajectory.from_poses(timestamps, poses)
    # Another world frame, another scale, the centres all in one place: nothing drifted.
    world = so3_exp([0.3, -1.1, 0.4])
    moved = [Rigid3d.from_rotation(world @ p.rotation, [1.0, 2.0, 3.0]) for p in poses]
    assert orientation_drift_deg(Trajectory.from_poses(timestamps, moved), gt) < 1e-6
    # Each pose turned a further 0.5 degrees about its own optical axis: errors 0, 0.5, ..., 5.5 degrees.
    drifted = [Rigid3d.from_rotation(p.rotation @ so3_exp([0.0, 0.0, np.radians(0.5 * i)]), p.translation)
               for i, p in enumerate(poses)]
    expected = np.sqrt(np.mean((0.5 * np.arange(12)) ** 2))
    assert abs(orientation_drift_deg(Trajectory.from_poses(timestamps, drifted), gt) - expected) < 1e-6
