"""slam.frame_refinement: frames' poses solved again against the finished map (System.finish)."""
from __future__ import annotations

import numpy as np
import pytest

from assets import demo_camera
from geometry.camera_models import project
from geometry.evaluate import evaluate
from scene.rigid import Rigid3d
from slam.frame_refinement import compact_matches, refine_frame_poses, refinement_state
from slam.map import SlamMap
from slam.system import SlamOptions, System
from tests.test_slam_core import ground_truth, rendered

MIN_INLIERS = 30


def _pose(yaw_deg: float, centre) -> Rigid3d:
    a = np.radians(yaw_deg)
    world_from_cam = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return Rigid3d.from_rotation(world_from_cam, np.asarray(centre, np.float64)).inverse()


def _map_with_points(n: int = 200, seed: int = 0) -> SlamMap:
    rng = np.random.default_rng(seed)
    xyz = np.column_stack((rng.uniform(-1.5, 1.5, n), rng.uniform(-1.0, 1.0, n), rng.uniform(3.0, 6.0, n)))
    m = SlamMap()
    m.add_points(xyz, np.zeros((n, 32), np.uint8), np.zeros((n, 3), np.uint8), 0, 10.0)
    return m


def _add_keyframe(m: SlamMap, camera, pose: Rigid3d, frame_index: int) -> int:
    xy = project(camera, pose.apply(m.xyz))
    return m.add_keyframe(pose, frame_index, float(frame_index), xy, xy, np.zeros(len(xy), np.int64),
                          np.zeros((len(xy), 32), np.uint8), np.zeros((len(xy), 3), np.uint8))


def _matches_seen_from(m: SlamMap, camera, pose: Rigid3d, ids: np.ndarray):
    xy = project(camera, pose.apply(m.xyz[ids]))
    return ids.astype(np.int32), xy.astype(np.float32)


def test_compact_matches_keep_the_matched_keypoints_compactly_or_none_below_the_minimum():
    ids = np.array([-1, 4, -1, 7, 9], np.int64)
    xy = np.arange(10, dtype=np.float64).reshape(5, 2) + 0.25
    kept = compact_matches(ids, xy, min_tracked=3)
    assert kept[0].dtype == np.int32 and kept[1].dtype == np.float32
    np.testing.assert_array_equal(kept[0], [4, 7, 9])
    np.testing.assert_array_equal(kept[1], xy[[1, 3, 4]].astype(np.float32))
    assert compact_matches(ids, xy, min_tracked=4) is None  # a frame posed by rotation alone holds none


def test_a_frame_tracked_off_its_true_pose_is_solved_back_onto_it():
    camera = demo_camera()
    m = _map_with_points()
    kf_pose = _pose(0.0, [0.0, 0.0, 0.0])
    k = _add_keyframe(m, camera, kf_pose, frame_index=0)
    true = _pose(4.0, [0.12, -0.03, 0.05])
    tracked = Rigid3d.from_rotation(true.rotation, true.translation + [0.03, -0.02, 0.04])
    ids = np.arange(m.num_points_total)
    reference, rel = [k, k], [Rigid3d(), tracked * kf_pose.inverse()]
    stats = refine_frame_poses(camera, m, reference, rel, [None, _matches_seen_from(m, camera, true, ids)],
                               MIN_INLIERS)
    assert stats == {"refined_frames": 1, "keyframe_frames": 1}  # frame 0 is the keyframe itself
    refined = rel[1] * m.kf_pose(k)
    assert np.linalg.norm(refined.center() - true.center()) < 1e-6
    assert np.allclose(refined.rotation, true.rotation, atol=1e-8)


def test_a_frame_without_enough_live_points_keeps_its_pose_and_a_keyframes_frame_takes_the_keyframe_pose():
    camera = demo_camera()
    m = _map_with_points()
    kf_pose = _pose(0.0, [0.0, 0.0, 0.0])
    _add_keyframe(m, camera, _pose(-2.0, [-0.05, 0.0, 0.0]), frame_index=0)
    k1 = _add_keyframe(m, camera, kf_pose, frame_index=2)
    true = _pose(3.0, [0.1, 0.0, 0.0])
    tracked = Rigid3d.from_rotation(true.rotation, true.translation + [0.02, 0.0, 0.0])
    ids = np.arange(40)
    m.remove_points(ids[:15])  # 25 of the frame's 40 points are left: under the minimum
    frames_rel = [Rigid3d(), tracked * kf_pose.inverse(), Rigid3d.from_rotation(np.eye(3), [0.01, 0, 0]), None]
    reference = [0, k1, 0, -1]
    matches = [None, _matches_seen_from(m, camera, true, ids), None, None]
    stats = refine_frame_poses(camera, m, reference, frames_rel, matches, MIN_INLIERS)
    assert stats == {"refined_frames": 0, "keyframe_frames": 2}
    assert np.allclose((frames_rel[1] * m.kf_pose(k1)).center(), tracked.center(), atol=1e-12)
    # Frame 2 is keyframe k1's own frame: it now follows that keyframe exactly.
    assert reference[2] == k1 and np.allclose(frames_rel[2].translation, 0) and np.allclose(frames_rel[2].rotation,
                                                                                              np.eye(3))
    assert reference[3] == -1 and frames_rel[3] is None  # no pose stays no pose


def test_the_refinement_state_changes_with_frames_keyframe_poses_points_and_culling():
    camera = demo_camera()
    m = _map_with_points()
    k = _add_keyframe(m, camera, _pose(0.0, [0.0, 0.0, 0.0]), frame_index=0)
    state = refinement_state(m, 5)
    assert refinement_state(m, 5) == state
    assert refinement_state(m, 6) != state
    m.set_kf_pose(k, _pose(0.5, [0.0, 0.0, 0.0]))
    moved = refinement_state(m, 5)
    assert moved != state
    m.xyz[3] += 1e-9
    nudged = refinement_state(m, 5)
    assert nudged != moved
    m.remove_points([4])
    assert refinement_state(m, 5) != nudged


@pytest.fixture(scope="module")
def handheld_step_run():
    timestamps, _, frames = rendered("handheld")
    system = System(demo_camera())
    results = [system.step(img, ts) for img, ts in zip(frames, timestamps)]
    yield system, results
    system.close()


def _ate(system: System) -> float:
    from scene.model import Trajectory
    poses = [(ts, p) for ts, p in system.frame_poses() if p is not None]
    est = Trajectory.from_poses([ts for ts, _ in poses], [p.inverse() for _, p in poses])
    return evaluate(est, ground_truth("handheld"))["ate_percent_of_path"]


def test_finish_refines_every_map_posed_frame_and_lowers_the_handheld_ate(handheld_step_run):
    system, results = handheld_step_run
    system.wait_for_mapping()
    before = _ate(system)
    stats = system.finish()
    after = _ate(system)
    keyframe_frames = set(system.map.kf_frame_index.tolist())
    posed = [i for i, (_, pose) in enumerate(system.frame_poses()) if pose is not None]  # + init's reference
    assert len(posed) == 1 + sum(r.cam_from_world is not None for r in results)
    assert stats["keyframe_frames"] == len([i for i in posed if i in keyframe_frames])
    assert stats["refined_frames"] == len([i for i in posed if i not in keyframe_frames])
    assert after < before, (before, after)
    poses = [p for _, p in system.frame_poses()]
    assert system.finish() == {}  # nothing changed since: the same poses, bit for bit (exports agree)
    assert all(a is b is None or np.array_equal(a.matrix(), b.matrix())
               for a, b in zip(poses, [p for _, p in system.frame_poses()]))


def test_refinement_can_be_turned_off():
    timestamps, _, frames = rendered("handheld")
    system = System(demo_camera(), SlamOptions(refine_frames=False, final_ba_iterations=0))
    for img, ts in zip(frames[:30], timestamps[:30]):
        system.step(img, ts)
    rel = list(system.frame_cam_from_ref)
    quat, trans = system.map.kf_quat.copy(), system.map.kf_trans.copy()
    assert system.finish() == {}
    assert all(a is b for a, b in zip(system.frame_cam_from_ref, rel)) and any(r is not None for r in rel)
    assert np.array_equal(system.map.kf_quat, quat) and np.array_equal(system.map.kf_trans, trans)
    system.close()


def _keyframe_centres(m: SlamMap) -> np.ndarray:
    return np.array([m.kf_pose(k).center() for k in range(m.num_keyframes)])


@pytest.mark.parametrize("iterations", [100, 0])
def test_finish_adjusts_the_whole_map_first(iterations):
    """Keyframes knocked 1 cm off the map's optimum (its median depth is 1) go back onto it at finish, and the
    frames follow; with final_ba_iterations=0 finish leaves them where they are."""
    timestamps, _, frames = rendered("handheld")
    system = System(demo_camera())
    for img, ts in zip(frames[:40], timestamps[:40]):
        system.step(img, ts)
    system.finish()  # the optimum
    system.options = SlamOptions(final_ba_iterations=iterations)
    optimum = _keyframe_centres(system.map)
    m = system.map
    assert m.num_keyframes >= 8
    shift = np.random.default_rng(0).normal(0.0, 0.01 / np.sqrt(3), (m.num_keyframes - 1, 3))
    m.kf_trans[1:] += shift  # keyframe 0 holds the gauge
    knocked = _keyframe_centres(m)
    stats = system.finish()
    if iterations:
        assert stats["final_ba"]["ba_rms_px"] < 1.0
        assert np.abs(_keyframe_centres(m) - optimum).max() < 3e-4 and np.abs(knocked - optimum).max() > 0.01
        # Every keyframe's own frame is where its keyframe is.
        for k, i in enumerate(m.kf_frame_index):
            assert np.allclose(system.frame_poses()[int(i)][1].center(), m.kf_pose(k).center(), atol=1e-12)
    else:
        assert "final_ba" not in stats and np.array_equal(_keyframe_centres(m), knocked)
    system.close()
