"""Loop closing (slam/loop_closing.py) and place recognition (slam/place_recognition.py).

The returning orbit of the benchmark (120 frames at 640 x 480, one full turn, the last pose equal to the
first) is rendered in memory once per module and run twice: with loop closure and with it off
(``--no-loop-closure``). Issue 3's target: the loop closes, at the start of the orbit, and the ATE drops by
at least 30 %.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from assets import camera_path, demo_camera, render_frame
from geometry.evaluate import evaluate
from scene.model import Trajectory
from slam.loop_closing import LoopOptions, essential_edges
from slam.map import SlamMap
from scene.rigid import Rigid3d
from slam.place_recognition import BowOptions, KeyframeDatabase, PlaceRecognizer, Vocabulary, bow_score
from slam.system import SlamOptions, System, TrackingState

FRAMES, FPS = 120, 30.0


@functools.lru_cache(maxsize=None)
def orbit():
    from assets.room import build_room

    timestamps, poses = camera_path("orbit", FRAMES, FPS)
    camera = demo_camera()
    room = build_room(0)
    return timestamps, poses, [render_frame(p, camera, room)[0] for p in poses]


@functools.lru_cache(maxsize=None)
def run(loop_closure: bool):
    timestamps, _, frames = orbit()
    system = System(demo_camera(), SlamOptions(loop=LoopOptions(enabled=loop_closure)))
    results = [system.step(img, ts) for img, ts in zip(frames, timestamps)]
    return system, results


def ate_percent(system: System) -> float:
    timestamps, poses, _ = orbit()
    system.finish()
    est = [(ts, p) for ts, p in system.frame_poses() if p is not None]
    estimate = Trajectory.from_poses([ts for ts, _ in est], [p.inverse() for _, p in est])
    return evaluate(estimate, Trajectory.from_poses(timestamps, poses))["ate_percent_of_path"]


# --- the returning orbit ---------------------------------------------------------------------------------

def test_loop_closes_at_the_start_of_the_orbit():
    system, results = run(True)
    assert system.loop_closures >= 1 and len(system.loop_events) == system.loop_closures
    event = system.loop_events[0]
    # The current keyframe is in the last tenth of the turn, the loop keyframe in its first tenth.
    assert event.current_frame >= 0.9 * FRAMES and event.loop_frame <= 0.1 * FRAMES
    assert event.sim3_inliers >= 20 and event.loop_matches >= 40 and event.fused_points > 0
    assert abs(np.log(event.scale)) < 0.2       # a scale correction, not a wild one
    assert event.pose_graph_cost[1] < event.pose_graph_cost[0]
    # StepResult flags the frame where it happened, and counts.
    closed = [r.frame_index for r in results if r.loop_closed]
    assert closed == [e.current_frame for e in system.loop_events]
    assert results[-1].loop_closures == system.loop_closures
    assert all(r.loop_closures == 0 for r in results if r.frame_index < closed[0])
    assert results[closed[0]].mapping["loop"]["loop_kf"] == event.loop_kf


def test_loop_closure_lowers_the_orbit_ate_by_30_percent():
    with_loop, without = ate_percent(run(True)[0]), ate_percent(run(False)[0])
    assert run(False)[0].loop_closures == 0
    assert with_loop <= 0.7 * without, (with_loop, without)


def test_tracking_continues_on_the_corrected_map():
    system, results = run(True)
    closed = next(r.frame_index for r in results if r.loop_closed)
    after = results[closed:]
    assert all(r.state == TrackingState.OK and r.cam_from_world is not None for r in after)
    assert all(r.num_tracked >= 50 for r in after)
    # The map stays consistent after fusion: observations mirror kf_point_ids, alive points only, once per keyframe.
    m = system.map
    alive_obs = np.flatnonzero(m.obs_alive)
    assert all(m.kf_point_ids[m.obs_kf[e]][m.obs_kp[e]] == m.obs_pt[e] for e in alive_obs)
    assert sum(int(np.count_nonzero(ids >= 0)) for ids in m.kf_point_ids) == len(alive_obs)
    assert np.all(m.alive[m.obs_pt[alive_obs]])
    pairs = m.obs_kf[alive_obs] * m.num_points_total + m.obs_pt[alive_obs]
    assert len(np.unique(pairs)) == len(pairs)
    # The two ends of the loop now share points: the last keyframe sees the first keyframe's points.
    event = system.loop_events[0]
    assert m.covisibility_matrix()[event.current_kf, event.loop_kf] >= 40
    # The path closes: the ground truth's last pose is its first; the estimated gap between them, relative to
    # the orbit's diameter, shrinks with loop closure.
    assert closing_gap(system) < 0.5 * closing_gap(run(False)[0])


def closing_gap(system: System) -> float:
    centres = np.array([p.center() for _, p in system.frame_poses() if p is not None])
    poses = system.frame_poses()
    diameter = np.linalg.norm(centres[:, None] - centres[None], axis=2).max()
    return float(np.linalg.norm(poses[-1][1].center() - poses[0][1].center()) / diameter)


def test_no_loop_closure_option_skips_place_recognition():
    system, results = run(False)
    assert system.loop_closures == 0 and not system.recognizer.ready and system.loop_events == []
    assert not any(r.loop_closed for r in results)
    assert all("loop" not in r.timings_ms for r in results)


def test_cli_statistics_count_the_loops():
    from app.slam_run import slam_statistics
    from slam.system import RunSummary

    system, _ = run(True)
    summary = RunSummary(FRAMES, FRAMES, system.initialized_at_frame, system.map.num_keyframes, system.map.num_points,
                         [1.0], 1.0, False)
    assert slam_statistics(summary, system)["loop_closures"] == system.loop_closures >= 1
    assert slam_statistics(summary, run(False)[0])["loop_closures"] == 0


# --- place recognition ------------------------------------------------------------------------------

def _keyframe_descriptors(system: System) -> list:
    return [system.map.kf_descriptors[k] for k in range(system.map.num_keyframes)]


def test_vocabulary_is_deterministic_and_vectors_are_normalised():
    descriptors = _keyframe_descriptors(run(False)[0])
    options = BowOptions()
    a, b = Vocabulary.train(descriptors, options), Vocabulary.train(descriptors, options)
    assert np.array_equal(a.centres, b.centres) and np.array_equal(a.idf, b.idf)
    assert 1000 < a.num_words <= options.branching ** options.depth
    v = a.transform(descriptors[3])
    assert np.all(np.diff(v.words) > 0) and np.isclose(v.weights.sum(), 1.0) and np.all(v.weights > 0)
    assert bow_score(v, v) == pytest.approx(1.0)
    assert a.transform(np.zeros((0, 32), np.uint8)).words.size == 0


def test_places_score_higher_than_other_places():
    """The orbit's last keyframe is where the first one was: it scores higher with it than with the keyframes
    half a turn away."""
    system = run(False)[0]
    descriptors = _keyframe_descriptors(system)
    vocabulary = Vocabulary.train(descriptors)
    vectors = [vocabulary.transform(d) for d in descriptors]
    frames = system.map.kf_frame_index
    last = len(vectors) - 1
    opposite = [k for k in range(len(vectors)) if 0.35 * FRAMES <= frames[k] <= 0.65 * FRAMES]
    assert opposite
    start = bow_score(vectors[last], vectors[0])
    assert start > 1.3 * max(bow_score(vectors[last], vectors[k]) for k in opposite)


def test_database_inverted_index_and_retraining():
    descriptors = _keyframe_descriptors(run(False)[0])
    recognizer = PlaceRecognizer(BowOptions(min_training_keyframes=4, min_training_descriptors=100))
    trained = [recognizer.add_keyframe(k, d) for k, d in enumerate(descriptors[:10])]
    # Trains at 4 keyframes, then again when the map doubled (8); vectors exist for every keyframe.
    assert [i for i, t in enumerate(trained) if t] == [3, 7]
    assert all(recognizer.vector(k) is not None for k in range(10))
    kfs, common = recognizer.database.common_words(recognizer.vector(9))
    assert 9 in kfs and common[list(kfs).index(9)] == len(recognizer.vector(9))
    database = KeyframeDatabase(recognizer.vocabulary.num_words)
    assert database.common_words(recognizer.vector(9))[0].size == 0
    assert PlaceRecognizer().vector(0) is None and not PlaceRecognizer().ready


# --- map fusion and the essential graph ------------------------------------------------------------

def test_replace_point_moves_observations_and_drops_duplicates():
    m = SlamMap()
    for _ in range(3):
        m.add_keyframe(Rigid3d(), 0, 0.0, np.zeros((4, 2)),
                       np.zeros((4, 2)), np.zeros(4), np.zeros((4, 32), np.uint8), np.zeros((4, 3), np.uint8))
    p = m.add_points(np.eye(3), np.zeros((3, 32), np.uint8), np.zeros((3, 3), np.uint8), 0, 1.0)
    m.add_observations(0, [0, 1], [p[0], p[1]])    # keyframe 0 sees both copies
    m.add_observations(1, [0], [p[0]])
    m.add_observations(2, [2], [p[1]])
    m.replace_point(p[0], p[1])
    assert not m.alive[p[0]] and m.alive[p[1]]
    assert m.kf_point_ids[0].tolist() == [-1, p[1], -1, -1]          # the duplicate observation is dropped
    assert m.kf_point_ids[1].tolist() == [p[1], -1, -1, -1]          # the other one moved
    assert m.observation_counts()[p[1]] == 3 and m.observation_counts()[p[0]] == 0
    assert m.n_visible[p[1]] == 2 and m.n_found[p[1]] == 2
    cov = m.covisibility_matrix()
    assert cov.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 1]]


def test_essential_graph_edges():
    cov = np.array([[50, 120, 10, 0],
                    [120, 60, 30, 0],
                    [10, 30, 40, 0],
                    [0, 0, 0, 20]])
    edge_i, edge_j = essential_edges(cov, 100)
    # Spanning tree: 1 -> 0, 2 -> 1 (most shared), 3 -> 2 (shares nothing: the previous keyframe).
    assert list(zip(edge_i.tolist(), edge_j.tolist())) == [(1, 0), (2, 1), (3, 2)]
    edge_i, edge_j = essential_edges(cov, 10)
    assert (2, 0) in set(zip(edge_i.tolist(), edge_j.tolist()))
