"""The SLAM tab (pytest-qt). Run under ``xvfb-run -a -s "-screen 0 1600x1000x24"``.

A 60-frame orbit of the demo room is generated once per module; every test opens it in a fresh window.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph.opengl")

from PyQt6 import QtCore, QtWidgets  # noqa: E402

from app import style  # noqa: E402

pytestmark = pytest.mark.gui

SLAM_RGB8 = tuple(round(c * 255) for c in style.TRAJECTORY_PALETTE[0][:3])
FRAMES = 60


def count_color(rgb: np.ndarray, color, tol: int = 2) -> int:
    diff = np.abs(rgb.astype(np.int16) - np.array(color, dtype=np.int16))
    return int(np.all(diff <= tol, axis=-1).sum())


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from assets.demo_scene import generate_demo

    folder = tmp_path_factory.mktemp("slam_demo") / "orbit"
    generate_demo(folder, path="orbit", frames=FRAMES, video=False)
    return folder


@pytest.fixture
def window(main_window, qtbot, demo_folder):
    win = main_window
    win.open_path(demo_folder)
    qtbot.waitUntil(lambda: win.worker is None, timeout=30000)
    assert win.scene.sources and "ground_truth" in win.scene.trajectories
    return win


def wait_for(qtbot, panel, predicate, timeout_ms=60000):
    qtbot.waitUntil(lambda: panel.snapshot is not None and predicate(panel.snapshot), timeout=timeout_ms)
    return panel.snapshot


def test_slam_dock_is_in_the_view_menu_and_tabbed_with_frames(window):
    assert window.act_slam in window.view_menu.actions()
    panel = window.show_slam_panel()
    assert window.slam_dock.isVisible() and window.slam_dock.windowTitle() == "SLAM"
    assert window.slam_dock in window.tabifiedDockWidgets(window.frames_dock)
    assert window.show_slam_panel() is panel  # one panel per window
    assert panel.source()[0] == window.scene.sources[-1]["path"] or str(panel.source()[0]) == \
        window.scene.sources[-1]["path"]
    assert "ground truth" in panel.source_label.text()


def test_play_runs_to_the_end_and_results_land_in_the_scene(window, qtbot):
    panel = window.show_slam_panel()
    wait_for(qtbot, panel, lambda s: s.frame_index == -1)  # the worker has opened the source and warmed up
    applied: list = []
    panel.snapshot_applied.connect(applied.append)
    with qtbot.waitSignal(panel.results_written, timeout=120000) as blocker:
        panel.play()
    summary = blocker.args[0]
    snap = wait_for(qtbot, panel, lambda s: s.finished)

    assert snap.frame_index == FRAMES - 1 and snap.total_frames == FRAMES
    assert snap.state == "OK"
    assert snap.keyframes > 0 and snap.map_points > 0
    assert any(s.state == "OK" and s.aligned_to_gt for s in applied)
    assert len(snap.ate_rmse) > 0 and np.all(np.isfinite(snap.ate_rmse))
    # Snapshots are throttled (<= 20 Hz) but the run was drawn while it went.
    assert 2 <= len(applied)
    scene = window.scene
    assert "slam" in scene.trajectories and len(scene.trajectories["slam"]) > FRAMES // 2
    assert len(scene.points) == summary["points"] > 0
    assert summary["images"] == snap.keyframes
    assert window.is_modified()
    assert not panel.play_button.isEnabled()  # the source is exhausted; Reset starts again
    # With ground truth, the result lands in its frame (the box is ticked by default), as the live map was drawn.
    from geometry.metrics import ate

    gt = scene.trajectories["ground_truth"]
    assert panel.align_box.isEnabled() and panel.align_box.isChecked()
    landed = scene.trajectories["slam"]
    # Already aligned: a fresh Sim(3) alignment finds nothing left to move.
    assert ate(landed, gt, align="none").rmse == pytest.approx(ate(landed, gt, align="sim3").rmse, rel=1e-6)
    assert ate(landed, gt, align="none").rmse < 0.05 * gt.path_length()
    # The scene's "slam" trajectory is drawn in the 3D view.
    qtbot.waitUntil(lambda: ("trajectory", "slam") in window.view.item_keys(), timeout=5000)
    assert not window.view.is_visible("cloud", "reference_cloud")  # hidden while the SLAM tab is active
    QtWidgets.QApplication.processEvents()
    assert count_color(window.view.grab_rgb(), SLAM_RGB8) > 20


def test_main_thread_never_blocks_more_than_50_ms_during_play(window, qtbot):
    from app.gui import settle_startup_heap

    settle_startup_heap()  # as run_gui does once the window is built
    panel = window.show_slam_panel()
    panel.speed_box.setCurrentIndex(panel.speed_box.findData(False))  # as fast as possible: the busiest Play
    wait_for(qtbot, panel, lambda s: s.frame_index == -1)
    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    with qtbot.waitSignal(panel.results_written, timeout=120000):
        panel.play()
    timer.stop()
    gaps_ms = np.diff(ticks) * 1000.0
    assert len(ticks) > 50 and gaps_ms.max() <= 50.0


def test_playback_speed_defaults_to_real_time_and_the_choice_is_kept(window, qtbot):
    from app.settings import Settings

    panel = window.show_slam_panel()
    assert panel.speed_box.currentText() == "Real time" and panel.realtime
    wait_for(qtbot, panel, lambda s: s.frame_index == -1)
    assert panel.worker.realtime
    panel.speed_box.setCurrentIndex(panel.speed_box.findData(False))
    assert not panel.realtime and not Settings().slam_realtime()  # written through to the user's settings
    assert not panel.worker.realtime
    panel.shutdown()

    from app.slam_panel import SlamPanel

    again = SlamPanel(window)  # a new window's panel starts where the user left it
    try:
        assert again.speed_box.currentText() == "As fast as possible" and not again.realtime
    finally:
        again.shutdown()
        again.deleteLater()


def test_step_advances_exactly_one_frame_per_click(window, qtbot):
    panel = window.show_slam_panel()
    for expected in range(4):
        panel.step_button.click()
        snap = wait_for(qtbot, panel, lambda s, e=expected: s.frame_index >= e, 30000)
        qtbot.wait(150)  # a second frame would show up here
        assert panel.snapshot.frame_index == expected == snap.frame_index
        assert not panel.snapshot.running
    assert len(panel.snapshot.history_frames) == 4
    # Features are drawn over the frame, coloured by status.
    drawn = sum(len(item.data) for item in panel.kp_items.values())
    assert drawn == len(panel.snapshot.keypoints_xy) > 0
    assert panel.snapshot.state == "OK"
    assert len(panel.kp_items[1].data) == panel.snapshot.num_tracked > 0


def test_pause_stops_advancing_and_reset_clears(window, qtbot):
    panel = window.show_slam_panel()
    assert panel.realtime  # the default: 2 s for the 60 frames, so Pause lands mid-run
    panel.play()
    wait_for(qtbot, panel, lambda s: s.frame_index >= 5 and s.running)
    panel.pause()
    snap = wait_for(qtbot, panel, lambda s: not s.running)
    stopped_at = snap.frame_index
    qtbot.wait(400)
    assert panel.snapshot.frame_index == stopped_at < FRAMES - 1
    assert panel.snapshot.keyframes > 0
    assert panel.overlay.item_names()  # the live map is in the 3D view
    assert "slam" not in window.scene.trajectories  # results land only at the end or on Finish

    panel.reset()
    snap = wait_for(qtbot, panel, lambda s: s.frame_index == -1)
    assert snap.keyframes == 0 and snap.map_points == 0 and len(snap.history_frames) == 0
    assert panel.overlay.item_names() == []
    # Seeking forward while paused processes the frames in between.
    panel.seek(9)
    snap = wait_for(qtbot, panel, lambda s: s.frame_index == 9 and not s.running)
    assert len(snap.history_frames) == 10
    # Finish writes what exists into the scene.
    with qtbot.waitSignal(panel.results_written, timeout=30000):
        panel.finish()
    assert "slam" in window.scene.trajectories


def test_worker_warns_when_the_focal_length_looks_far_off(qtbot, tmp_path, caplog):
    """A calibration 5x too short: the run still lands in the scene (to look at), with the focal check's warning."""
    import logging

    from app.slam_worker import SlamWorker
    from assets import demo_camera
    from scene.camera import Camera
    from scene.model import Scene
    from tests.test_slam_bad_input import WALK, _write_walk_folder
    from tests.test_slam_core import rendered

    _, _, frames = rendered(WALK)
    folder = tmp_path / "walk"
    _write_walk_folder(folder, frames[:30])
    cam = demo_camera()
    params = cam.params.copy()
    params[:2] *= 0.2
    scene = Scene()
    worker = SlamWorker(folder, Camera(1, cam.model, cam.width, cam.height, params, intrinsics_source="calib"),
                        scene)
    written = []
    worker.results_written.connect(written.append)
    with caplog.at_level(logging.WARNING, logger="app.slam_worker"):
        worker.start()
        try:
            worker.play()
            qtbot.waitUntil(lambda: bool(written), timeout=120000)
        finally:
            worker.quit_worker()
            worker.wait(30000)
    assert len(scene.registered_images()) >= 2
    assert any("intrinsics" in r.getMessage() and "prefers a focal length" in r.getMessage() for r in caplog.records)


def _start_worker(folder, scene, qtbot):
    from app.slam_worker import SlamWorker
    from assets import demo_camera

    worker = SlamWorker(folder, demo_camera(), scene)
    snapshots = []
    worker.snapshot_ready.connect(snapshots.append)
    worker.start()
    qtbot.waitUntil(lambda: bool(snapshots), timeout=60000)  # the engine has opened the source and warmed up
    return worker, snapshots


def test_engine_runs_in_its_own_process_and_its_log_reaches_this_one(qtbot, tmp_path, caplog):
    """SLAM runs outside the GUI's process (its threads cannot hold the GUI's GIL); what it logs is not lost."""
    import logging
    import os

    import cv2

    from assets import demo_camera
    from scene.model import Scene

    cam = demo_camera()
    folder = tmp_path / "blank"
    folder.mkdir()
    for i in range(8):  # textureless: never initialises
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((cam.height, cam.width, 3), 90, np.uint8))
    scene = Scene()
    with caplog.at_level(logging.WARNING):
        worker, snapshots = _start_worker(folder, scene, qtbot)
        try:
            assert worker.engine_pid is not None and worker.engine_pid != os.getpid()
            worker.play()
            qtbot.waitUntil(lambda: snapshots[-1].finished, timeout=60000)
        finally:
            worker.quit_worker()
            assert worker.wait(30000)
    assert snapshots[-1].frame_index == 7 and snapshots[-1].keyframes == 0
    assert len(scene.images) == 0
    assert any(r.name == "app.slam_engine" and "not initialised after 8 frames" in r.getMessage()
               for r in caplog.records)


def test_an_engine_that_dies_is_reported_and_the_worker_ends(qtbot, demo_folder):
    import os
    import signal

    from scene.model import Scene

    worker, _ = _start_worker(demo_folder, Scene(), qtbot)
    failures = []
    worker.failed.connect(failures.append)
    try:
        os.kill(worker.engine_pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: bool(failures), timeout=30000)
        assert worker.wait(30000)
    finally:
        worker.quit_worker()
        worker.wait(30000)
    assert "SLAM engine stopped unexpectedly" in failures[0]
    worker.play()  # commands to a dead engine are dropped, not raised


def test_the_engine_stops_sending_once_the_gui_has_gone():
    """Closing the window mid-Play closes the GUI's end of the pipe: the engine's next message must not die
    with a BrokenPipeError traceback (it did, printed on the terminal); the engine ends at its next command read."""
    import os

    from app.slam_engine import GuiSender
    from scene.messages import Channel

    to_gui_r, to_gui_w = os.pipe()
    engine_side, gui_side = Channel(-1, to_gui_w), Channel(to_gui_r, -1)
    send = GuiSender(engine_side)
    send("log", message="tracking")
    assert gui_side.recv() == ("log", {"message": "tracking"}) and not send.gui_gone
    gui_side.close()
    send("snapshot", frame_index=3)
    send("exited")
    assert send.gui_gone
    engine_side.close()


def test_tracking_reads_the_median_step_time_over_the_last_second():
    from app.slam_engine import SlamEngine

    engine = SlamEngine("unused", None, None, send=lambda *a, **k: None)
    assert engine._step_ms() == 0.0 and engine._fps() == 0.0
    # A 300 ms frame 2.9 s before the last (outside the window), then 10 ms frames 0.1 s apart, an 80 ms one last.
    steps = [(0.0, 0.300)] + [(2.0 + 0.1 * i, 0.010) for i in range(9)] + [(2.9, 0.080)]
    engine._step_times.extend(steps)
    assert engine._step_ms() == pytest.approx(10.0)   # neither the keyframe nor the old frame moves it
    assert engine._fps() == pytest.approx(10.0)


def test_real_time_paces_a_source_without_a_clock_at_30_fps():
    """A folder of images numbers its frames 0, 1, 2 ... as seconds: real time must not play it at 1 fps."""
    from types import SimpleNamespace

    from app.slam_engine import NOMINAL_FPS, SlamEngine

    class Commands:
        def __init__(self):
            self.waits = []

        def poll(self, timeout):
            self.waits.append(timeout)
            return False

    waits = {}
    for has_clock in (False, True):
        engine = SlamEngine("unused", None, None, send=lambda *a, **k: None, realtime=True)
        refs = [SimpleNamespace(timestamp=float(i)) for i in range(3)]
        engine.source = SimpleNamespace(frame_refs=lambda refs=refs: refs, has_clock=has_clock)
        engine._commands = Commands()
        assert engine._wait_for_frame_time() is False  # the first frame sets the clock
        engine._next_index = 1
        assert engine._wait_for_frame_time() is False
        waits[has_clock] = engine._commands.waits
    assert len(waits[False]) == 1 and 0.5 / NOMINAL_FPS < waits[False][0] <= 1.0 / NOMINAL_FPS
    assert len(waits[True]) == 1 and waits[True][0] > 0.9  # one second apart on the source's clock
