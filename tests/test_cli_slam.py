"""`parallax slam`: a project, a TUM trajectory and statistics from a real run; clear errors otherwise."""
import json

import cv2
import numpy as np
import pytest

from tests.test_cli import assert_user_error, parallax


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    from assets import generate_demo

    folder = tmp_path_factory.mktemp("walk")
    generate_demo(folder, path="forward_walk", frames=45, video=False)
    return folder


def test_slam_writes_project_trajectory_and_stats(walk, tmp_path):
    from geometry.evaluate import evaluate
    from scene.io.trajectory_io import read_trajectory
    from scene.project import load_project

    out, traj, stats = tmp_path / "run.parallax", tmp_path / "slam.txt", tmp_path / "stats.json"
    result = parallax("slam", walk, "-o", out, "--trajectory", traj, "--stats", stats, "--max-frames", "40")
    assert result.returncode == 0, result.stderr
    numbers = json.loads(stats.read_text())
    for key in ("frames", "tracked", "initialized_at_frame", "keyframes", "map_points", "loop_closures",
                "tracking_ms_median", "tracking_ms_p95", "total_s"):
        assert key in numbers
    assert numbers["frames"] == 40 and numbers["initialized_at_frame"] < 30 and numbers["keyframes"] >= 2
    assert numbers["rotation_only_frames"] == 0  # the map tracks the whole walk
    assert 0.9 < numbers["focal_ratio_preferred"] < 1.1  # the right calibration passes the focal check
    scene = load_project(out)
    assert "slam" in scene.trajectories and "ground_truth" in scene.trajectories
    assert len(scene.points) > 100 and len(scene.registered_images()) == numbers["keyframes"]
    estimate = read_trajectory(traj)
    assert len(estimate) == len(scene.trajectories["slam"])
    metrics = evaluate(estimate, read_trajectory(walk / "groundtruth.txt"), align="sim3")
    assert metrics["matched_poses"] >= numbers["tracked"] - 1
    assert metrics["ate_percent_of_path"] < 2.0  # a working run, not the accuracy benchmark (that is make bench)


def test_slam_on_a_stationary_camera_says_so(tmp_path):
    frames = tmp_path / "still"
    frames.mkdir()
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (3, 3), 0)
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), image)
    result = parallax("slam", frames, "-o", tmp_path / "x.parallax")
    assert_user_error(result, "did not initialise")
    assert not (tmp_path / "x.parallax").exists()


def test_slam_on_an_empty_folder(tmp_path):
    assert_user_error(parallax("slam", tmp_path, "-o", tmp_path / "x.parallax"))


def test_slam_max_frames_must_be_sane(walk, tmp_path):
    assert_user_error(parallax("slam", walk, "-o", tmp_path / "x.parallax", "--max-frames", "1"), "max-frames")
