"""GUI tests (pytest-qt). Run under ``xvfb-run -a -s "-screen 0 1600x1000x24"``.

Settings go to a temporary folder (PARALLAX_SETTINGS_DIR) so the user's are never touched.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph.opengl")

from PyQt6 import QtCore, QtGui, QtWidgets  # noqa: E402

from app import style  # noqa: E402
from app import view_geometry as vg  # noqa: E402
from app.settings import SETTINGS_DIR_ENV, Settings  # noqa: E402
from scene.camera import Camera, guess_camera  # noqa: E402
from scene.errors import InputNotFound, ParallaxError  # noqa: E402
from scene.model import FrameRef, Image, PointCloud, Points3D, Scene, Trajectory  # noqa: E402
from scene.rigid import Rigid3d  # noqa: E402

pytestmark = pytest.mark.gui

CLOUD_RGB = (255, 0, 255)  # magenta: appears nowhere else in the view
GT_RGB8 = tuple(round(c * 255) for c in style.GROUND_TRUTH_COLOR[:3])
SLAM_RGB8 = tuple(round(c * 255) for c in style.TRAJECTORY_PALETTE[0][:3])


# --- helpers ------------------------------------------------------------------------------

def count_color(rgb: np.ndarray, color, tol: int = 2) -> int:
    diff = np.abs(rgb.astype(np.int16) - np.array(color, dtype=np.int16))
    return int(np.all(diff <= tol, axis=-1).sum())


def distinct_colors(rgb: np.ndarray) -> int:
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


def synthetic_scene(image_dir: Path | None = None, with_cloud: bool = True) -> Scene:
    """A camera, six registered images moving along +x, a magenta cloud and two trajectories."""
    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 64, 48, [50.0, 50.0, 32.0, 24.0], intrinsics_source="calib"))
    images = []
    for i in range(6):
        center = np.array([0.5 * i, 0.0, 0.0])
        cam_from_world = Rigid3d.from_rotation(np.eye(3), -center)  # looks along +z, y down
        source = FrameRef(str(image_dir / f"frame{i}.png"), timestamp=0.1 * i) if image_dir else None
        keypoints = np.array([[10.0, 10.0], [20.0, 30.0], [50.0, 40.0]]) if i == 0 else np.zeros((0, 2))
        point3d_ids = np.array([0, -1, 2]) if i == 0 else None
        images.append(Image(i + 1, f"frame{i}.png", 1, cam_from_world, keypoints, point3d_ids, source))
    scene.add_images(images)
    rng = np.random.default_rng(7)
    xyz = rng.uniform([-1.0, -1.0, 3.0], [3.5, 1.0, 5.0], (3000, 3))
    if with_cloud:
        scene.set_cloud("dense", PointCloud(xyz, np.tile(CLOUD_RGB, (len(xyz), 1))))
    t = np.arange(12, dtype=np.float64)
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (12, 1))
    scene.set_trajectory("ground_truth", Trajectory(t, quats, np.column_stack([0.25 * t, np.zeros(12), np.zeros(12)])))
    scene.set_trajectory("slam", Trajectory(t, quats, np.column_stack([0.25 * t, np.full(12, 0.4), np.zeros(12)])))
    return scene


@pytest.fixture(autouse=True)
def temp_settings(tmp_path, monkeypatch):
    folder = tmp_path / "settings"
    folder.mkdir()
    monkeypatch.setenv(SETTINGS_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def window(qtbot, temp_settings):
    from app.main_window import MainWindow

    win = MainWindow(confirm_discard=False)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.worker is not None:
        win.cancel_task()
        win.wait_for_task(5000)


def render(win) -> np.ndarray:
    QtWidgets.QApplication.processEvents()
    return win.view.grab_rgb()


def wait_task(qtbot, win, timeout_ms: int = 15000) -> None:
    qtbot.waitUntil(lambda: win.worker is None, timeout=timeout_ms)


# --- window -------------------------------------------------------------------------------

def test_window_opens_with_title_menus_and_docks(window):
    assert window.windowTitle() == "Parallax"
    docks = {d.windowTitle(): d for d in window.findChildren(QtWidgets.QDockWidget)}
    assert set(docks) == {"Scene", "Frames", "Log"}
    assert all(d.isVisible() for d in docks.values())
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert menus == ["File", "View", "Help"]
    file_texts = [a.text().replace("&", "") for a in window.menuBar().actions()[0].menu().actions()]
    for expected in ("Open Video…", "Open Image Folder…", "Open Project…", "Open COLMAP Model…",
                     "Open transforms.json…", "Recent Files", "Save", "Save As…", "Export", "Quit"):
        assert expected in file_texts
    export_texts = [a.text().replace("&", "") for a in window.export_menu.actions()]
    assert export_texts == ["Point Cloud (PLY)…", "COLMAP Model (text)…", "COLMAP Model (binary)…",
                            "transforms.json…", "TUM Trajectory…", "KITTI Trajectory…"]
    assert window.act_save.shortcut() == QtGui.QKeySequence(QtGui.QKeySequence.StandardKey.Save)
    assert window.acceptDrops()
    assert not window.progress_bar.isVisible() and not window.cancel_button.isVisible()


def test_empty_view_shows_hint_and_only_the_grid(window):
    assert window.view.placeholder.isVisible()
    assert window.view.item_keys() == []


def test_synthetic_scene_draws_cloud_frusta_and_ground_truth(window):
    window.load_scene(synthetic_scene())
    assert set(window.view.item_keys()) == {("cloud", "dense"), ("cameras", "registered"), ("selected", ""),
                                           ("trajectory", "ground_truth"), ("trajectory", "slam")}
    rgb = render(window)
    assert rgb.shape[0] > 300 and rgb.shape[1] > 300
    assert distinct_colors(rgb) > 50
    assert count_color(rgb, CLOUD_RGB, tol=0) > 500
    assert count_color(rgb, GT_RGB8) > 50
    assert count_color(rgb, SLAM_RGB8) > 50
    assert not window.view.placeholder.isVisible()
    assert window.view.overlay.isVisible() and "dense:" in window.view.overlay.text()  # statistics in the toolbar


def test_toggling_trajectory_in_tree_hides_its_colour(window):
    window.load_scene(synthetic_scene())
    assert count_color(render(window), GT_RGB8) > 50
    window.tree.set_checked("trajectory", "ground_truth", False)
    assert not window.view.is_visible("trajectory", "ground_truth")
    rgb = render(window)
    assert count_color(rgb, GT_RGB8) == 0
    assert count_color(rgb, SLAM_RGB8) > 50  # the other trajectory stays
    window.tree.set_checked("trajectory", "ground_truth", True)
    assert count_color(render(window), GT_RGB8) > 50


def test_toggling_cloud_in_tree_hides_its_points(window):
    window.load_scene(synthetic_scene())
    window.tree.set_checked("cloud", "dense", False)
    assert count_color(render(window), CLOUD_RGB, tol=0) == 0


def test_point_size_changes_rendered_area_and_persists(window, temp_settings):
    window.load_scene(synthetic_scene())
    window.view.set_point_size(1.0)
    small = count_color(render(window), CLOUD_RGB, tol=0)
    window.view.set_point_size(6.0)
    large = count_color(render(window), CLOUD_RGB, tol=0)
    assert large > 2 * small
    assert Settings().point_size() == 6.0


def test_scene_tree_shows_counts_and_guess_intrinsics(window):
    scene = synthetic_scene()
    scene.add_camera(guess_camera(2, 640, 480))
    window.load_scene(scene)
    assert window.tree.item_for("images").text(1) == "6  (6 registered)"
    assert window.tree.item_for("trajectories/slam").text(1).startswith("12 poses")
    assert "GUESS" in window.tree.item_for("cameras/2").text(1)
    assert "GUESS" in window.tree.item_for("cameras/2/source").text(1)
    assert "GUESS" not in window.tree.item_for("cameras/1").text(1)
    assert window.tree.item_for("cameras/1/source").text(1) == "calib"
    assert window.tree.item_for("cameras/1/p/fx").text(1) == "50"


def test_scene_changes_on_worker_thread_reach_the_view(window, qtbot):
    window.load_scene(synthetic_scene())

    def mutate():
        for i in range(50):  # many events: the view must coalesce them
            window.scene.set_cloud("late", PointCloud(np.zeros((i + 1, 3)), np.zeros((i + 1, 3), np.uint8)))

    snapshots = []
    window.watcher.snapshot_ready.connect(snapshots.append)
    thread = threading.Thread(target=mutate)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: ("cloud", "late") in window.view.item_keys() and
                    len(window.view.snapshot.clouds["late"]) == 50, timeout=3000)
    qtbot.wait(120)
    assert 1 <= len(snapshots) <= 3  # 50 events, coalesced into the latest state
    assert window.tree.item_for("clouds/late").text(1).startswith("50 points")


def test_events_behind_a_snapshot_that_holds_their_change_publish_nothing_more(window, qtbot):
    window.load_scene(synthetic_scene())
    qtbot.wait(150)  # past the watcher's throttle interval
    snapshots = []
    window.watcher.snapshot_ready.connect(snapshots.append)
    with window.scene.events.batch():  # a landed SLAM run: several events delivered at once
        for name in ("a", "b", "c"):
            window.scene.set_cloud(name, PointCloud(np.zeros((4, 3)), np.zeros((4, 3), np.uint8)))
    window.watcher.refresh()  # a snapshot taken before the queued events are handled already holds them
    assert len(snapshots) == 1 and set(snapshots[0].clouds) >= {"a", "b", "c"}
    qtbot.wait(300)
    assert len(snapshots) == 1  # the same state is not published again
    window.scene.set_cloud("d", PointCloud(np.zeros((4, 3)), np.zeros((4, 3), np.uint8)))
    qtbot.waitUntil(lambda: len(snapshots) == 2, timeout=3000)
    assert "d" in snapshots[1].clouds
    window.watcher.refresh()  # an explicit refresh always publishes
    assert len(snapshots) == 3


def test_frame_browser_shows_image_and_keypoints(window, qtbot, tmp_path):
    import cv2

    for i in range(6):
        image = np.full((48, 64, 3), 40 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), image)
    frames = window.frames
    with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 1):
        window.load_scene(synthetic_scene(tmp_path))  # pixels arrive from the loader thread
    assert frames.slider.maximum() == 5
    assert frames.current_image_id == 1
    assert frames.image_item.image.shape == (48, 64, 3)
    assert len(frames.keypoints.data) == 3
    assert "frame0.png" in frames.info.text() and "3 keypoints (2 with 3D)" in frames.info.text()
    with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 4):
        frames.slider.setValue(3)
        assert frames.current_image_id == 4
    assert int(frames.image_item.image[0, 0, 0]) == 120
    assert len(frames.keypoints.data) == 0
    assert "t = 0.300 s" in frames.info.text()
    assert ("selected", "") in window.view.item_keys()  # the current frame's frustum is highlighted


def test_frame_browser_behind_another_tab_draws_when_it_comes_to_the_front(window, qtbot, tmp_path):
    import cv2

    for i in range(6):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    frames = window.frames
    other = window._dock("Other", "otherDock", QtWidgets.QLabel("another tab"),
                         QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
    window.tabifyDockWidget(window.frames_dock, other)
    other.show()
    other.raise_()  # the Frames tab is behind it, as behind the SLAM, SfM or NeRF tab
    qtbot.waitUntil(lambda: frames.visibleRegion().isEmpty(), timeout=3000)
    shown = []
    frames.frame_shown.connect(shown.append)
    window.load_scene(synthetic_scene(tmp_path))
    qtbot.wait(500)  # the pixels have been decoded
    assert frames.current_image_id == 1 and frames.slider.maximum() == 5  # the list follows the scene
    assert shown == [] and frames.image_item.image is None  # nothing drawn while hidden
    with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 1):
        window.frames_dock.raise_()
    assert frames.image_item.image.shape == (48, 64, 3) and len(frames.keypoints.data) == 3


def test_fit_to_scene_centres_the_camera_on_the_bounding_box(window):
    window.load_scene(synthetic_scene())
    view = window.view
    lo, hi = view._bounds()
    center = view.gl.opts["center"]
    assert np.allclose([center.x(), center.y(), center.z()], (lo + hi) / 2, atol=1e-6)
    assert view.gl.opts["distance"] > np.linalg.norm(hi - lo) / 2


# --- progress, workers, errors ------------------------------------------------------------

def test_progress_adapter_updates_bar_and_cancel_sets_should_stop(window, qtbot):
    started = threading.Event()

    def job(progress):
        progress.report("matching", 3, 10, "pair 3")
        started.set()
        while not progress.should_stop():
            time.sleep(0.01)
        return "stopped"

    window.run_task("Test job", job)
    assert window.progress_bar.isVisible() and window.cancel_button.isVisible()
    qtbot.waitUntil(lambda: window.progress_bar.value() == 3, timeout=3000)
    assert window.progress_bar.maximum() == 10
    assert window.stage_label.text() == "matching: pair 3"
    assert not window.progress.should_stop()
    qtbot.mouseClick(window.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    assert window.progress.should_stop()
    wait_task(qtbot, window)
    assert not window.progress_bar.isVisible()


def test_progress_reports_are_throttled_to_the_latest(qtbot):
    from app.workers import QtProgress

    progress = QtProgress(min_interval_s=0.05)
    seen = []
    progress.progressed.connect(lambda *args: seen.append(args))

    def flood():
        for i in range(2000):
            progress.report("stage", i, 1999)

    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][1] == 1999, timeout=2000)
    qtbot.wait(100)
    assert 1 <= len(seen) <= 5
    assert seen[-1] == ("stage", 1999, 1999, "")


def test_parallax_error_during_load_shows_message_and_logs(window, qtbot, tmp_path):
    missing = tmp_path / "no_such_video.mp4"
    with qtbot.waitSignal(window.error_shown, timeout=10000) as blocker:
        window.open_path(missing)
    title, message = blocker.args
    assert "no_such_video.mp4" in message
    assert "Traceback" not in message
    box = window.last_message_box
    assert box is not None and box.isVisible() and box.text() == message
    assert box.icon() == QtWidgets.QMessageBox.Icon.Critical
    qtbot.waitUntil(lambda: "no_such_video.mp4" in window.log_view.plain_text(), timeout=2000)
    assert "ERROR" in window.log_view.plain_text()
    box.close()
    wait_task(qtbot, window)
    assert window.windowTitle() == "Parallax"


def test_unexpected_error_logs_traceback_and_shows_short_message(window, qtbot):
    def broken(progress):
        raise ZeroDivisionError("boom")

    with qtbot.waitSignal(window.error_shown, timeout=5000) as blocker:
        window.run_task("Broken job", broken)
    _, message = blocker.args
    assert "ZeroDivisionError: boom" in message and "Traceback" not in message
    qtbot.waitUntil(lambda: "Traceback" in window.log_view.plain_text(), timeout=2000)
    window.last_message_box.close()


def test_parallax_error_subclass_message_is_shown_verbatim(window, qtbot):
    def bad(progress):
        raise InputNotFound("/data/x.mp4: no such file or folder")

    with qtbot.waitSignal(window.error_shown, timeout=5000) as blocker:
        window.run_task("Opening x.mp4", bad)
    assert blocker.args == ["Opening x.mp4 failed", "/data/x.mp4: no such file or folder"]
    assert issubclass(InputNotFound, ParallaxError)
    window.last_message_box.close()


def test_event_loop_stays_responsive_while_worker_runs(window, qtbot):
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(10)

    def one_second(progress):
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            progress.report("sleep", 0, 1)
            time.sleep(0.005)
        return 42

    results = []
    start = time.monotonic()
    window.run_task("One second job", one_second, on_success=results.append)
    wait_task(qtbot, window, 5000)
    timer.stop()
    during = [t for t in ticks if start <= t <= start + 1.0]
    assert results == [42]
    assert len(during) >= 30  # a blocked GUI thread would give ~0
    assert max(np.diff(during)) < 0.25


def test_second_task_is_refused_while_busy(window, qtbot):
    release = threading.Event()
    window.run_task("Long job", lambda progress: release.wait(5))
    with qtbot.waitSignal(window.error_shown, timeout=2000):
        assert window.run_task("Another job", lambda progress: None) is None
    window.last_message_box.close()
    release.set()
    wait_task(qtbot, window)


# --- settings, files, drag and drop -------------------------------------------------------

def test_recent_files_persist_to_temp_settings(window, temp_settings, tmp_path):
    paths = [tmp_path / f"video{i}.mp4" for i in range(12)]
    for p in paths:
        window.settings.add_recent_file(str(p))
    window.settings.add_recent_file(str(paths[3]))  # re-opening moves it to the top
    window._rebuild_recent_menu()
    fresh = Settings()
    recent = fresh.recent_files()
    assert len(recent) == 10
    assert recent[0] == str(paths[3].resolve())
    assert recent[1] == str(paths[11].resolve())
    assert str(paths[0].resolve()) not in recent
    assert (temp_settings / "Parallax.ini").is_file()
    entries = [a.text() for a in window.recent_menu.actions() if a.text()]
    assert entries[0].startswith("&1  video3.mp4")
    window._clear_recent()
    assert Settings().recent_files() == []


def test_window_geometry_and_state_saved_on_close(qtbot, temp_settings):
    from app.main_window import MainWindow

    win = MainWindow(confirm_discard=False)
    qtbot.addWidget(win)
    win.show()
    win.log_dock.hide()
    win.close()
    settings = Settings()
    assert settings.window_geometry() is not None and settings.window_state() is not None
    again = MainWindow(confirm_discard=False)
    qtbot.addWidget(again)
    again.show()
    assert not again.log_dock.isVisible()
    assert again.tree_dock.isVisible()


def test_save_and_export_run_in_worker(window, qtbot, tmp_path):
    from scene.project import load_project

    window.load_scene(synthetic_scene())
    window.save_project_to(tmp_path / "saved")
    wait_task(qtbot, window)
    folder = tmp_path / "saved.parallax"
    assert window.project_path == folder and window.windowTitle() == "saved.parallax — Parallax"
    assert not window.is_modified()
    loaded = load_project(folder)
    assert sorted(loaded.trajectories) == ["ground_truth", "slam"] and len(loaded.registered_images()) == 6
    assert len(loaded.clouds) == len(window.scene.clouds) == 1
    assert Settings().recent_files()[0] == str(folder.resolve())

    window.export_to(tmp_path / "gt.txt", "tum", name="ground_truth")
    wait_task(qtbot, window)
    rows = (tmp_path / "gt.txt").read_text().split("\n")
    assert len([r for r in rows if r.strip() and not r.startswith("#")]) == 12


def test_autosave_saves_changes_into_the_project(window, qtbot, tmp_path, monkeypatch):
    import app.document as document
    from scene.model import Trajectory
    from scene.project import load_project, save_project

    monkeypatch.setattr(document, "AUTOSAVE_DELAY_S", 0.2)
    folder = save_project(synthetic_scene(with_cloud=False), tmp_path / "auto")
    window.open_path(folder)
    wait_task(qtbot, window)
    assert window.autosaver is None  # off by default
    window.act_autosave.trigger()
    assert window.autosaver is not None and Settings().autosave()
    window.scene.set_trajectory("added", Trajectory([0.0, 1.0], [[1, 0, 0, 0]] * 2, [[0, 0, 0], [1, 0, 0]]))
    qtbot.waitUntil(lambda: window.autosaver.saves >= 1, timeout=5000)
    assert "added" in load_project(folder).trajectories
    # opening something else stops autosave into the old project
    window.load_scene(synthetic_scene(with_cloud=False))
    assert window.autosaver is None
    assert "added" in load_project(folder).trajectories


def test_dropping_a_folder_opens_it(window, qtbot, tmp_path):
    from scene.project import save_project

    folder = tmp_path / "dropped.parallax"
    save_project(synthetic_scene(with_cloud=False), folder)
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(folder))])
    pos = QtCore.QPointF(200, 200)
    enter = QtGui.QDragEnterEvent(pos.toPoint(), QtCore.Qt.DropAction.CopyAction, mime,
                                  QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QtGui.QDropEvent(pos, QtCore.Qt.DropAction.CopyAction, mime, QtCore.Qt.MouseButton.LeftButton,
                            QtCore.Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    qtbot.waitUntil(lambda: window.project_path == folder, timeout=10000)
    wait_task(qtbot, window)
    assert len(window.scene.images) == 6
    assert window.windowTitle() == "dropped.parallax — Parallax"


def test_log_dock_colours_levels_and_filters(window, qtbot):
    logger = logging.getLogger("parallax.test")
    logger.setLevel(logging.DEBUG)
    logger.warning("watch out")
    logger.debug("hidden detail")
    qtbot.waitUntil(lambda: "watch out" in window.log_view.plain_text(), timeout=2000)
    assert "hidden detail" not in window.log_view.plain_text()
    html_text = window.log_view.text.document().toHtml()
    assert style.LOG_LEVEL_COLORS["WARNING"] in html_text
    window.log_view.level_box.setCurrentIndex(0)  # Debug
    assert "hidden detail" in window.log_view.plain_text()
    assert window.log_view.text.isReadOnly()


# --- demo through the full path -----------------------------------------------------------

def test_demo_loads_through_full_path(window, qtbot, tmp_path):
    cache = Path(os.environ.get("PARALLAX_TEST_DEMO_CACHE", tmp_path / "demo"))
    window.open_demo(cache_dir=cache, frames=40, video=False)  # same code path as `parallax demo`, fewer frames
    wait_task(qtbot, window, 90000)
    assert window.last_message_box is None
    assert "ground_truth" in window.scene.trajectories and len(window.scene.images) == 40
    assert window.scene.cameras[1].intrinsics_source == "calib"
    assert "reference_cloud" in window.scene.clouds
    frame = render(window)
    assert len(np.unique(frame.reshape(-1, frame.shape[-1]), axis=0)) > 1000  # a textured room, not a blank view
    assert count_color(frame, GT_RGB8) > 20
    qtbot.waitUntil(lambda: window.frames.image_item.image is not None, timeout=5000)  # decoded off the GUI thread


# --- pure geometry of the view ------------------------------------------------------------

def test_frustum_corners_follow_intrinsics():
    corners = vg.frustum_corners_cam(100.0, 100.0, 50.0, 25.0, 100, 50, size=2.0)
    assert np.allclose(corners[0], 0.0)
    # image corners at depth d: x spans (0-50)/100*d..(100-50)/100*d = 1.0*d wide -> d = 2
    assert np.allclose(corners[1:], [[-1.0, -0.5, 2.0], [1.0, -0.5, 2.0], [1.0, 0.5, 2.0], [-1.0, 0.5, 2.0]])
    segments = vg.frustum_segments(np.eye(3)[None], np.array([[1.0, 2.0, 3.0]]), corners)
    assert segments.shape == (16, 3)
    assert np.allclose(segments[0], [1.0, 2.0, 3.0]) and np.allclose(segments[1], [0.0, 1.5, 5.0])


def test_view_alignment_turns_camera_up_into_plus_z():
    # Cameras with y down in the world (COLMAP/OpenCV habit): their up is -y.
    rot = np.tile(np.eye(3), (5, 1, 1))
    view_from_world = vg.view_from_world_rotation(rot)
    assert np.allclose(view_from_world @ [0.0, -1.0, 0.0], [0.0, 0.0, 1.0])
    assert np.allclose(view_from_world @ view_from_world.T, np.eye(3))
    assert np.isclose(np.linalg.det(view_from_world), 1.0)
    flipped = vg.rotation_between(np.array([0.0, 0.0, -1.0]), np.array([0.0, 0.0, 1.0]))
    assert np.allclose(flipped @ [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]) and np.isclose(np.linalg.det(flipped), 1.0)


def test_robust_bounds_ignore_far_outliers_in_points_only():
    pts = np.zeros((1000, 3))
    pts[:, 0] = np.linspace(0.0, 1.0, 1000)
    pts[0] = [1e6, 0.0, 0.0]
    lo, hi = vg.robust_bounds([(pts, True), (np.array([[-2.0, 0.0, 0.0]]), False)])
    assert lo[0] == -2.0 and hi[0] < 1.01
    assert vg.robust_bounds([]) is None
    assert vg.nice_step(20.0, 20) == 1.0 and vg.nice_step(37.0, 20) == 2.0 and vg.nice_step(0.09, 20) == 0.005
    assert [vg.nice_ceiling(v) for v in (0.0, -3.0, float("nan"), 1.0, 1.01, 2.9, 7.0, 999.0, 1001.0, 0.0123)] == \
        [1.0, 1.0, 1.0, 1.0, 1.5, 3.0, 8.0, 1000.0, 1500.0, 0.015]


def test_robust_bounds_of_a_large_cloud_match_the_full_percentiles_and_still_drop_outliers():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3.0, 3.0, (150_000, 3))
    pts[::997] = 1e6  # 0.1 % far outliers, spread through the array
    lo, hi = vg.robust_bounds([(pts, True)])
    full_lo, full_hi = np.percentile(pts, [1.0, 99.0], axis=0)
    assert np.all(np.abs(lo - full_lo) < 0.1) and np.all(np.abs(hi - full_hi) < 0.1)
    assert np.all(hi < 3.0)


# --- frame browser: decoding off the GUI thread -------------------------------------------

def _grey_frames(folder: Path) -> None:
    import cv2

    for i in range(6):
        cv2.imwrite(str(folder / f"frame{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))


def _load_and_show_first(window, qtbot, scene) -> None:
    with qtbot.waitSignal(window.frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 1):
        window.load_scene(scene)


def test_frame_browser_stays_responsive_while_a_slow_frame_decodes(window, qtbot, tmp_path, monkeypatch):
    from app import frame_browser

    _grey_frames(tmp_path)
    _load_and_show_first(window, qtbot, synthetic_scene(tmp_path))
    decoded = []
    real_decode = frame_browser.decode_image_file

    def slow_decode(path):
        decoded.append(Path(path).name)
        time.sleep(0.5)
        return real_decode(path)

    monkeypatch.setattr(frame_browser, "decode_image_file", slow_decode)
    frames = window.frames
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(10)
    start = time.monotonic()
    for value in range(1, 6):  # scrub over five frames, none of them decoded yet
        frames.slider.setValue(value)
        assert frames.current_image_id == value + 1 and f"frame{value}.png" in frames.info.text()
        qtbot.wait(30)
    scrubbed = time.monotonic() - start
    qtbot.waitUntil(lambda: int(frames.image_item.image[0, 0, 0]) == 200, timeout=5000)
    timer.stop()
    during = [t for t in ticks if t >= start]
    assert scrubbed < 0.45  # decoding on the GUI thread would block each step for 0.5 s
    assert len(during) >= 30 and max(np.diff(during)) < 0.25
    # Only the newest request is decoded: at most the one already running when scrubbing went on.
    assert decoded[-1] == "frame5.png" and set(decoded) <= {"frame1.png", "frame5.png"}
    assert frames.current_image_id == 6


def test_frame_browser_drops_a_stale_result(window, qtbot, tmp_path, monkeypatch):
    from app import frame_browser

    _grey_frames(tmp_path)
    _load_and_show_first(window, qtbot, synthetic_scene(tmp_path))
    frames = window.frames
    release = threading.Event()
    started = threading.Event()
    real_decode = frame_browser.decode_image_file

    def gated_decode(path):
        if Path(path).name == "frame1.png":
            started.set()
            release.wait(5)
        return real_decode(path)

    monkeypatch.setattr(frame_browser, "decode_image_file", gated_decode)
    shown = []
    frames.frame_shown.connect(shown.append)
    try:
        # frame1 is decoding when the user goes back to frame0 (cached: shown at once).
        frames.slider.setValue(1)
        assert started.wait(5)
        frames.slider.setValue(0)
        assert shown == [1] and int(frames.image_item.image[0, 0, 0]) == 0
        release.set()
        frames.loader.wait_idle(5000)
        qtbot.wait(50)  # deliver the queued, now stale, frame1 result
        assert 2 not in shown and frames.current_image_id == 1 and int(frames.image_item.image[0, 0, 0]) == 0
        # frame1 decodes again while the user moves on to frame2, which waits behind it.
        release.clear()
        started.clear()
        frames._pixels.clear()  # the stale frame1 result was kept in the cache
        shown.clear()
        frames.slider.setValue(1)
        assert started.wait(5)
        frames.slider.setValue(2)
        with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 3):
            release.set()
        qtbot.wait(50)
        assert 2 not in shown and set(shown) == {3}
        assert frames.current_image_id == 3 and int(frames.image_item.image[0, 0, 0]) == 80
    finally:
        release.set()
        frames.loader.wait_idle(5000)


def test_frame_browser_says_cannot_decode_for_a_truncated_frame(window, qtbot, tmp_path, caplog):
    _grey_frames(tmp_path)
    data = (tmp_path / "frame2.png").read_bytes()
    (tmp_path / "frame2.png").write_bytes(data[: len(data) // 2])
    _load_and_show_first(window, qtbot, synthetic_scene(tmp_path))
    frames = window.frames
    with caplog.at_level(logging.WARNING), \
            qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 3):
        frames.slider.setValue(2)
    assert frames.image_item.image is None  # no half-decoded picture
    assert frames.message.isVisible()
    assert "Cannot decode frame2.png" in frames.message.textItem.toPlainText()
    assert "truncated PNG" in frames.message.textItem.toPlainText()
    assert "frame2.png" in caplog.text and "truncated PNG" in caplog.text
    with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == 4):
        frames.slider.setValue(3)
    assert not frames.message.isVisible() and int(frames.image_item.image[0, 0, 0]) == 120


def test_frame_browser_reads_video_frames_on_one_open_source_off_the_gui_thread(window, qtbot, tmp_path,
                                                                                 monkeypatch):
    import cv2

    import scene.io.sources as sources

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    opened = []
    real_open = sources.open_source

    def recording_open(p, *args, **kwargs):
        opened.append(threading.current_thread() is threading.main_thread())
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(sources, "open_source", recording_open)
    scene = synthetic_scene()
    for i, image in scene.images.items():
        image.source = FrameRef(str(path), i - 1, 0.1 * (i - 1))
    _load_and_show_first(window, qtbot, scene)
    frames = window.frames
    for value in (3, 5):
        with qtbot.waitSignal(frames.frame_shown, timeout=5000, check_params_cb=lambda image_id: image_id == value + 1):
            frames.slider.setValue(value)
        assert abs(int(frames.image_item.image[24, 32, 0]) - 40 * value) <= 3  # MJPG is lossy
    assert opened == [False]  # one VideoSource, opened on the loader thread
