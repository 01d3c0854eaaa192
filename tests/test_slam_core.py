"""The monocular SLAM core (slam/) on the project's demo renderer, against the exact ground truth.

Frames are rendered in memory once per module (640 x 480, 30 fps). Targets from issue 3: initialised within
the first 30 frames, every frame tracked after initialisation, ATE RMSE after Sim(3) alignment <= 0.5 % of
the path length; no drift and no re-initialisation while the camera stands still.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from assets import camera_path, demo_camera, render_frame
from geometry.evaluate import evaluate
from scene.model import Scene, Trajectory
from slam.tracking import POSE_GATE_PX
from slam.system import KP_NEW, KP_OUTLIER, KP_TRACKED, System, TrackingState

FPS = 30.0
FRAMES = {"orbit": 150, "forward_walk": 120, "handheld": 120, "stop": 141}
MOVING = ("orbit", "forward_walk", "handheld")


@functools.lru_cache(maxsize=None)
def _room():
    from assets.room import build_room
    return build_room(0)


@functools.lru_cache(maxsize=None)
def rendered(name: str):
    """(timestamps, world_from_cam list, frames (N, H, W, 3) uint8) of a demo path."""
    timestamps, poses = camera_path(name, FRAMES[name], FPS)
    camera = demo_camera()
    frames = np.stack([render_frame(p, camera, _room())[0] for p in poses])
    return timestamps, poses, frames


@functools.lru_cache(maxsize=None)
def slam_run(name: str):
    """(system, step results) of SLAM over the whole path."""
    timestamps, _, frames = rendered(name)
    system = System(demo_camera())
    results = [system.step(img, ts) for img, ts in zip(frames, timestamps)]
    return system, results


def estimated_trajectory(system: System) -> Trajectory:
    """The trajectory the system delivers: after ``finish`` (mapping settled, frames refined)."""
    system.finish()
    poses = [(ts, p) for ts, p in system.frame_poses() if p is not None]
    return Trajectory.from_poses([ts for ts, _ in poses], [p.inverse() for _, p in poses])


def ground_truth(name: str) -> Trajectory:
    timestamps, poses, _ = rendered(name)
    return Trajectory.from_poses(timestamps, poses)


# --- initialisation and tracking ---------------------------------------------------------------------

@pytest.mark.parametrize("name", MOVING)
def test_initializes_within_30_frames(name):
    system, results = slam_run(name)
    assert system.initialized_at_frame is not None and system.initialized_at_frame < 30
    assert all(r.state == TrackingState.INIT for r in results[:system.initialized_at_frame])
    assert all(r.cam_from_world is None for r in results[:system.initialized_at_frame])


@pytest.mark.parametrize("name", MOVING)
def test_every_frame_tracked_after_initialization(name):
    system, results = slam_run(name)
    after = results[system.initialized_at_frame:]
    lost = [r.frame_index for r in after if r.cam_from_world is None]
    assert lost == []
    assert all(r.state == TrackingState.OK for r in after)
    assert not any(r.rotation_only for r in after)  # the map tracks them all: the rotation fallback stays unused
    assert system.map.num_keyframes >= 5 and system.map.num_points >= 500


@pytest.mark.parametrize("name", MOVING)
def test_ate_below_half_percent_of_path(name):
    system, _ = slam_run(name)
    result = evaluate(estimated_trajectory(system), ground_truth(name))
    assert result["ate_percent_of_path"] <= 0.5, result


def test_step_result_keypoint_status():
    system, results = slam_run("forward_walk")
    r = results[-1]
    assert r.keypoints_xy.shape == (len(r.keypoint_status), 2)
    assert set(np.unique(r.keypoint_status)) <= {KP_NEW, KP_TRACKED, KP_OUTLIER}
    tracked = r.keypoint_status == KP_TRACKED
    assert tracked.sum() == r.num_tracked >= 30
    assert np.all(r.point_ids[tracked] >= 0) and np.all(r.point_ids[~tracked] == -1)
    assert np.all(system.map.alive[r.point_ids[tracked]])
    for stage in ("features", "track", "mapping", "total"):
        assert r.timings_ms[stage] >= 0.0


def test_no_false_loop_on_the_forward_walk():
    """The walk never comes back: place recognition runs on every keyframe, yet no loop may close."""
    system, results = slam_run("forward_walk")
    assert system.recognizer.ready and len(system.recognizer.database.vectors) == system.map.num_keyframes
    assert system.loop_closures == 0 and not any(r.loop_closed for r in results)


# --- the stationary camera ---------------------------------------------------------------------------

def test_stop_no_drift_and_no_reinitialization():
    from assets.camera_paths import stop_frames
    name = "stop"
    system, results = slam_run(name)
    n_stop = stop_frames(FPS)
    first_stop = (FRAMES[name] - n_stop) // 2
    stop = range(first_stop, first_stop + n_stop)
    assert system.initialized_at_frame is not None and system.initialized_at_frame < first_stop
    after = results[system.initialized_at_frame:]
    assert all(r.state != TrackingState.INIT for r in after)
    assert all(r.cam_from_world is not None for r in after)
    # While the camera stands still, no keyframe is added and the estimated centre does not move
    # (in ground-truth units, scaled by the ratio of path lengths -- the path is a straight line, so a
    # Sim(3) alignment is undetermined: below 1 mm over the 2 s).
    assert not any(results[i].keyframe_inserted for i in list(stop)[1:])
    est = estimated_trajectory(system)
    gt = ground_truth(name)
    tracked = np.isin(np.round(gt.timestamps, 9), np.round(est.timestamps, 9))
    gt_length = np.linalg.norm(np.diff(gt.world_from_cam_translation[tracked], axis=0), axis=1).sum()
    scale = gt_length / est.path_length()
    centres = np.array([results[i].cam_from_world.center() for i in stop])
    spread = scale * np.linalg.norm(centres - centres[0], axis=1).max()
    assert spread < 1e-3, spread


def test_stationary_start_never_initializes():
    _, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    results = [system.step(frames[0], i / FPS) for i in range(8)]
    assert all(r.state == TrackingState.INIT and r.cam_from_world is None for r in results)
    assert system.map.num_keyframes == 0
    assert "not moving" in results[-1].reason


# --- determinism, reset, export ----------------------------------------------------------------------

def test_step_mode_is_deterministic():
    timestamps, _, frames = rendered("forward_walk")
    runs = []
    for _ in range(2):
        system = System(demo_camera())
        results = [system.step(img, ts) for img, ts in zip(frames[:45], timestamps[:45])]
        runs.append((system, results))
    (s1, r1), (s2, r2) = runs
    for a, b in zip(r1, r2):
        assert a.state == b.state
        assert (a.cam_from_world is None) == (b.cam_from_world is None)
        if a.cam_from_world is not None:
            assert a.cam_from_world == b.cam_from_world  # bit-identical
        assert np.array_equal(a.keypoint_status, b.keypoint_status)
        assert np.array_equal(a.point_ids, b.point_ids)
    assert np.array_equal(s1.map.xyz, s2.map.xyz)
    assert np.array_equal(s1.map.kf_quat, s2.map.kf_quat)


def test_map_arrays_are_consistent():
    system, _ = slam_run("handheld")
    m = system.map
    alive_obs = np.flatnonzero(m.obs_alive)
    for e in alive_obs:
        assert m.kf_point_ids[m.obs_kf[e]][m.obs_kp[e]] == m.obs_pt[e]
    n_ids = sum(int(np.count_nonzero(ids >= 0)) for ids in m.kf_point_ids)
    assert n_ids == len(alive_obs)
    assert np.all(m.alive[m.obs_pt[alive_obs]])
    pairs = m.obs_kf[alive_obs] * m.num_points_total + m.obs_pt[alive_obs]
    assert len(np.unique(pairs)) == len(pairs)  # a point at most once per keyframe
    covis = m.covisibility(m.num_keyframes - 1)
    assert covis[m.num_keyframes - 1] == np.count_nonzero(m.kf_point_ids[m.num_keyframes - 1] >= 0)


def test_medoid_descriptors_match_the_median_distance_definition():
    from geometry.matching import hamming_distance_matrix, medoid_descriptors

    rng = np.random.default_rng(3)
    desc = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    ptr = np.array([0, 1, 3, 3, 9, 24, 40])
    rows = medoid_descriptors(desc, ptr)
    assert rows[2] == -1 and rows[0] == 0 and rows[1] == 1   # empty group; one and two rows: the first
    for g in (3, 4, 5):
        a, b = ptr[g], ptr[g + 1]
        median = np.sort(hamming_distance_matrix(desc[a:b], desc[a:b]), axis=1)[:, (b - a - 1) // 2]
        assert rows[g] == a + int(np.argmin(median))
    with pytest.raises(ValueError):
        medoid_descriptors(desc, [0, 50])


@functools.lru_cache(maxsize=None)
def tuned_run(name: str):
    """SLAM with the opt-in distinctive descriptors and the minimum keyframe gap (both off by default)."""
    from dataclasses import replace

    from slam.system import SlamOptions

    options = SlamOptions()
    options = replace(options, mapping=replace(options.mapping, distinctive_descriptors=True, keyframe_min_frames=3))
    timestamps, _, frames = rendered(name)
    system = System(demo_camera(), options)
    results = [system.step(img, ts) for img, ts in zip(frames, timestamps)]
    return system, results


def test_point_descriptor_is_its_most_distinctive_observation():
    from geometry.matching import hamming_distance_matrix

    system, _ = tuned_run("handheld")
    m = system.map
    obs = np.flatnonzero(m.obs_alive)
    checked = 0
    for p in np.flatnonzero(m.alive)[::7]:
        mine = obs[m.obs_pt[obs] == p]
        desc = np.array([m.kf_descriptors[m.obs_kf[e]][m.obs_kp[e]] for e in mine])
        if len(desc) < 3:
            continue
        median = np.sort(hamming_distance_matrix(desc, desc), axis=1)[:, (len(desc) - 1) // 2]
        assert np.array_equal(m.descriptors[p], desc[int(np.argmin(median))])
        checked += 1
    assert checked >= 50


def test_keyframe_gap_keeps_keyframes_to_a_fraction_of_frames_and_the_accuracy():
    # Synchronous mapping is never busy: without the gap most frames of the handheld path became keyframes.
    system, results = tuned_run("handheld")
    tracked = len(results) - system.initialized_at_frame
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    assert system.map.num_keyframes <= 0.4 * tracked, (system.map.num_keyframes, tracked)
    assert evaluate(estimated_trajectory(system), ground_truth("handheld"))["ate_percent_of_path"] <= 0.5


def _map_with_a_reference_keyframe(points: int, seen_by: int = 3):
    """A map of ``seen_by`` keyframes that all observe the same ``points`` points; the last is the reference."""
    from scene.rigid import Rigid3d
    from slam.map import SlamMap

    slam_map = SlamMap()
    n = points
    for k in range(seen_by):
        slam_map.add_keyframe(Rigid3d(), k, float(k), np.zeros((n, 2)), np.zeros((n, 2)),
                              np.zeros(n, np.int64), np.zeros((n, 32), np.uint8), np.zeros((n, 3), np.uint8))
    ids = slam_map.add_points(np.ones((n, 3)), np.zeros((n, 32), np.uint8), np.zeros((n, 3), np.uint8), 0, 10.0)
    for k in range(seen_by):
        slam_map.add_observations(k, np.arange(n), ids)
    return slam_map, seen_by - 1


def test_keyframe_rule_asks_on_a_thin_map_before_tracking_fails():
    from types import SimpleNamespace

    from slam.mapping import MappingOptions, keyframe_needed, keyframe_urgent

    options = MappingOptions()
    # 42 points against a reference holding 44: ORB-SLAM's 0.9 ratio says no, yet tracking fails at 30.
    slam_map, ref = _map_with_a_reference_keyframe(44)
    thin = SimpleNamespace(num_tracked=42)
    assert 42 >= options.keyframe_tracked_ratio * 44
    assert keyframe_needed(slam_map, thin, ref, 1, options)
    assert keyframe_urgent(slam_map, thin, ref, options)  # Play waits for mapping rather than go on
    # A well-tracked frame on a rich map is left to the ratio rule.
    slam_map, ref = _map_with_a_reference_keyframe(300)
    assert not keyframe_needed(slam_map, SimpleNamespace(num_tracked=280), ref, 1, options)
    assert keyframe_needed(slam_map, SimpleNamespace(num_tracked=260), ref, 1, options)
    assert not keyframe_urgent(slam_map, SimpleNamespace(num_tracked=200), ref, options)
    assert keyframe_urgent(slam_map, SimpleNamespace(num_tracked=140), ref, options)
    # Under keyframe_min_tracked there is nothing left to make a keyframe of.
    assert not keyframe_needed(slam_map, SimpleNamespace(num_tracked=10), ref, 1, options)


def _epipolar_match_by_scanning(normalized_k, normalized_j, descriptors_k, descriptors_j, sigma_j, j_from_k,
                                focal, max_distance, ratio):
    """What slam.mapping.epipolar_match must return, by scanning every pair (its definition)."""
    from geometry.matching import hamming_distance_matrix

    t = j_from_k.translation
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ j_from_k.rotation
    lines = np.column_stack((normalized_k, np.ones(len(normalized_k)))) @ essential.T
    num = lines @ np.column_stack((normalized_j, np.ones(len(normalized_j)))).T
    in_band = num ** 2 / (lines[:, :1] ** 2 + lines[:, 1:2] ** 2) * focal ** 2 < 3.841 * np.asarray(sigma_j) ** 2
    dist = np.where(in_band, hamming_distance_matrix(descriptors_k, descriptors_j), 1 << 20)
    pairs = []
    for a in range(len(dist)):
        order = np.argsort(dist[a], kind="stable")
        d1, d2 = dist[a, order[0]], dist[a, order[1]]
        b = order[0]
        if d1 <= max_distance and (d2 >= 1 << 20 or d1 < ratio * d2) and np.argmin(dist[:, b]) == a:
            pairs.append((a, b))
    return np.array(pairs, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("seed", range(4))
def test_the_epipolar_search_finds_exactly_the_matches_a_scan_of_every_pair_finds(seed):
    """Two views of one random scene with near-duplicate descriptors, so bands hold many candidates and ties."""
    from scene.rigid import Rigid3d
    from slam.mapping import epipolar_match

    rng = np.random.default_rng(seed)
    points = np.column_stack((rng.uniform(-3, 3, 900), rng.uniform(-1, 1, 900), rng.uniform(2, 12, 900)))
    angle = np.radians(rng.uniform(-10, 10))
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    j_from_k = Rigid3d.from_rotation(rotation, rng.normal(0, 0.3, 3))
    seen_j = j_from_k.apply(points)
    noise = rng.normal(0, 0.002, (2, 900, 2))
    normalized_k = points[:, :2] / points[:, 2:] + noise[0]
    normalized_j = seen_j[:, :2] / seen_j[:, 2:] + noise[1]
    order_j = rng.permutation(900)[:700]           # j misses some of k's points and lists them in its own order
    base = rng.integers(0, 256, (900, 32), dtype=np.uint8)
    flip = rng.integers(0, 256, (2, 900, 32), dtype=np.uint8) & rng.choice([0, 1, 3], (2, 900, 32)).astype(np.uint8)
    descriptors_k, descriptors_j = base ^ flip[0], (base ^ flip[1])[order_j]
    descriptors_j[::7] = descriptors_j[1::7][: len(descriptors_j[::7])]  # duplicates: ties in distance
    sigma_j = 1.2 ** rng.integers(0, 8, 700)
    args = (normalized_k, normalized_j[order_j], descriptors_k, descriptors_j, sigma_j, j_from_k, 525.0, 50, 0.8)
    found, expected = epipolar_match(*args), _epipolar_match_by_scanning(*args)
    assert len(expected) > 100
    assert np.array_equal(found, expected)


def test_to_scene_writes_consistent_images_points_tracks_and_trajectory():
    system, results = slam_run("forward_walk")
    scene = Scene()
    info = system.to_scene(scene)
    m = system.map
    assert info["images"] == m.num_keyframes == len(scene.images)
    assert all(im.registered for im in scene.images.values())
    points = scene.points
    points.validate()
    assert len(points) == info["points"] > 0
    index = points.index_of()
    for pid, i in index.items():
        image_ids, kp_idx = points.track(i)
        assert len(image_ids) >= 2
        for image_id, kp in zip(image_ids, kp_idx):
            assert scene.images[int(image_id)].point3d_ids[kp] == pid
    for im in scene.images.values():
        ids = im.point3d_ids[im.point3d_ids >= 0]
        assert all(int(p) in index for p in ids)
    # Observations are kept up to the pose gate times their pyramid level's scale (ORB-SLAM's per-level sigma).
    assert np.all(np.isfinite(points.xyz)) and np.median(points.error) < 1.0
    assert points.error.max() <= POSE_GATE_PX * 1.2 ** 7
    traj = scene.trajectories["slam"]
    tracked = [r for r in results if r.cam_from_world is not None]
    assert len(traj) == len(tracked) + 1  # + the initialisation's reference frame
    assert np.all(np.diff(traj.timestamps) > 0)
    assert set(np.round(traj.timestamps, 9)) >= {round(r.timestamp, 9) for r in tracked}
    # A keyframe's exported pose is its trajectory pose.
    kf0 = scene.images[info["first_image_id"]]
    i = int(np.flatnonzero(np.isclose(traj.timestamps, m.kf_timestamp[0]))[0])
    assert np.allclose(traj.pose(i).inverse().matrix(), kf0.cam_from_world.matrix(), atol=1e-9)
    # Appending a second export keeps the first one's points and ids.
    before = len(scene.points)
    system.to_scene(scene)
    scene.points.validate()
    assert len(scene.points) == 2 * before


def test_result_crosses_a_process_boundary_and_writes_the_same_scene():
    """The SLAM tab runs SLAM in another process and sends ``System.result()`` as a message: writing the
    decoded result must give exactly what ``to_scene`` writes from the live system."""
    from scene.messages import decode, encode
    from slam.export import SlamResult, write_result

    system, _ = slam_run("forward_walk")
    direct, relayed = Scene(), Scene()
    info = system.to_scene(direct)
    kind, fields = decode(encode("results", system.result().to_fields()))
    assert kind == "results"
    assert write_result(SlamResult.from_fields(fields), relayed) == info
    assert direct.images.keys() == relayed.images.keys() and len(direct.images) == info["images"] > 0
    for image_id, a in direct.images.items():
        b = relayed.images[image_id]
        assert (a.name, a.camera_id, a.source) == (b.name, b.camera_id, b.source)
        assert np.array_equal(a.cam_from_world.matrix(), b.cam_from_world.matrix())
        assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.point3d_ids, b.point3d_ids)
    for name in ("ids", "xyz", "rgb", "error", "track_ptr", "track_image_ids", "track_kp_idx"):
        assert np.array_equal(getattr(direct.points, name), getattr(relayed.points, name)), name
    a, b = direct.trajectories["slam"], relayed.trajectories["slam"]
    for name in ("timestamps", "world_from_cam_quat_wxyz", "world_from_cam_translation"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_result_moved_into_the_ground_truths_frame_keeps_every_reprojection():
    from geometry.camera_models import project
    from geometry.metrics import Alignment, ate, sim3_ate
    from slam.export import result_trajectory, transformed, write_result

    system, _ = slam_run("forward_walk")
    result, gt = system.result(), ground_truth("forward_walk")
    errors = sim3_ate(result_trajectory(result), gt)
    a = errors.alignment
    assert a.scale > 0 and errors.rmse < 0.005 * gt.path_length()
    moved = transformed(result, a)
    # The trajectory now lies on the ground truth without any further alignment ...
    assert ate(result_trajectory(moved), gt, align="none").rmse == pytest.approx(errors.rmse, rel=1e-6)
    # ... and every map point projects where it did, in every keyframe.
    before, after = Scene(), Scene()
    write_result(result, before)
    write_result(moved, after)
    assert np.allclose(after.points.xyz, a.apply_positions(before.points.xyz))
    camera = system.camera
    for image_id, im in before.images.items():
        moved_im = after.images[image_id]
        seen = im.point3d_ids >= 0
        index = before.points.index_of()
        rows = [index[int(p)] for p in im.point3d_ids[seen]]
        uv_before = project(camera, im.cam_from_world.apply(before.points.xyz[rows]))
        uv_after = project(camera, moved_im.cam_from_world.apply(after.points.xyz[rows]))
        assert np.allclose(uv_before, uv_after, atol=1e-6)
    # A frame without a pose stays without one; a result that cannot be aligned says so.
    assert np.array_equal(np.isnan(moved.frame_cam_from_world), np.isnan(result.frame_cam_from_world))
    far_away = Trajectory(gt.timestamps + 1000.0, gt.world_from_cam_quat_wxyz, gt.world_from_cam_translation)
    assert sim3_ate(result_trajectory(result), far_away) is None
    with pytest.raises(ValueError):
        transformed(result, Alignment("sim3", a.rotation, a.translation, 0.0))


def test_the_slam_tabs_relay_lands_the_result_in_the_ground_truths_frame_unless_unticked():
    pytest.importorskip("PyQt6")
    from app.slam_worker import SlamWorker
    from geometry.metrics import ate

    system, _ = slam_run("forward_walk")
    gt = ground_truth("forward_walk")
    for align in (True, False):
        scene = Scene()
        worker = SlamWorker("unused", system.camera, scene, gt)  # never started: only its result writer runs
        worker.align_to_reference = align
        worker._write_results(system.result(), None)
        unaligned = ate(scene.trajectories["slam"], gt, align="none").rmse
        if align:
            assert unaligned < 0.005 * gt.path_length()
        else:  # the SLAM frame: the first camera at the origin, another scale
            assert unaligned > 0.05 * gt.path_length()
            expected = Scene()
            system.to_scene(expected)
            assert np.array_equal(scene.points.xyz, expected.points.xyz)


def walk_with_frame_refs(n: int):
    """(finished system, FrameRefs) of SLAM over the walk's first n frames, each frame from its own file."""
    from scene.model import FrameRef

    timestamps, _, frames = rendered("forward_walk")
    refs = [FrameRef(f"/frames/{i:04d}.png", None, float(timestamps[i])) for i in range(n)]
    system = System(demo_camera())
    for i in range(n):
        system.step(frames[i], timestamps[i], ref=refs[i])
    system.finish()
    return system, refs


def test_without_ground_truth_the_result_lands_in_the_frame_of_the_scenes_posed_images():
    """A scene opened from a model (transforms.json, COLMAP) holds the frames already registered, in that model's
    frame: the SLAM keyframes land beside those images, not in the SLAM frame; the model's images stay as they are."""
    pytest.importorskip("PyQt6")
    from app.slam_worker import SlamWorker
    from geometry.lie import rotation_to_quat_wxyz
    from geometry.metrics import Alignment
    from scene.model import Image
    from scene.rigid import Rigid3d

    _, poses, _ = rendered("forward_walk")
    n = 40
    system, refs = walk_with_frame_refs(n)
    angle = np.radians(40.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    model_from_world = Alignment("sim3", turn, np.array([3.0, -1.0, 2.0]), 2.5)  # the model's own frame
    path = np.linalg.norm(np.diff([p.translation for p in poses[:n]], axis=0), axis=1).sum() * 2.5
    for align in (True, False):
        scene = Scene()
        scene.add_camera(system.camera)
        model = {}
        for i in range(n):
            world_from_cam = Rigid3d(rotation_to_quat_wxyz(turn @ poses[i].rotation),
                                     model_from_world.apply_positions(poses[i].translation[None])[0])
            model[i + 1] = world_from_cam.inverse()
            scene.add_images([Image(i + 1, f"{i:04d}.png", system.camera.camera_id, model[i + 1], source=refs[i])])
        worker = SlamWorker("unused", system.camera, scene, None)  # no ground truth; never started
        worker.align_to_reference = align
        worker._write_results(system.result(), None)
        assert all(scene.images[i].cam_from_world == model[i] for i in model)  # nothing of the model is lost
        landed = [im for im in scene.images.values() if im.image_id > n]
        assert len(landed) >= 5 and all(im.registered for im in landed)
        frame_of = {ref.path: i + 1 for i, ref in enumerate(refs)}
        errors = [np.linalg.norm(im.cam_from_world.center() - model[frame_of[im.source.path]].center())
                  for im in landed]
        if align:
            assert max(errors) < 0.01 * path
        else:  # the SLAM frame
            assert max(errors) > 0.1 * path


def test_a_second_export_gives_back_the_bare_frames_the_first_one_took():
    """The tab writes every run it finishes, and undoes its last write first. Keyframes take the ids of the frames
    the scene holds bare (opened, not registered): the undo gives those back as they were, removes nothing else,
    and the frame list keeps its ids. Before, it removed a range of ids from the first keyframe's on."""
    pytest.importorskip("PyQt6")
    from app.slam_worker import SlamWorker
    from scene.model import FrameRef, Image

    n = 30
    system, refs = walk_with_frame_refs(n)
    result = system.result()
    camera_id = system.camera.camera_id
    scene = Scene()
    scene.add_camera(system.camera)
    # The frames at odd ids, another folder's images at the even ids between them.
    bare = {2 * i + 1: Image(2 * i + 1, f"{i:04d}.png", camera_id, None, source=refs[i]) for i in range(n)}
    other = {2 * i + 2: Image(2 * i + 2, f"other{i:04d}.png", camera_id, None,
                              source=FrameRef(f"/other/{i:04d}.png", None, 0.0)) for i in range(n)}
    scene.add_images([*bare.values(), *other.values()])
    worker = SlamWorker("unused", system.camera, scene, None)  # never started: only its result writer runs
    worker._write_results(result, None)
    registered = {i for i, im in scene.images.items() if im.registered}
    assert len(registered) == len(result.kf_names) and registered <= set(bare)
    points = len(scene.points)
    assert points > 100
    worker._write_results(result, None)
    assert sorted(scene.images) == sorted([*bare, *other])
    assert all(scene.images[i] is other[i] for i in other)
    assert all(scene.images[i] is bare[i] for i in bare if i not in registered)
    assert {i for i, im in scene.images.items() if im.registered} == registered
    assert len(scene.points) == points  # the first run's points gave way to the second's


def test_a_run_that_writes_nothing_leaves_nothing_of_the_run_before():
    """A second run that never initialises (black frames) writes no trajectory and no cloud: the first run's go
    with its images and points, and what the scene held before the first run comes back."""
    pytest.importorskip("PyQt6")
    from app.slam_worker import SlamWorker
    from scene.model import PointCloud
    from slam.export import CLOUD_NAME, TRAJECTORY_NAME

    system, _ = slam_run("forward_walk")
    scene = Scene()
    earlier = PointCloud(np.zeros((3, 3)), np.zeros((3, 3), np.uint8))
    scene.set_cloud(CLOUD_NAME, earlier)  # a cloud of that name from an earlier session's run, saved with the project
    worker = SlamWorker("unused", system.camera, scene, None)  # never started: only its result writer runs
    worker._write_results(system.result(), None)
    assert TRAJECTORY_NAME in scene.trajectories and scene.clouds[CLOUD_NAME] is not earlier and len(scene.images)
    blind = System(demo_camera())
    for i in range(5):
        blind.step(np.zeros((480, 640, 3), np.uint8), i / 30.0)
    worker._write_results(blind.result(), None)
    assert TRAJECTORY_NAME not in scene.trajectories and scene.clouds[CLOUD_NAME] is earlier
    assert len(scene.images) == 0 and len(scene.points) == 0


def test_reset_clears_everything():
    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    for img, ts in zip(frames[:25], timestamps[:25]):
        system.step(img, ts)
    assert system.map.num_keyframes > 0
    system.reset()
    assert system.state == TrackingState.INIT and system.initialized_at_frame is None
    assert system.map.num_keyframes == 0 and system.map.num_points_total == 0
    assert system.frame_poses() == []
    scene = Scene()
    system.to_scene(scene)
    assert len(scene.images) == 0 and len(scene.points) == 0 and "slam" not in scene.trajectories
    r = system.step(frames[0], 0.0)
    assert r.frame_index == 0 and r.state == TrackingState.INIT


# --- bad input ----------------------------------------------------------------------------------------

def test_blank_and_featureless_frames_do_not_crash():
    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    blank = np.zeros((480, 640, 3), np.uint8)
    gray = np.full((480, 640), 128, np.uint8)
    r = system.step(blank, 0.0)
    assert r.state == TrackingState.INIT and r.cam_from_world is None and "features" in r.reason
    assert system.step(gray, 0.01).state == TrackingState.INIT
    r = system.step(np.full((480, 640), np.nan), 0.02)
    assert r.state == TrackingState.INIT and r.reason
    r = system.step(np.zeros((240, 320, 3), np.uint8), 0.03)
    assert r.state == TrackingState.INIT and "320x240" in r.reason
    # Initialise, then a blank frame: LOST with a reason, the map is kept, and tracking comes back.
    for img, ts in zip(frames[:30], timestamps[:30]):
        r = system.step(img, ts + 1.0)
    assert r.state == TrackingState.OK
    keyframes = system.map.num_keyframes
    r = system.step(blank, 2.0)
    assert r.state == TrackingState.LOST and r.cam_from_world is None and r.reason
    assert system.map.num_keyframes == keyframes
    r = system.step(gray, 2.01)
    assert r.state == TrackingState.LOST
    r = system.step(frames[30], 2.02)
    assert r.state == TrackingState.RELOCALIZED and r.cam_from_world is not None
    r = system.step(frames[31], 2.03)
    assert r.state == TrackingState.OK


def test_run_reports_progress_and_stops_when_asked():
    from scene.io.sources_base import Frame as SourceFrame
    from scene.model import FrameRef
    from scene.progress import RecordingProgress

    timestamps, _, frames = rendered("forward_walk")

    class Source:  # the FrameSource interface run() uses: len() and iteration
        def __len__(self):
            return 40

        def __iter__(self):
            for i in range(40):
                yield SourceFrame(i, float(timestamps[i]), f"f{i:03d}", frames[i], FrameRef("mem", i, float(timestamps[i])))

    system = System(demo_camera())
    progress = RecordingProgress(stop_after=30)
    summary = system.run(Source(), progress)
    assert summary.stopped and summary.frames == 30 and len(progress.reports) == 30
    assert progress.reports[-1][:3] == ("slam", 30, 40)
    assert summary.initialized_at_frame is not None and summary.tracked == 30 - summary.initialized_at_frame
    scene = Scene()
    system.to_scene(scene)
    assert all(im.source is not None and im.source.path == "mem" for im in scene.images.values())


def test_to_scene_registers_the_opened_frames_instead_of_duplicating_them():
    from scene.model import FrameRef, Image

    timestamps, _, frames = rendered("forward_walk")
    camera = demo_camera()
    scene = Scene()
    scene.add_camera(camera)
    refs = [FrameRef(f"/frames/{i:06d}.png", None, float(ts)) for i, ts in enumerate(timestamps)]
    scene.add_images([Image(i + 1, f"{i:06d}.png", camera.camera_id, source=ref) for i, ref in enumerate(refs)])
    system = System(camera)
    for img, ts, ref in zip(frames[:40], timestamps[:40], refs[:40]):
        system.step(img, ts, ref=ref)
    info = system.to_scene(scene)
    assert len(scene.images) == len(frames)  # no duplicates
    registered = scene.registered_images()
    assert len(registered) == system.map.num_keyframes == info["images"]
    assert sorted(im.image_id for im in registered) == sorted(info["keyframe_image_ids"])
    scene.points.validate()
    index = scene.points.index_of()
    for pid, i in index.items():
        image_ids, kp_idx = scene.points.track(i)
        for image_id, kp in zip(image_ids, kp_idx):
            assert scene.images[int(image_id)].point3d_ids[kp] == pid


# --- real data: KITTI 07, frames 0-79 (forward motion, repeated facades) --------------------------------

KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti07_f000_079"


@functools.lru_cache(maxsize=None)
def kitti_run():
    from scene.io.calibration import resolve_intrinsics
    from scene.io.sources import open_source
    from scene.io.trajectory_io import read_trajectory

    source = open_source(KITTI)
    system = System(resolve_intrinsics(source))
    results = [system.step(f.image, f.timestamp) for f in source]
    return system, results, read_trajectory(KITTI / "poses" / "07.txt")


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"KITTI excerpt not found at {KITTI}")
def test_kitti_initializes_within_30_frames_and_tracks_every_frame_after():
    system, results, _ = kitti_run()
    assert system.initialized_at_frame is not None and system.initialized_at_frame < 30
    after = results[system.initialized_at_frame:]
    assert [r.frame_index for r in after if r.cam_from_world is None] == []


@pytest.mark.skipif(not KITTI.is_dir(), reason=f"KITTI excerpt not found at {KITTI}")
def test_kitti_ate_within_one_percent_of_path():
    system, results, gt = kitti_run()
    result = evaluate(estimated_trajectory(system), gt)
    assert result["ate_percent_of_path"] <= 1.0, result
    assert result["matched_poses"] >= len(results) - system.initialized_at_frame
