"""Frames posed by rotation alone get their centres at the end of a run (slam.rotation_refinement)."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from assets import demo_camera, render_frame
from assets.camera_paths import look_dir
from geometry.align import umeyama_poses
from geometry.evaluate import evaluate
from scene.model import Scene, Trajectory
from slam.rotation_refinement import KeptFrames, RotationRefinementOptions, refine_rotation_only_poses
from slam.system import SlamOptions, System
from tests.test_slam_core import estimated_trajectory
from tests.test_slam_rotation import _fast_rotation, _room


def _run(frames, timestamps, options=None):
    system = System(demo_camera(), options)
    results = [system.step(img, ts) for img, ts in zip(frames, timestamps)]
    return system, results, system.finish()


@functools.lru_cache(maxsize=None)
def _fast_rotation_runs():
    timestamps, _, frames = _fast_rotation()
    solved = _run(frames, timestamps)
    held = _run(frames, timestamps, SlamOptions(rotation_refinement=RotationRefinementOptions(enabled=False)))
    return solved, held


def test_fast_rotation_meets_the_1_percent_target_once_its_rotation_only_frames_are_solved():
    """Issue 3: ATE <= 1 % of the path on fast rotation. Held centres leave about 5 %: the camera also moves
    on a 3 cm circle while it pans (measured here: 0.5 % solved, 5.1 % held)."""
    timestamps, world_from_cam, _ = _fast_rotation()
    gt = Trajectory.from_poses(timestamps, world_from_cam)
    (system, results, stats), (held, held_results, _) = _fast_rotation_runs()
    turned = [r.frame_index for r in results if r.rotation_only]
    assert len(turned) >= 40 and turned == [r.frame_index for r in held_results if r.rotation_only]
    assert evaluate(estimated_trajectory(system), gt)["ate_percent_of_path"] <= 1.0
    assert evaluate(estimated_trajectory(held), gt)["ate_percent_of_path"] > 3.0
    assert stats["rotation_refinement"]["solved_rotation_only"] == len(turned)
    # The rotation-only frames moved off the centre they were held at, and the map stayed consistent with them.
    poses = system.frame_poses()
    assert len({tuple(np.round(poses[i][1].center(), 6)) for i in turned}) == len(turned)
    scene = Scene()
    system.to_scene(scene)
    assert np.median(scene.points.error) < 1.0 and len(scene.points) > 500


def test_a_solve_that_disagrees_with_the_map_is_refused():
    """Map-posed frames displaced by a fifth of the scene depth: the tracks cannot put them there, so the
    solve's Sim(3) onto them leaves a large residual, and the rotation-only frames keep their poses."""
    (system, _, _), _ = _fast_rotation_runs()
    kept = system._kept_frames
    poses = {i: p for i, (_, p) in enumerate(system.frame_poses()) if p is not None}
    depth = system._typical_depth()
    options = system.options.rotation_refinement
    solved, stats = refine_rotation_only_poses(system.camera, kept, poses, depth, options)
    assert solved and stats["alignment_error"] < options.max_alignment_error
    rng = np.random.default_rng(0)
    rotation_only = set(kept.rotation_only)
    shaken = {i: p if i in rotation_only else
              type(p).from_rotation(p.rotation, p.translation + rng.normal(0.0, 0.2 * depth, 3)) for i, p in poses.items()}
    solved, stats = refine_rotation_only_poses(system.camera, kept, shaken, depth, options)
    assert solved == {} and stats["alignment_error"] > options.max_alignment_error


def test_a_refinement_that_fails_leaves_the_run_as_tracked(monkeypatch, caplog):
    """Whatever goes wrong in the solve, finish still delivers the run: the frames keep their tracked poses."""
    import slam.rotation_refinement as refinement

    def broken(*args, **kwargs):
        raise ValueError("no solve today")

    monkeypatch.setattr(refinement, "bundle_adjust", broken)
    timestamps, _, frames = _fast_rotation()
    system, results, stats = _run(frames[:60], timestamps[:60])
    held, _, _ = _run(frames[:60], timestamps[:60],
                      SlamOptions(rotation_refinement=RotationRefinementOptions(enabled=False)))
    assert sum(r.rotation_only for r in results) >= 20
    assert stats["rotation_refinement"] == {"failed": "no solve today"}
    assert "keep their tracked centres: no solve today" in caplog.text
    assert [p for _, p in system.frame_poses()] == [p for _, p in held.frame_poses()]


# --- a pan on a tripod ------------------------------------------------------------------------------------------

CENTRE = np.array([0.8, 1.35, 1.5])


@functools.lru_cache(maxsize=None)
def _slide_then_pan():
    """A 30-frame slide sideways (to initialise), then the camera turns on the spot at 6 degrees a frame."""
    camera = demo_camera()
    poses = []
    for i in range(90):
        if i < 30:
            poses.append(look_dir(CENTRE + [0.0, -0.01 * (30 - i), 0.0], 0.3, -0.1))
        else:
            poses.append(look_dir(CENTRE, 0.3 - math.radians(6.0) * (i - 29), -0.1))
    timestamps = np.arange(90) / 30.0
    return timestamps, poses, [render_frame(p, camera, _room())[0] for p in poses]


def test_a_pan_on_a_tripod_keeps_its_centre():
    """The solve must not invent motion where there is none: the frames turned about one centre stay there.
    Solved like fast rotation's, they drifted 4-6 cm off it: with no parallax nothing fixes their centres."""
    timestamps, world_from_cam, frames = _slide_then_pan()
    system, results, stats = _run(frames, timestamps)
    turned = [r.frame_index for r in results if r.rotation_only]
    # Its matches show no parallax (0.04 px measured, against 0.25-0.35 on fast rotation): held as tracked.
    assert len(turned) >= 10 and stats["rotation_refinement"]["turned_in_place"] == len(turned)
    poses = system.frame_poses()
    posed = [i for i, (_, p) in enumerate(poses) if p is not None and i < 30]
    # The slide's frames fix the Sim(3) to the room (with their orientations: the slide is straight); the
    # turned frames must then sit at the pan's centre.
    rotation, translation, scale = umeyama_poses([poses[i][1].center() for i in posed],
                                                 [poses[i][1].rotation.T for i in posed],
                                                 [world_from_cam[i].translation for i in posed],
                                                 [world_from_cam[i].rotation for i in posed])
    off = [np.linalg.norm(scale * rotation @ poses[i][1].center() + translation - CENTRE) for i in turned]
    assert max(off) < 0.01


# --- what is kept ---------------------------------------------------------------------------------------------

class _Features:
    def __init__(self, n: int = 10):
        self.descriptors = np.zeros((n, 32), np.uint8)

    def __len__(self) -> int:
        return len(self.descriptors)


def test_frames_are_kept_around_rotation_only_frames_within_the_budget():
    kept = KeptFrames(RotationRefinementOptions(context_frames=3))
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(20):
        kept.offer(i, image, _Features(), rotation_only=i in (6, 7))
    assert sorted(kept.kept) == [3, 4, 5, 6, 7, 8, 9, 10] and kept.rotation_only == [6, 7]
    assert kept.kept[3].grey.shape == (48, 64)
    one = 48 * 64 + 32 * 10 + 64 * 10
    small = KeptFrames(RotationRefinementOptions(context_frames=3, max_bytes=5 * one))
    for i in range(20):
        small.offer(i, image, _Features(), rotation_only=i in (6, 15))
    assert sorted(small.kept) == [3, 4, 5, 6, 7] and small.full  # the second stretch finds the budget spent
    off = KeptFrames(RotationRefinementOptions(enabled=False))
    off.offer(0, image, _Features(), rotation_only=True)
    assert off.kept == {}


def test_a_distorted_frame_is_resampled_to_the_pinhole_view_the_solve_works_in():
    """The solve's homographies hold between undistorted views only: a frame of a camera with distortion is
    resampled to the pinhole camera of the same focal length and centre, pixel conventions included."""
    import cv2

    from geometry.camera_models import pixels_to_normalized, undistort_normalized
    from scene.camera import Camera
    from slam.rotation_refinement import _undistorted, _undistortion_maps

    pinhole = demo_camera()
    fx, fy, cx, cy = pinhole.params
    distorted = Camera(7, "OPENCV", pinhole.width, pinhole.height, [fx, fy, cx, cy, -0.12, 0.03, 0.001, -0.001])
    sharp = render_frame(look_dir(CENTRE, 0.3, -0.1), pinhole, _room())[0]
    # The distorted camera's frame: each of its pixels samples the pinhole frame where its ray lands.
    u, v = np.meshgrid(np.arange(pinhole.width, dtype=np.float64), np.arange(pinhole.height, dtype=np.float64))
    rays = undistort_normalized(distorted.model, distorted.params,
                                pixels_to_normalized(distorted, np.column_stack((u.ravel(), v.ravel())) + 0.5))
    map_x = (fx * rays[:, 0] + cx - 0.5).reshape(u.shape).astype(np.float32)
    map_y = (fy * rays[:, 1] + cy - 0.5).reshape(u.shape).astype(np.float32)
    frame = cv2.remap(sharp, map_x, map_y, cv2.INTER_LINEAR)
    maps = _undistortion_maps(distorted)
    inner = (slice(80, 400), slice(100, 540))

    def error(image) -> float:
        return float(np.abs(image[inner].astype(float) - sharp[inner]).mean())

    resampled = error(_undistorted(frame, maps))
    half_pixel_off = error(_undistorted(frame, (maps[0] + 0.5, maps[1] + 0.5)))
    # Measured: 2.3 grey levels (two bilinear resamplings blur about as much), 5.3 half a pixel off, 7.5 as given.
    assert resampled < 0.5 * error(frame) and resampled < 0.7 * half_pixel_off
