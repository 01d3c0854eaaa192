"""Local mapping on its own thread (Play mode): the lock, the thread, and SLAM accuracy with it.

The runs feed frames as fast as the tracker takes them, so mapping is busy most of the time: keyframes are
inserted only while it is idle (monocular ORB-SLAM's rule) and the issue 3 targets must still hold.
"""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest

from assets import demo_camera
from geometry.evaluate import evaluate
from scene.progress import CallbackProgress
from slam.background_mapping import BackgroundMapper
from slam.map_lock import NO_LOCK, MapLock
from slam.system import KP_TRACKED, System, TrackingState
from tests.test_slam_core import MOVING, estimated_trajectory, ground_truth, rendered


# --- the lock ------------------------------------------------------------------------------------------

def test_tracking_gets_the_map_at_the_mappers_next_handover_point():
    lock, order = MapLock(), []
    holding = threading.Event()

    def mapper():
        with lock:
            holding.set()
            order.append("mapping: first half")
            deadline = time.monotonic() + 5.0
            while not lock._waiting and time.monotonic() < deadline:  # until tracking asks
                time.sleep(0.001)
            lock.yield_to_tracking()
            order.append("mapping: second half")

    thread = threading.Thread(target=mapper)
    thread.start()
    holding.wait(5.0)
    with lock.priority():
        order.append("tracking")
    thread.join(5.0)
    assert order == ["mapping: first half", "tracking", "mapping: second half"]


def test_released_section_lets_tracking_in_and_takes_the_lock_back():
    lock = MapLock()
    entered = threading.Event()

    def tracker():
        with lock.priority():
            entered.set()

    with lock:
        with lock.released():
            thread = threading.Thread(target=tracker)
            thread.start()
            assert entered.wait(5.0)
            thread.join(5.0)
        # Held again: another thread cannot take it.
        assert not lock._lock.acquire(blocking=False)
    assert lock._lock.acquire(blocking=False)
    lock._lock.release()


def test_no_lock_is_a_no_op():
    with NO_LOCK, NO_LOCK.priority(), NO_LOCK.released():
        NO_LOCK.yield_to_tracking()


# --- the thread ----------------------------------------------------------------------------------------

def test_mapper_runs_items_in_order_and_reports_idle():
    done, gate = [], threading.Event()

    def process(item):
        gate.wait(5.0)
        done.append(item)

    mapper = BackgroundMapper(process)
    for i in range(5):
        mapper.submit(i)
    assert not mapper.idle
    gate.set()
    mapper.wait_idle()
    assert mapper.idle and done == [0, 1, 2, 3, 4]
    mapper.close()


def test_a_failure_on_the_mapping_thread_is_raised_in_the_caller():
    def process(item):
        raise ValueError(f"bad keyframe {item}")

    mapper = BackgroundMapper(process)
    mapper.submit(7)
    with pytest.raises(RuntimeError, match="bad keyframe 7"):
        mapper.wait_idle()
    mapper.close()  # the error was delivered once; closing is clean


def test_a_mapping_failure_is_raised_again_until_discarded_and_close_raises_one_never_raised():
    done = []

    def process(item):
        if item == 1:
            raise ValueError("bad keyframe 1")
        done.append(item)

    mapper = BackgroundMapper(process)
    mapper.submit(1)
    with pytest.raises(RuntimeError, match="bad keyframe 1"):
        mapper.wait_idle()
    # Keyframe 1 was left half mapped: nothing may be built on it.
    for call in (mapper.raise_failure, mapper.wait_idle, lambda: mapper.submit(2)):
        with pytest.raises(RuntimeError, match="bad keyframe 1"):
            call()
    mapper.discard_failure()
    mapper.raise_failure()
    mapper.submit(3)
    mapper.wait_idle()
    assert done == [3]
    mapper.close()

    unseen = BackgroundMapper(process)
    unseen.submit(1)
    with pytest.raises(RuntimeError, match="bad keyframe 1"):
        unseen.close()


def test_the_ba_interrupt_flag_can_be_raised_and_cleared():
    flag = CallbackProgress()
    assert not flag.should_stop()
    flag.request_stop()
    assert flag.should_stop()
    flag.report("bundle_adjustment", 1, 10, "")
    flag.clear_stop()
    assert not flag.should_stop()


# --- SLAM with background mapping ----------------------------------------------------------------------

def _background_run(name: str, first_frames_sync: int = 0):
    timestamps, _, frames = rendered(name)
    system = System(demo_camera())
    results = []
    for i, (img, ts) in enumerate(zip(frames, timestamps)):
        system.set_background_mapping(i >= first_frames_sync)
        results.append(system.step(img, ts))
    system.wait_for_mapping()
    return system, results


@pytest.fixture(scope="module")
def background_runs():
    runs = {name: _background_run(name) for name in MOVING}
    yield runs
    for system, _ in runs.values():
        system.close()


@pytest.mark.parametrize("name", MOVING)
def test_background_mapping_meets_the_tracking_and_accuracy_targets(background_runs, name):
    system, results = background_runs[name]
    assert system.initialized_at_frame is not None and system.initialized_at_frame < 30
    after = results[system.initialized_at_frame:]
    assert [r.frame_index for r in after if r.cam_from_world is None] == []
    result = evaluate(estimated_trajectory(system), ground_truth(name))
    assert result["ate_percent_of_path"] <= 0.5, result


@pytest.mark.parametrize("name", MOVING)
def test_every_keyframe_is_mapped_once_on_the_thread(background_runs, name):
    system, results = background_runs[name]
    inserted = [r.frame_index for r in results if r.keyframe_inserted]
    # The two initial keyframes are mapped at initialisation; every later one by the thread, in order.
    mapped = [entry["keyframe"] for entry in system.mapping_log]
    assert mapped == list(range(2, system.map.num_keyframes))
    assert len(inserted) == system.map.num_keyframes - 1  # the initialising frame reports one insertion
    assert all("triangulated" in entry and "ba_ms" in entry for entry in system.mapping_log)


def test_the_returning_orbit_closes_its_loop_on_the_thread(background_runs):
    system, _ = background_runs["orbit"]
    assert system.loop_closures >= 1
    assert any("loop" in entry for entry in system.mapping_log)


def test_switching_between_background_and_synchronous_mapping_keeps_tracking():
    system, results = _background_run("forward_walk", first_frames_sync=40)
    after = results[system.initialized_at_frame:]
    assert [r.frame_index for r in after if r.cam_from_world is None] == []
    system.set_background_mapping(False)
    assert not system.background_mapping
    # Synchronous again: the next step maps its keyframe before returning.
    assert evaluate(estimated_trajectory(system), ground_truth("forward_walk"))["ate_percent_of_path"] <= 0.5


def test_reset_and_to_scene_wait_for_the_mapping_thread():
    from scene.model import Scene

    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    for img, ts in zip(frames[:40], timestamps[:40]):
        system.step(img, ts)
    scene = Scene()
    summary = system.to_scene(scene)  # waits for queued keyframes, then exports a settled map
    assert summary["images"] == system.map.num_keyframes
    scene.points.validate()
    system.reset()
    assert system.state == TrackingState.INIT and system.map.num_keyframes == 0 and system.mapping_log == []
    assert system.background_mapping  # the mode survives a reset
    for img, ts in zip(frames[:20], timestamps[:20]):
        system.step(img, ts)
    system.close()
    assert not system.background_mapping and system.state == TrackingState.OK


def test_the_mapping_thread_trains_place_recognition_without_holding_the_map(monkeypatch):
    """(Re)training the vocabulary took up to 55 ms on KITTI with the map locked: tracking waited for it."""
    from slam.place_recognition import Vocabulary

    trainings, original = [], Vocabulary.train.__func__

    def train(cls, *args, **kwargs):
        free = system.map_lock._lock.acquire(timeout=2.0)  # tracking may hold it for a step, not for 2 s
        if free:
            system.map_lock._lock.release()
        trainings.append((threading.current_thread().name, free))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Vocabulary, "train", classmethod(train))
    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    for img, ts in zip(frames, timestamps):
        system.step(img, ts)
    system.wait_for_mapping()
    system.close()
    on_the_thread = [free for name, free in trainings if name == "slam-local-mapping"]
    assert len(on_the_thread) >= 2 and all(on_the_thread), trainings


def test_a_mapping_failure_surfaces_at_the_next_step(monkeypatch):
    import slam.system as system_module

    def broken(*args, **kwargs):
        raise FloatingPointError("BA diverged")

    monkeypatch.setattr(system_module, "process_keyframe", broken)
    system, _, _ = _play_until_mapping_fails()
    system.close()


def _play_until_mapping_fails():
    """(system, timestamps, frames): forward walk in Play until the mapping thread's failure is raised."""
    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    with pytest.raises(RuntimeError, match="local mapping failed: BA diverged"):
        for img, ts in zip(frames, timestamps):
            system.step(img, ts)
        system.wait_for_mapping()
    return system, timestamps, frames


def test_after_a_mapping_failure_no_frame_is_tracked_until_reset(monkeypatch):
    """The failed keyframe was left half mapped: every later step, a switch to Step mode and finish raise the
    same error, and nothing is recorded, until reset() starts again (it used to go on, and fail later on an
    inconsistent map with errors such as 'local mapping failed: 4')."""
    import slam.system as system_module

    mapped, failing = [], [True]

    def fails_on_the_third_keyframe(*args, **kwargs):
        mapped.append(args[2])
        if failing[0] and len(mapped) == 3:
            raise FloatingPointError("BA diverged")
        return original(*args, **kwargs)

    original = system_module.process_keyframe
    monkeypatch.setattr(system_module, "process_keyframe", fails_on_the_third_keyframe)
    system, timestamps, frames = _play_until_mapping_fails()
    recorded, keyframes = len(system.frame_timestamps), system.map.num_keyframes
    for call in (lambda: system.step(frames[-1], timestamps[-1]), system.finish,
                 lambda: system.set_background_mapping(False)):
        with pytest.raises(RuntimeError, match="local mapping failed: BA diverged"):
            call()
    assert len(system.frame_timestamps) == recorded and system.map.num_keyframes == keyframes
    assert system.background_mapping

    failing[0] = False
    system.reset()
    for img, ts in zip(frames[:40], timestamps[:40]):
        system.step(img, ts)
    system.finish()
    assert system.state == TrackingState.OK and system.map.num_keyframes >= 3
    assert [e["keyframe"] for e in system.mapping_log] == list(range(2, system.map.num_keyframes))
    system.close()


@functools.lru_cache(maxsize=None)
def _fast_orbit():
    """(timestamps, frames) of the orbit at 6 degrees a frame (the SLAM tab's test sequence)."""
    from assets import camera_path, render_frame
    from tests.test_slam_core import _room

    timestamps, poses = camera_path("orbit", 60, 30.0)
    return timestamps, [render_frame(p, demo_camera(), _room())[0] for p in poses]


def _slow_mapping(monkeypatch, seconds: float) -> None:
    mapped = System._map_keyframe_in_background

    def slow(self, item):
        time.sleep(seconds)
        mapped(self, item)

    monkeypatch.setattr(System, "_map_keyframe_in_background", slow)


def test_play_on_a_thin_map_makes_the_frame_a_keyframe_and_tracks_its_new_points(monkeypatch):
    """The orbit at 6 degrees a frame (the SLAM tab's test sequence) tracks only 40-100 points a frame: the
    frame after a refused keyframe, or a keyframe still being mapped, can find none at all. With mapping
    slowed to 100 ms a keyframe, a thin frame waits for mapping, becomes the keyframe, and the next frame
    waits for its new points; no frame is lost (before, 51 of the 60 were)."""
    timestamps, frames = _fast_orbit()
    _slow_mapping(monkeypatch, 0.1)
    system = System(demo_camera())
    system.set_background_mapping(True)
    results = [system.step(f, t, next_image=frames[i + 1] if i + 1 < len(frames) else None)
               for i, (f, t) in enumerate(zip(frames, timestamps))]
    system.finish()
    assert system.initialized_at_frame is not None and system.initialized_at_frame < 10
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    waited = [r for r in results if "mapping_wait" in r.timings_ms]
    assert waited and any(r.keyframe_inserted for r in waited)
    system.close()


def _reprojection_px(system, cam_from_world, point_ids, normalized) -> float:
    """RMS reprojection error (pixels) of the keypoints matched to alive points, at a pose."""
    m = system.map
    kp = np.flatnonzero(point_ids >= 0)
    kp = kp[m.alive[point_ids[kp]]]
    cam = m.xyz[point_ids[kp]] @ cam_from_world.rotation.T + cam_from_world.translation
    residual = cam[:, :2] / cam[:, 2:] - normalized[kp]
    return float(np.sqrt(np.mean(np.sum(residual ** 2, axis=1)))) * system.camera.params[0]


def test_a_deferred_keyframe_follows_its_reference_when_mapping_moves_the_map_during_the_wait(monkeypatch):
    """While a frame waits for mapping to become a keyframe, mapping may move the map (local BA; a loop
    correction moves all of it). Here every wait ends with the whole map turned and shifted, as a correction
    would: the keyframe must be inserted in the moved map, reprojecting its points exactly as the frame did
    before the move, not where the frame was tracked."""
    from scene.rigid import Rigid3d

    timestamps, frames = _fast_orbit()
    _slow_mapping(monkeypatch, 0.1)
    moved = Rigid3d.from_matrix(np.block([[np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                                           np.array([[0.5], [-0.3], [0.2]])], [np.zeros((1, 3)), np.ones((1, 1))]]))
    wait, submit = System._wait_for_mapper, System._submit_keyframe
    deferred, before, after = [], [], []

    def wait_then_move(self, timings):
        wait(self, timings)
        with self.map_lock:  # mapping is idle: the test moves the map as a correction would
            frame, i = self._last, self._last.index  # the waiting frame, as it follows its reference keyframe
            pose = self.frame_cam_from_ref[i] * self.map.kf_pose(self.frame_reference_kf[i])
            before.append(_reprojection_px(self, pose, frame.point_ids, frame.features.normalized_xy))
            world_from_moved = moved.inverse()
            for k in range(self.map.num_keyframes):
                self.map.set_kf_pose(k, self.map.kf_pose(k) * world_from_moved)
            self.map.xyz[:] = self.map.xyz @ moved.rotation.T + moved.translation
        deferred.append(self.map.num_keyframes)  # the index the deferred keyframe gets

    def checked_submit(self, k, plan):
        if deferred and deferred[-1] == k:
            after.append(_reprojection_px(self, self.map.kf_pose(k), self.map.kf_point_ids[k],
                                          self.map.kf_normalized[k]))
        submit(self, k, plan)

    monkeypatch.setattr(System, "_wait_for_mapper", wait_then_move)
    monkeypatch.setattr(System, "_submit_keyframe", checked_submit)
    system = System(demo_camera())
    system.set_background_mapping(True)
    results = [system.step(f, t) for f, t in zip(frames, timestamps)]
    system.finish()
    assert deferred and len(after) == len(before) == len(deferred)
    # A rigid move changes no reprojection; where the frame was tracked, it would be metres off.
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    system.close()


def test_a_deferred_keyframes_result_drops_the_matches_mapping_culled_during_the_wait(monkeypatch):
    """Mapping may cull points the waiting frame matched: neither its keyframe nor its StepResult (drawn
    in the tab) may still hold them."""
    timestamps, frames = _fast_orbit()
    _slow_mapping(monkeypatch, 0.1)
    wait = System._wait_for_mapper
    culled = {}

    def wait_then_cull(self, timings):
        wait(self, timings)
        with self.map_lock:  # mapping is idle: the test culls a few of the waiting frame's points, as it could
            ids = self._last.point_ids
            culled[self._last.index] = ids[ids >= 0][:5].copy()
            self.map.remove_points(culled[self._last.index])

    monkeypatch.setattr(System, "_wait_for_mapper", wait_then_cull)
    system = System(demo_camera())
    system.set_background_mapping(True)
    results = [system.step(f, t) for f, t in zip(frames, timestamps)]
    system.finish()
    assert culled and all(len(ids) == 5 for ids in culled.values())
    for r in results:
        assert np.array_equal(r.keypoint_status == KP_TRACKED, r.point_ids >= 0)
        assert r.num_tracked == np.count_nonzero(r.point_ids >= 0)
        assert not np.isin(r.point_ids, culled.get(r.frame_index, [])).any()
        if r.frame_index in culled:
            k = int(np.flatnonzero(system.map.kf_frame_index == r.frame_index)[0])
            assert not np.isin(system.map.kf_point_ids[k], culled[r.frame_index]).any()
    system.close()


def test_play_waits_for_a_slow_mapper_rather_than_lose_the_map(monkeypatch):
    """Frames fed faster than mapping takes keyframes (here mapping is slowed to 150 ms a keyframe): when the
    map slips out of view, tracking waits for mapping instead of tracking on until it is lost (without the
    wait, this run loses 130 of 150 frames)."""
    timestamps, _, frames = rendered("orbit")
    _slow_mapping(monkeypatch, 0.15)
    system = System(demo_camera())
    system.set_background_mapping(True)
    results = [system.step(frames[i], timestamps[i]) for i in range(100)]
    system.finish()
    assert system.initialized_at_frame is not None
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    assert sum("mapping_wait" in r.timings_ms for r in results) >= 5
    assert system.num_keyframes >= 15
    system.close()
