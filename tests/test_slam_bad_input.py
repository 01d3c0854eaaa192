"""Issue 3 §5: bad input to SLAM never crashes; the state goes LOST and recovers where it can, the map already
built is kept, and a run that cannot initialise says why. (Blank, NaN, featureless frames and a stationary
start are in test_slam_core.py.)"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from assets import demo_camera
from slam.system import System, TrackingState
from tests.test_cli import assert_user_error, parallax
from tests.test_slam_core import rendered

WALK = "forward_walk"


def _initialised(system: System, frames, timestamps, upto: int = 30):
    for img, ts in zip(frames[:upto], timestamps[:upto]):
        r = system.step(img, ts)
    assert r.state == TrackingState.OK
    return r


def test_duplicated_frames_keep_tracking_without_new_keyframes_or_motion():
    timestamps, _, frames = rendered(WALK)
    system = System(demo_camera())
    last = _initialised(system, frames, timestamps)
    keyframes = system.map.num_keyframes
    # the same image ten times (a stalled capture, a video with repeated frames)
    results = [system.step(frames[29], timestamps[29] + 0.001 * (k + 1)) for k in range(10)]
    assert all(r.state == TrackingState.OK for r in results)
    centres = np.array([r.cam_from_world.center() for r in results])
    assert np.max(np.linalg.norm(centres - last.cam_from_world.center(), axis=1)) < 1e-3
    assert system.map.num_keyframes == keyframes  # no keyframe from zero parallax
    r = system.step(frames[30], timestamps[30] + 0.02)
    assert r.state == TrackingState.OK


def test_frame_size_change_mid_sequence_is_lost_then_recovers_and_keeps_the_map():
    timestamps, _, frames = rendered(WALK)
    system = System(demo_camera())
    _initialised(system, frames, timestamps)
    keyframes, points = system.map.num_keyframes, system.map.num_points
    small = cv2.resize(frames[30], (320, 240))
    r = system.step(small, timestamps[30])
    assert r.state == TrackingState.LOST and r.cam_from_world is None and "320x240" in r.reason
    assert system.map.num_keyframes == keyframes and system.map.num_points >= points
    r = system.step(frames[31], timestamps[31])
    assert r.state in (TrackingState.RELOCALIZED, TrackingState.OK) and r.cam_from_world is not None


def test_textureless_frames_mid_run_are_lost_then_recover():
    timestamps, _, frames = rendered(WALK)
    system = System(demo_camera())
    _initialised(system, frames, timestamps)
    keyframes = system.map.num_keyframes
    # a lens cap / white wall: a smooth gradient with no corners
    wall = np.tile(np.linspace(90, 110, 640, dtype=np.float32), (480, 1)).astype(np.uint8)
    for k in range(3):
        r = system.step(wall, timestamps[30] + 0.001 * k)
        assert r.state == TrackingState.LOST and r.reason
    assert system.map.num_keyframes == keyframes
    r = system.step(frames[31], timestamps[31])
    assert r.state == TrackingState.RELOCALIZED and r.cam_from_world is not None


def _write_walk_folder(folder, frames):
    folder.mkdir()
    for i, img in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def test_a_corrupt_frame_in_the_middle_is_skipped_and_the_run_completes(tmp_path):
    _, _, frames = rendered(WALK)
    folder = tmp_path / "frames"
    _write_walk_folder(folder, frames[:40])
    broken = folder / "0035.png"
    broken.write_bytes(broken.read_bytes()[:2000])  # truncated mid-file, as a crashed copy leaves it
    calib = tmp_path / "calib.yaml"
    cam = demo_camera()
    calib.write_text(f"model: {cam.model}\nwidth: {cam.width}\nheight: {cam.height}\n"
                     f"params: [{', '.join(repr(float(p)) for p in cam.params)}]\n")
    stats = tmp_path / "stats.json"
    result = parallax("slam", folder, "-o", tmp_path / "run.parallax", "--calib", calib, "--stats", stats)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(stats.read_text())
    assert numbers["frames"] == 39  # the corrupt frame never reaches SLAM
    assert numbers["tracked"] == numbers["frames"] - numbers["initialized_at_frame"]
    assert "0035.png" in result.stderr


def test_wrong_intrinsics_file_gives_a_clear_message(tmp_path):
    _, _, frames = rendered(WALK)
    folder = tmp_path / "frames"
    _write_walk_folder(folder, frames[:30])
    calib = tmp_path / "calib.yaml"
    calib.write_text("model: PINHOLE\nwidth: 1226\nheight: 370\nparams: [707.1, 707.1, 601.9, 183.1]\n")
    result = parallax("slam", folder, "-o", tmp_path / "run.parallax", "--calib", calib)
    assert_user_error(result, "1226")
    assert not (tmp_path / "run.parallax").exists()


def test_initialisation_that_keeps_failing_points_at_the_intrinsics_file(tmp_path):
    """Initialisation never succeeds (no motion): the message names the calibration file in use and what it
    says, next to the motion/texture causes."""
    _, _, frames = rendered(WALK)
    folder = tmp_path / "frames"
    _write_walk_folder(folder, [frames[0]] * 12)
    cam = demo_camera()
    calib = tmp_path / "calib.yaml"
    calib.write_text(f"model: PINHOLE\nwidth: {cam.width}\nheight: {cam.height}\n"
                     f"params: [3000.0, 3000.0, {cam.params[2]}, {cam.params[3]}]\n")
    out = tmp_path / "run.parallax"
    result = parallax("slam", folder, "-o", out, "--calib", calib)
    assert_user_error(result, "did not initialise", "calib.yaml", "fx=3000", "intrinsics")
    assert not out.exists()


def _walk_with_focal(tmp_path, focal_factor):
    _, _, frames = rendered(WALK)
    folder = tmp_path / "frames"
    _write_walk_folder(folder, frames[:30])
    cam = demo_camera()
    fx, fy, cx, cy = cam.params[:4]
    calib = tmp_path / "calib.yaml"
    calib.write_text(f"model: PINHOLE\nwidth: {cam.width}\nheight: {cam.height}\n"
                     f"params: [{fx * focal_factor}, {fy * focal_factor}, {cx}, {cy}]\n")
    return folder, calib


@pytest.mark.parametrize("focal_factor", [0.2, 5.0])
def test_intrinsics_far_off_are_detected(tmp_path, focal_factor):
    """SLAM initialises and tracks with a focal length 5x off; the focal check on the first keyframes says so."""
    folder, calib = _walk_with_focal(tmp_path, focal_factor)
    out = tmp_path / "run.parallax"
    result = parallax("slam", folder, "-o", out, "--calib", calib)
    assert_user_error(result, "intrinsics", "calib.yaml", "prefers a focal length", "--no-intrinsics-check")
    assert not out.exists()


def test_intrinsics_check_can_be_overridden_and_is_in_the_stats(tmp_path):
    folder, calib = _walk_with_focal(tmp_path, 0.2)
    out, stats = tmp_path / "run.parallax", tmp_path / "stats.json"
    result = parallax("slam", folder, "-o", out, "--calib", calib, "--stats", stats, "--no-intrinsics-check")
    assert result.returncode == 0, result.stderr
    assert out.exists() and json.loads(stats.read_text())["focal_ratio_preferred"] > 3.0


def test_a_guess_far_off_is_written_with_a_hint(tmp_path):
    """No calibration and frames in a wide black border: the guess (1.2 x the padded width) is about 3x the true
    focal length. A guess was never a claim, so the run is written; the message names the better focal length."""
    _, _, frames = rendered(WALK)
    folder = tmp_path / "frames"
    _write_walk_folder(folder, [cv2.copyMakeBorder(f, 240, 240, 320, 320, cv2.BORDER_CONSTANT) for f in frames[:30]])
    out, stats = tmp_path / "run.parallax", tmp_path / "stats.json"
    result = parallax("slam", folder, "-o", out, "--stats", stats)
    assert result.returncode == 0, result.stderr
    assert out.exists() and "GUESS" in result.stderr and "prefers a focal length" in result.stderr
    assert "--calib" in result.stderr
    assert json.loads(stats.read_text())["focal_ratio_preferred"] < 0.5
