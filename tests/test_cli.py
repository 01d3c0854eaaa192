"""The command line: real conversions, evaluation, and one-line errors (exit 2) for user mistakes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, shared_data_dir


def parallax(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("parallax: error:")]
    # one error line, last; logged warnings (e.g. guessed intrinsics) may come before it
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_path_is_one_line(tmp_path):
    assert_user_error(parallax("info", tmp_path / "nowhere.mp4"), "not found")


def test_unsupported_file(tmp_path):
    f = tmp_path / "notes.docx"
    f.write_text("hello")
    assert_user_error(parallax("info", f), "unsupported")


def test_empty_folder(tmp_path):
    assert_user_error(parallax("info", tmp_path))


def test_convert_needs_a_known_format(tmp_path):
    traj = tmp_path / "t.txt"
    traj.write_text("0 0 0 0 0 0 0 1\n1 1 0 0 0 0 0 1\n")
    assert_user_error(parallax("convert", traj, tmp_path / "out.xyz"), "--to")


def test_bad_arguments_exit_2():
    result = parallax("convert")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_convert_tum_to_kitti_and_eval_identity(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    pos = np.cumsum(rng.normal(size=(50, 3)), axis=0)
    for i, p in enumerate(pos):
        lines.append(f"{i * 0.1:.6f} {p[0]:.9f} {p[1]:.9f} {p[2]:.9f} 0 0 0 1")
    tum = tmp_path / "gt.txt"
    tum.write_text("\n".join(lines) + "\n")
    result = parallax("convert", tum, tmp_path / "gt_kitti.txt", "--to", "kitti")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "gt_kitti.txt").read_text().splitlines()) == 50
    plot = tmp_path / "plot.png"
    result = parallax("eval", tum, tum, "--json", "--plot", plot)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["ate_rmse"] < 1e-9
    assert plot.stat().st_size > 1000


def test_info_on_kitti_reports_layout_and_calibration():
    kitti = shared_data_dir("kitti07_f000_079")
    result = parallax("info", kitti, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["layout"] == "kitti" and info["frames"] == 80 and info["resolution"] == [1226, 370]
    assert "707.09" in info["intrinsics"][0]["description"] and info["intrinsics"][0]["source"] != "guess"
    assert info["calibration"] == str(kitti / "calib.txt")  # which file they came from


def test_info_marks_guessed_intrinsics(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    result = parallax("info", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "GUESS" in result.stdout and "calibration: a guess" in result.stdout


def test_output_under_a_file_is_one_line(tmp_path):
    traj = tmp_path / "t.txt"
    traj.write_text("0 0 0 0 0 0 0 1\n1 1 0 0 0 0 0 1\n")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert_user_error(parallax("convert", traj, blocker / "x.txt", "--to", "tum"), "cannot write")


def test_ply_onto_a_folder_is_one_line(tmp_path):
    ply = tmp_path / "p.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                   "property float z\nend_header\n1 2 3\n")
    (tmp_path / "d").mkdir()
    assert_user_error(parallax("convert", ply, tmp_path / "d", "--to", "ply"), "cannot write")


def test_trajectory_without_images_cannot_become_a_colmap_model(tmp_path):
    traj = tmp_path / "t.txt"
    traj.write_text("0 0 0 0 0 0 0 1\n1 1 0 0 0 0 0 1\n")
    assert_user_error(parallax("convert", traj, tmp_path / "model", "--to", "colmap-bin"), "no registered images")
    assert not (tmp_path / "model").exists()
