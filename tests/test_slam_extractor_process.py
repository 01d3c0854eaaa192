"""Play mode's ORB extraction process (``slam.extractor_process``): same features, failures never lose a frame."""
from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

from assets import demo_camera
from scene.errors import ParallaxError
from slam.extractor_process import ProcessExtractor
from slam.features import OrbExtractor
from slam.system import SlamOptions, System
from tests.test_slam_core import rendered

FIELDS = ("keypoints_xy", "normalized_xy", "octaves", "scales", "angles", "responses", "descriptors")


@pytest.fixture(scope="module")
def extractor():
    process = ProcessExtractor()
    yield process
    process.close()


def test_features_from_the_process_are_bit_identical(extractor):
    _, _, frames = rendered("orbit")
    camera = demo_camera()
    local = OrbExtractor()
    for image in [frames[0], frames[1], frames[2], frames[40][:, :, 0].copy()]:  # BGR frames and a gray one
        a, b = extractor.extract(image, camera), local.extract(image, camera)
        assert len(a) == len(b) > 900
        for name in FIELDS:
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
        assert np.array_equal(a.plan.level_sizes, b.plan.level_sizes)
    assert extractor.pid != os.getpid()


def test_bad_frames_raise_the_same_errors_as_in_process(extractor):
    camera = demo_camera()
    with pytest.raises(ParallaxError, match="frame is 320x240 but camera"):
        extractor.extract(np.zeros((240, 320, 3), np.uint8), camera)
    with pytest.raises(ValueError, match="must be uint8"):
        extractor.extract(np.zeros((camera.height, camera.width), np.float32), camera)
    assert len(extractor.extract(np.zeros((camera.height, camera.width), np.uint8), camera)) == 0  # still serving


def test_play_extracts_in_the_process_and_a_dead_process_loses_no_frame(caplog):
    timestamps, _, frames = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    process = system._play_extractor
    assert process is not None
    results = [system.step(img, ts) for img, ts in zip(frames[:30], timestamps[:30])]
    os.kill(process.pid, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="slam.system"):
        results += [system.step(img, ts) for img, ts in zip(frames[30:60], timestamps[30:60])]
    assert any("extraction process ended" in r.getMessage() for r in caplog.records)
    assert system._play_extractor is None  # carried on in this process
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    system.close()


def test_close_ends_the_process_and_step_mode_or_the_option_off_starts_none():
    system = System(demo_camera())
    system.set_background_mapping(True)
    process = system._play_extractor._process
    system.set_background_mapping(False)  # Step mode: the process stays for the next Play
    assert process.poll() is None  # still running
    system.close()
    assert process.poll() is not None and system._play_extractor is None
    off = System(demo_camera(), SlamOptions(play_extraction_process=False))
    off.set_background_mapping(True)
    assert off._play_extractor is None
    off.close()


def test_a_dropped_extractor_lets_its_process_end():
    import gc

    process = ProcessExtractor()
    process.wait_ready()
    child = process._process
    del process
    gc.collect()
    assert child.wait(30.0) == 0  # it read EOF and returned


def test_submit_and_collect_split_one_extraction(extractor):
    _, _, frames = rendered("orbit")
    camera = demo_camera()
    with pytest.raises(RuntimeError, match="nothing was submitted"):
        extractor.collect()
    extractor.submit(frames[3], camera)
    assert extractor.pending
    with pytest.raises(RuntimeError, match="not collected"):
        extractor.submit(frames[4], camera)
    a, b = extractor.collect(), OrbExtractor().extract(frames[3], camera)
    assert not extractor.pending
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def _keypoints(camera, image):
    return OrbExtractor().extract(image, camera).keypoints_xy


def test_play_reading_ahead_extracts_the_next_frame_while_tracking_with_the_same_features():
    timestamps, _, stacked = rendered("forward_walk")
    camera = demo_camera()
    system = System(camera)
    system.set_background_mapping(True)
    results = []
    for i in range(25):
        # stacked[i] is a new view each time: the next call's view of the same pixels still collects.
        results.append(system.step(stacked[i], timestamps[i], next_image=stacked[i + 1]))
        assert system._play_extractor.pending  # the next frame is being extracted
    for i in (0, 12, 24):
        assert np.array_equal(results[i].keypoints_xy, _keypoints(camera, stacked[i]))
    assert system.initialized_at_frame is not None
    assert all(r.cam_from_world is not None for r in results[system.initialized_at_frame:])

    # The caller steps another frame than the one it announced: that frame's features, not the announced one's.
    other = stacked[40].copy()
    r = system.step(other, timestamps[25])
    assert np.array_equal(r.keypoints_xy, _keypoints(camera, other))
    assert not system._play_extractor.pending
    # An announced frame the extractor refuses: the frame's own step reports it, and Play goes on.
    small = np.zeros((240, 320, 3), np.uint8)
    system.step(stacked[26], timestamps[26], next_image=small)
    bad = system.step(small, timestamps[27], next_image=stacked[28])
    assert bad.cam_from_world is None and "320x240" in bad.reason
    r = system.step(stacked[28], timestamps[28])
    assert r.cam_from_world is not None
    # A reset forgets the announced frame; the first frame after it is extracted afresh.
    system.step(stacked[29], timestamps[29], next_image=stacked[30])
    system.reset()
    first = stacked[50].copy()
    r = system.step(first, 0.0)
    assert np.array_equal(r.keypoints_xy, _keypoints(camera, first))
    system.close()


def test_step_mode_ignores_the_frame_read_ahead():
    timestamps, _, stacked = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    system.set_background_mapping(False)  # the process stays, Step extracts here
    system.step(stacked[0], timestamps[0], next_image=stacked[1])
    assert not system._play_extractor.pending
    system.close()


def test_a_process_that_dies_with_a_frame_read_ahead_loses_no_frame(caplog):
    timestamps, _, stacked = rendered("forward_walk")
    system = System(demo_camera())
    system.set_background_mapping(True)
    results = [system.step(stacked[i], timestamps[i], next_image=stacked[i + 1]) for i in range(20)]
    assert system._play_extractor.pending
    os.kill(system._play_extractor.pid, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="slam.system"):
        results += [system.step(stacked[i], timestamps[i], next_image=stacked[i + 1]) for i in range(20, 40)]
    assert any("extraction process ended" in r.getMessage() for r in caplog.records)
    assert system._play_extractor is None
    assert [r.frame_index for r in results[system.initialized_at_frame:] if r.cam_from_world is None] == []
    system.close()
