"""TUM / KITTI / EuRoC trajectory files: exact round trips, agreement with evo, real files, bad input."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from evo.core.trajectory import PosePath3D, PoseTrajectory3D
from evo.tools import file_interface

from scene.errors import CorruptInput, InputNotFound, SaveFailed, UnsupportedFormat
from scene.io import trajectory_io as tio
from scene.model import Trajectory
from scene.rigid import quat_wxyz_to_matrix

logging.getLogger("evo").setLevel(logging.WARNING)


def _random_trajectory(n=200, seed=0, start=1403715273.262143) -> Trajectory:
    rng = np.random.default_rng(seed)
    stamps = start + np.cumsum(rng.uniform(0.01, 0.2, n))
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[quats[:, 0] < 0] *= -1
    positions = rng.normal(scale=20.0, size=(n, 3))
    return Trajectory(stamps, quats, positions)


def _assert_identical(a: Trajectory, b: Trajectory) -> None:
    assert np.array_equal(a.timestamps, b.timestamps)
    assert np.array_equal(a.world_from_cam_quat_wxyz, b.world_from_cam_quat_wxyz)
    assert np.array_equal(a.world_from_cam_translation, b.world_from_cam_translation)


def _rotations(traj: Trajectory) -> np.ndarray:
    return np.array([quat_wxyz_to_matrix(q) for q in traj.world_from_cam_quat_wxyz])


# --- round trips ---------------------------------------------------------------------------

def test_tum_round_trip_is_exact(tmp_path):
    traj = _random_trajectory()
    tio.write_trajectory(tmp_path / "a.txt", traj, "tum")
    _assert_identical(tio.read_trajectory(tmp_path / "a.txt"), traj)


def test_euroc_round_trip_is_exact(tmp_path):
    traj = _random_trajectory(seed=1)
    tio.write_trajectory(tmp_path / "a.csv", traj, "euroc")
    _assert_identical(tio.read_trajectory(tmp_path / "a.csv"), traj)


def test_euroc_nanoseconds_read_correctly_rounded(tmp_path):
    stamps_ns = [1403715273262142976, 1403715273312143104, 1403715273362142976]
    path = tmp_path / "data.csv"
    path.write_text(tio.EUROC_HEADER + "\n" + "".join(f"{ns},0,0,{i},1,0,0,0\n" for i, ns in enumerate(stamps_ns)))
    traj = tio.read_trajectory(path)
    assert traj.timestamps.tolist() == [ns / 10 ** 9 for ns in stamps_ns]  # int / int rounds correctly
    tio.write_trajectory(tmp_path / "again.csv", traj, "euroc")
    written = [int(line.split(",")[0]) for line in (tmp_path / "again.csv").read_text().splitlines()[1:]]
    # float64 seconds near 1.4e9 s are 2**-22 s (238 ns) apart: at most half of that is lost
    assert max(abs(w - ns) for w, ns in zip(written, stamps_ns)) <= 2 ** -23 * 1e9


def test_kitti_round_trip(tmp_path):
    traj = _random_trajectory(seed=2)
    tio.write_trajectory(tmp_path / "poses.txt", traj, "kitti", times_path=tmp_path / "times.txt")
    back = tio.read_trajectory(tmp_path / "poses.txt", fmt="kitti", times_path=tmp_path / "times.txt")
    assert np.array_equal(back.timestamps, traj.timestamps)
    assert np.array_equal(back.world_from_cam_translation, traj.world_from_cam_translation)
    # KITTI stores matrices: quaternions come back through matrix -> quaternion, equal to rounding.
    assert np.abs(back.world_from_cam_quat_wxyz - traj.world_from_cam_quat_wxyz).max() < 1e-15
    # and a second round trip of what was read is exact in the file text
    tio.write_trajectory(tmp_path / "again.txt", back, "kitti")
    tio.write_trajectory(tmp_path / "again2.txt", tio.read_trajectory(tmp_path / "again.txt", "kitti"), "kitti")
    values = np.loadtxt(tmp_path / "again.txt")
    assert np.abs(np.loadtxt(tmp_path / "again2.txt") - values).max() < 1e-15


def test_kitti_without_times_uses_frame_index(tmp_path):
    traj = _random_trajectory(n=5, seed=3)
    tio.write_trajectory(tmp_path / "poses.txt", traj, "kitti")
    assert np.array_equal(tio.read_trajectory(tmp_path / "poses.txt").timestamps, [0.0, 1.0, 2.0, 3.0, 4.0])


def test_kitti_finds_times_txt_in_the_folder_above(tmp_path):
    traj = _random_trajectory(n=5, seed=4)
    (tmp_path / "poses").mkdir()
    tio.write_trajectory(tmp_path / "poses" / "07.txt", traj, "kitti", times_path=tmp_path / "times.txt")
    assert tio.find_kitti_times(tmp_path / "poses" / "07.txt") == tmp_path / "times.txt"
    assert np.array_equal(tio.read_trajectory(tmp_path / "poses" / "07.txt").timestamps, traj.timestamps)
    no_search = tio.read_trajectory(tmp_path / "poses" / "07.txt", find_times=False)
    assert np.array_equal(no_search.timestamps, np.arange(5.0))


def test_kitti_ignores_found_times_with_other_length(tmp_path):
    tio.write_trajectory(tmp_path / "poses.txt", _random_trajectory(n=5, seed=5), "kitti")
    (tmp_path / "times.txt").write_text("0.0\n0.1\n")
    assert np.array_equal(tio.read_trajectory(tmp_path / "poses.txt").timestamps, np.arange(5.0))


# --- agreement with evo ---------------------------------------------------------------------

def test_evo_reads_our_tum_file(tmp_path):
    traj = _random_trajectory(seed=6)
    tio.write_trajectory(tmp_path / "a.txt", traj, "tum")
    evo_traj = file_interface.read_tum_trajectory_file(str(tmp_path / "a.txt"))
    assert np.array_equal(evo_traj.timestamps, traj.timestamps)
    assert np.abs(evo_traj.positions_xyz - traj.world_from_cam_translation).max() < 1e-12
    assert np.abs(evo_traj.orientations_quat_wxyz - traj.world_from_cam_quat_wxyz).max() < 1e-12


def test_evo_reads_our_kitti_file(tmp_path):
    traj = _random_trajectory(seed=7)
    tio.write_trajectory(tmp_path / "a.txt", traj, "kitti")
    evo_path = file_interface.read_kitti_poses_file(str(tmp_path / "a.txt"))
    poses = np.array(evo_path.poses_se3)
    assert np.abs(poses[:, :3, 3] - traj.world_from_cam_translation).max() < 1e-12
    assert np.abs(poses[:, :3, :3] - _rotations(traj)).max() < 1e-12


def test_evo_reads_our_euroc_file(tmp_path):
    traj = _random_trajectory(seed=8)
    tio.write_trajectory(tmp_path / "a.csv", traj, "euroc")
    evo_traj = file_interface.read_euroc_csv_trajectory(str(tmp_path / "a.csv"))
    assert np.abs(evo_traj.timestamps - traj.timestamps).max() <= 1e-12 * traj.timestamps.max()
    assert np.abs(evo_traj.positions_xyz - traj.world_from_cam_translation).max() < 1e-12
    assert np.abs(evo_traj.orientations_quat_wxyz - traj.world_from_cam_quat_wxyz).max() < 1e-12


def test_we_read_evo_tum_file(tmp_path):
    traj = _random_trajectory(seed=9)
    evo_traj = PoseTrajectory3D(traj.world_from_cam_translation, traj.world_from_cam_quat_wxyz, traj.timestamps)
    file_interface.write_tum_trajectory_file(str(tmp_path / "evo.txt"), evo_traj)
    ours = tio.read_trajectory(tmp_path / "evo.txt")
    assert np.array_equal(ours.timestamps, evo_traj.timestamps)
    assert np.array_equal(ours.world_from_cam_translation, evo_traj.positions_xyz)
    assert np.array_equal(ours.world_from_cam_quat_wxyz, evo_traj.orientations_quat_wxyz)


def test_we_read_evo_kitti_file(tmp_path):
    traj = _random_trajectory(seed=10)
    evo_path = PosePath3D(traj.world_from_cam_translation, traj.world_from_cam_quat_wxyz)
    file_interface.write_kitti_poses_file(str(tmp_path / "evo.txt"), evo_path)
    ours = tio.read_trajectory(tmp_path / "evo.txt", "kitti", find_times=False)
    poses = np.array(evo_path.poses_se3)
    assert np.array_equal(ours.world_from_cam_translation, poses[:, :3, 3])
    assert np.abs(_rotations(ours) - poses[:, :3, :3]).max() < 1e-12


# --- real files -----------------------------------------------------------------------------

def test_real_tum_groundtruth(shared_data):
    traj = tio.read_trajectory(shared_data("tum_fr3_long_office_1hz") / "groundtruth.txt")
    assert len(traj) == 8710
    assert traj.timestamps[0] == 1341847980.79 and traj.timestamps[-1] == pytest.approx(1341848067.8795)
    assert np.array_equal(traj.world_from_cam_translation[0], [-0.6832, 2.6909, 1.7373])
    assert np.array_equal(traj.world_from_cam_quat_wxyz[0], [-0.0145, 0.0003, 0.8617, -0.5072])


def test_real_kitti_poses_with_times(shared_data):
    folder = shared_data("kitti07_f000_079")
    traj = tio.read_trajectory(folder / "poses" / "07.txt")
    assert tio.detect_trajectory_format(folder / "poses" / "07.txt") == "kitti"
    assert len(traj) == 80
    assert traj.timestamps[1] == 1.038752e-01  # from ../times.txt, found automatically
    assert np.array_equal(traj.world_from_cam_translation[1], [-4.596714e-03, -2.001524e-03, 9.154274e-02])
    raw = np.loadtxt(folder / "poses" / "07.txt").reshape(-1, 3, 4)
    assert np.abs(_rotations(traj) - raw[:, :, :3]).max() < 1e-6  # the file's rotations are orthonormal to 1.6e-7


def test_real_euroc_groundtruth(shared_data):
    folder = shared_data("euroc_v101_micro") / "groundtruth"
    csv = tio.read_trajectory(folder / "V1_01_easy_vicon2gt.csv")
    tum = tio.read_trajectory(folder / "V1_01_easy_vicon2gt.txt")
    original = tio.read_trajectory(folder / "V1_01_easy_original.txt")
    assert (len(csv), len(tum), len(original)) == (2895, 2895, 28712)
    assert csv.timestamps[0] == 1403715273262142976 / 10 ** 9
    assert np.array_equal(csv.world_from_cam_quat_wxyz[0], [0.069433, -0.824237, -0.106942, -0.551702])
    assert np.abs(csv.timestamps - tum.timestamps).max() < 1e-5  # the .txt rounds to 10 microseconds
    assert np.abs(csv.world_from_cam_translation - tum.world_from_cam_translation).max() < 1e-5


def test_detect_format(tmp_path):
    traj = _random_trajectory(n=3, seed=11)
    for fmt, name in (("tum", "a.txt"), ("kitti", "b.txt"), ("euroc", "c.csv")):
        tio.write_trajectory(tmp_path / name, traj, fmt)
        assert tio.detect_trajectory_format(tmp_path / name) == fmt


# --- writes ---------------------------------------------------------------------------------

def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "traj.txt"
    tio.write_trajectory(path, _random_trajectory(n=3, seed=12), "tum")
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SaveFailed, match="No space left"):
        tio.write_trajectory(path, _random_trajectory(n=9, seed=13), "tum")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traj.txt"]  # no temporary file left behind


def test_unknown_write_format(tmp_path):
    with pytest.raises(UnsupportedFormat, match="bag"):
        tio.write_trajectory(tmp_path / "a.bag", _random_trajectory(n=3), "bag")


# --- bad input ------------------------------------------------------------------------------

def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


TUM_LINE = "1.0 0 0 0 0 0 0 1\n"


def test_tum_wrong_column_count(tmp_path):
    path = _write(tmp_path, "a.txt", "# header\n" + TUM_LINE + "2.0 0 0 0 0 0 1\n")
    with pytest.raises(CorruptInput, match=r"a\.txt, line 3: expected 8 values"):
        tio.read_trajectory(path, "tum")


def test_tum_nan_value(tmp_path):
    path = _write(tmp_path, "a.txt", TUM_LINE + "2.0 0 nan 0 0 0 0 1\n")
    with pytest.raises(CorruptInput, match=r"a\.txt, line 2: .*column 3 is 'nan'"):
        tio.read_trajectory(path)


def test_tum_non_numeric_value(tmp_path):
    path = _write(tmp_path, "a.txt", TUM_LINE + TUM_LINE.replace("1.0", "x1"))
    with pytest.raises(CorruptInput, match=r"a\.txt, line 2: .*column 1 is not a number: 'x1'"):
        tio.read_trajectory(path)


def test_tum_zero_quaternion(tmp_path):
    path = _write(tmp_path, "a.txt", "1.0 0 0 0 0 0 0 0\n")
    with pytest.raises(CorruptInput, match=r"line 1: the quaternion is zero"):
        tio.read_trajectory(path, "tum")


def test_empty_file(tmp_path):
    path = _write(tmp_path, "a.txt", "")
    with pytest.raises(CorruptInput, match=r"a\.txt: the file holds no poses"):
        tio.read_trajectory(path, "tum")


def test_comment_only_file(tmp_path):
    path = _write(tmp_path, "a.txt", "# timestamp tx ty tz qx qy qz qw\n\n")
    with pytest.raises(CorruptInput, match="holds no poses"):
        tio.read_trajectory(path)


def test_kitti_wrong_column_count(tmp_path):
    path = _write(tmp_path, "k.txt", "1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(CorruptInput, match=r"k\.txt, line 2: expected 12 values"):
        tio.read_trajectory(path, "kitti")


def test_kitti_nan_value(tmp_path):
    path = _write(tmp_path, "k.txt", "1 0 0 nan 0 1 0 0 0 0 1 0\n")
    with pytest.raises(CorruptInput, match=r"k\.txt, line 1: .*column 4 is 'nan'"):
        tio.read_trajectory(path, "kitti")


def test_kitti_non_numeric_value(tmp_path):
    path = _write(tmp_path, "k.txt", "1 0 0 0 0 1 0 0 0 0 1 zero\n")
    with pytest.raises(CorruptInput, match=r"line 1: .*column 12 is not a number"):
        tio.read_trajectory(path, "kitti")


def test_kitti_matrix_that_is_not_a_rotation(tmp_path):
    path = _write(tmp_path, "k.txt", "2 0 0 0 0 2 0 0 0 0 2 0\n")
    with pytest.raises(CorruptInput, match=r"line 1: the 3x3 part is not a rotation"):
        tio.read_trajectory(path, "kitti")


def test_kitti_times_with_wrong_count(tmp_path):
    poses = _write(tmp_path, "k.txt", "1 0 0 0 0 1 0 0 0 0 1 0\n" * 3)
    times = _write(tmp_path, "t.txt", "0.0\n0.1\n")
    with pytest.raises(CorruptInput, match=r"t\.txt: holds 2 timestamps but .*k\.txt holds 3 poses"):
        tio.read_trajectory(poses, "kitti", times_path=times)


def test_kitti_times_non_numeric(tmp_path):
    poses = _write(tmp_path, "k.txt", "1 0 0 0 0 1 0 0 0 0 1 0\n" * 2)
    times = _write(tmp_path, "t.txt", "0.0\nabc\n")
    with pytest.raises(CorruptInput, match=r"t\.txt, line 2: .*not a number"):
        tio.read_trajectory(poses, "kitti", times_path=times)


EUROC_LINE = "1403715273262142976,0.1,0.2,0.3,1,0,0,0\n"


def test_euroc_wrong_column_count(tmp_path):
    path = _write(tmp_path, "e.csv", tio.EUROC_HEADER + "\n" + EUROC_LINE + "1403715273312143104,0.1,0.2,0.3,1\n")
    with pytest.raises(CorruptInput, match=r"e\.csv, line 3: expected at least 8 values"):
        tio.read_trajectory(path, "euroc")


def test_euroc_nan_value(tmp_path):
    path = _write(tmp_path, "e.csv", EUROC_LINE.replace("0.2", "NaN"))
    with pytest.raises(CorruptInput, match=r"e\.csv, line 1: .*'NaN'"):
        tio.read_trajectory(path, "euroc")


def test_euroc_non_numeric_timestamp(tmp_path):
    path = _write(tmp_path, "e.csv", EUROC_LINE + EUROC_LINE.replace("1403715273262142976", "12:00"))
    with pytest.raises(CorruptInput, match=r"e\.csv, line 2: the timestamp is not a number of nanoseconds"):
        tio.read_trajectory(path, "euroc")


def test_euroc_non_numeric_value(tmp_path):
    path = _write(tmp_path, "e.csv", EUROC_LINE.replace("0.3", "up"))
    with pytest.raises(CorruptInput, match=r"line 1: .*not a number: 'up'"):
        tio.read_trajectory(path, "euroc")


def test_missing_file(tmp_path):
    with pytest.raises(InputNotFound, match="nope.txt"):
        tio.read_trajectory(tmp_path / "nope.txt")


def test_binary_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(CorruptInput, match="not a text file"):
        tio.read_trajectory(path, "tum")


def test_undetectable_format(tmp_path):
    path = _write(tmp_path, "a.txt", "1 2 3 4 5\n")
    with pytest.raises(UnsupportedFormat, match=r"a\.txt, line 1: not a TUM"):
        tio.read_trajectory(path)


def test_unknown_read_format(tmp_path):
    path = _write(tmp_path, "a.txt", TUM_LINE)
    with pytest.raises(UnsupportedFormat, match="unknown trajectory format 'rosbag'"):
        tio.read_trajectory(path, "rosbag")
