"""The SfM tab (pytest-qt). Run under ``xvfb-run -a -s "-screen 0 1600x1000x24"``.

Eight frames of the demo room (320 x 240, known intrinsics in a calibration file beside the folder) are
rendered once per module; each test drives the tab in a fresh window.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph.opengl")

from PyQt6 import QtCore, QtWidgets  # noqa: E402

from app import style  # noqa: E402
from app.sfm_worker import PIPELINE_STAGES, SfmRequest, sfm_options  # noqa: E402

pytestmark = pytest.mark.gui

FRAMES = 8
WIDTH, HEIGHT = 320, 240
BACKGROUND_RGB8 = tuple(round(c * 255) for c in style.VIEW_BACKGROUND[:3])
SCREENSHOT = "/tmp/sfm_tab.png"


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """(images folder, calibration file): every 3rd frame of a 48-frame orbit, i.e. 22.5 degrees apart."""
    import cv2

    from assets.camera_paths import camera_path
    from assets.demo_scene import demo_camera
    from assets.render import render_frame
    from assets.room import build_room

    root = tmp_path_factory.mktemp("sfm_gui")
    images = root / "images"
    images.mkdir()
    camera = demo_camera(WIDTH, HEIGHT)
    _, poses = camera_path("orbit", 48, 30.0, 0)
    room = build_room(0)
    for i, pose in enumerate(poses[: 3 * FRAMES: 3]):
        bgr, _ = render_frame(pose, camera, room)
        assert cv2.imwrite(str(images / f"{i:03d}.png"), bgr)
    fx, fy, cx, cy = camera.params
    calib = root / "calib.yaml"
    calib.write_text(f"fx: {fx}\nfy: {fy}\ncx: {cx}\ncy: {cy}\nwidth: {WIDTH}\nheight: {HEIGHT}\n")
    return images, calib


@pytest.fixture
def window(main_window):
    return main_window


def run_to_end(qtbot, panel, timeout_ms=60000) -> str:
    with qtbot.waitSignal(panel.run_ended, timeout=timeout_ms) as blocker:
        assert panel.run() is not None
    return blocker.args[0]


def non_background(rgb: np.ndarray) -> int:
    diff = np.abs(rgb.astype(np.int16) - np.array(BACKGROUND_RGB8, dtype=np.int16))
    return int(np.any(diff > 6, axis=-1).sum())


def test_sfm_dock_is_in_the_view_menu_and_presets_map_to_options(window):
    assert window.act_sfm in window.view_menu.actions()
    panel = window.show_sfm_panel()
    assert window.sfm_dock.windowTitle() == "SfM" and window.sfm_dock.isVisible()
    assert window.sfm_dock in window.tabifiedDockWidgets(window.frames_dock)
    assert window.show_sfm_panel() is panel
    assert not panel.run_button.isEnabled()  # an empty scene has no frames
    assert "no frames" in panel.frames_label.text()

    fast, default, accurate = (sfm_options(SfmRequest(preset=p, matcher="sequential", window=7))
                               for p in ("fast", "default", "accurate"))
    assert fast.features.max_image_size < default.features.max_image_size < accurate.features.max_image_size
    assert fast.features.max_num_features < default.features.max_num_features < accurate.features.max_num_features
    assert fast.mapper.global_ba_max_iterations < accurate.mapper.global_ba_max_iterations
    assert default.matching.method == "sequential" and default.matching.window == 7
    assert not fast.matching.exact and default.matching.exact and accurate.matching.exact
    with pytest.raises(ValueError, match="preset"):
        sfm_options(SfmRequest(preset="ultra"))
    # Choices sfm/ offers (a detector, outlier removal) are shown and passed on; absent ones are hidden.
    from app.sfm_worker import supports
    from sfm.features import FeatureOptions
    from sfm.pipeline import SfmOptions

    has_detector, has_outliers = supports(FeatureOptions, "detector"), supports(SfmOptions, "outlier_removal")
    assert panel.detector_box.isVisibleTo(panel) == has_detector
    assert panel.outlier_box.isVisibleTo(panel) == has_outliers
    orb = sfm_options(SfmRequest(detector="orb", remove_outliers=True))
    assert getattr(orb.features, "detector", "orb") == "orb"
    assert (getattr(orb, "outlier_removal", None) is not None) == has_outliers


def test_run_on_a_folder_fills_table_histogram_and_view(window, qtbot, image_set):
    images, calib = image_set
    panel = window.show_sfm_panel()
    panel.set_request(SfmRequest(source="folder", folder=str(images), intrinsics="calib", calib_path=str(calib),
                                 matcher="exhaustive", preset="default"))
    assert panel.run_button.isEnabled()
    seen: list = []
    live: list = []

    def watch(progress):
        seen.append(progress)
        if progress.live_model is not None and progress.running:  # drawn as it grows, before the scene has it
            live.append((len(progress.live_model["registered_image_indices"]), panel.live_item_names(),
                         len(window.scene.points)))

    panel.progress_applied.connect(watch)
    assert run_to_end(qtbot, panel) == "succeeded"
    s = panel.summary

    # The 3D view grew live: the overlay showed points and cameras while images registered, then gave way.
    assert live and all({"points", "keyframes"} <= set(names) for _, names, _ in live)
    assert min(n for n, _, _ in live) < FRAMES and all(points == 0 for _, _, points in live)
    assert panel.live_item_names() == []

    # Per-stage progress reached the end of every stage, and arrived while the run went.
    assert any(p.running for p in seen)
    for stage in PIPELINE_STAGES:
        bar = panel.stage_bars[stage]
        assert bar.value() == bar.maximum() > 0, stage
    assert panel.stage_bars["extract"].maximum() == FRAMES
    assert panel.stage_bars["map"].format() == f"{FRAMES} / {FRAMES}"

    # The model: all frames registered, accurate, and the result opened as the scene.
    assert s.registered == s.num_images == FRAMES and s.num_points > 300
    assert s.mean_reprojection_error_px < 0.5
    scene = window.scene
    assert window.current_path == images
    assert sum(im.cam_from_world is not None for im in scene.images.values()) == FRAMES
    assert len(scene.points) == s.num_points and "sfm_sparse" in scene.clouds
    assert all(c.intrinsics_source == "calib" and np.allclose(c.params, [262.5, 262.5, 160.0, 120.0])
               for c in scene.cameras.values())
    assert "from calib" in panel.summary_label.text()

    # The table: one row per frame, registered, with observations and a sub-pixel error.
    table = panel.table
    assert table.rowCount() == FRAMES
    statuses = [table.item(r, 1).text() for r in range(FRAMES)]
    assert statuses.count("registered") == FRAMES
    ids = [table.item(r, 0).data(QtCore.Qt.ItemDataRole.UserRole) for r in range(FRAMES)]
    assert ids == sorted(ids) == [r.image_id for r in s.rows]  # input order
    observations = [int(table.item(r, 2).text().replace(",", "")) for r in range(FRAMES)]
    assert min(observations) > 50
    assert observations == [int((scene.images[i].point3d_ids >= 0).sum()) for i in ids]
    errors = [float(table.item(r, 3).text()) for r in range(FRAMES)]
    assert f"of {len(scene.images[ids[0]].keypoints):,} keypoints" in table.item(0, 2).toolTip()
    assert max(errors) < 1.0

    # The histogram holds every observation's reprojection error.
    edges, counts = panel.histogram_data()
    assert len(edges) == len(counts) + 1 and counts.sum() == sum(observations) == len(s.observation_errors)
    row_errors = [r.mean_error_px for r in s.rows]
    assert np.allclose(errors, row_errors, atol=5e-4)  # shown with 3 decimals
    assert math.isclose(float(np.mean(s.observation_errors)), np.average(row_errors, weights=observations),
                        rel_tol=1e-9)
    # Our per-observation errors agree with the pipeline's own mean (same points, poses and intrinsics).
    assert math.isclose(float(np.mean(s.observation_errors)), s.mean_reprojection_error_px, rel_tol=1e-6)

    # Points are drawn in the 3D view: hiding them (and the identical cloud) removes many pixels.
    view = window.view
    QtWidgets.QApplication.processEvents()
    with_points = non_background(view.grab_rgb())
    view.set_visible("points", "sparse", False)
    view.set_visible("cloud", "sfm_sparse", False)
    without = non_background(view.grab_rgb())
    view.set_visible("points", "sparse", True)
    view.set_visible("cloud", "sfm_sparse", True)
    assert with_points - without > 300

    # Colour by reprojection error: the sparse points take the colour map, the duplicate cloud steps aside.
    panel.color_box.setCurrentIndex(panel.color_box.findData("error"))
    assert view.point_color_mode() == "error" and not view.is_visible("cloud", "sfm_sparse")
    colors = view._items[("points", "sparse")][0].color
    assert colors.shape == (s.num_points, 4) and len(np.unique(colors.round(3), axis=0)) > 10
    assert "px" in panel.color_legend.text()
    panel.color_box.setCurrentIndex(panel.color_box.findData("rgb"))
    assert view.is_visible("cloud", "sfm_sparse")

    # A table row shows its image with its observations.
    row = 3
    image_id = table.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)
    with qtbot.waitSignal(panel.image_shown, timeout=10000) as shown:
        table.selectRow(row)
    assert shown.args[0] == image_id and panel.bottom_tabs.currentIndex() == 1
    assert panel.image_item.image.shape[:2] == (HEIGHT, WIDTH)
    assert len(panel.observed_item.data) == observations[row]
    assert len(panel.observed_item.data) + len(panel.unmatched_item.data) == len(scene.images[image_id].keypoints)
    assert view._selected_image_id == image_id

    # Clicking a camera in the 3D view picks its image.
    other = table.item(6, 0).data(QtCore.Qt.ItemDataRole.UserRole)
    xy = _screen_position(view, scene.images[other].cam_from_world.center())
    assert view.pick_image(*xy) == other
    with qtbot.waitSignal(panel.image_shown, timeout=10000) as shown:
        qtbot.mouseClick(view.gl, QtCore.Qt.MouseButton.LeftButton, pos=QtCore.QPoint(round(xy[0]), round(xy[1])))
    assert shown.args[0] == other and table.currentRow() == 6

    QtWidgets.QApplication.processEvents()
    from app.view3d import grab_with_view

    assert grab_with_view(window).save(SCREENSHOT)


def _screen_position(view, world_xyz) -> tuple[float, float]:
    w, h = view.gl.width(), view.gl.height()
    mvp = view.gl.projectionMatrix((0, 0, w, h), (0, 0, w, h)) * view.gl.viewMatrix()
    m = np.array(mvp.data()).reshape(4, 4).T
    clip = m @ np.append(view._to_view(world_xyz)[0], 1.0)
    ndc = clip[:2] / clip[3]
    return (ndc[0] + 1) * 0.5 * w, (1 - ndc[1]) * 0.5 * h


def test_cancel_leaves_the_scene_unchanged_then_a_run_merges_into_it(window, qtbot, image_set):
    images, calib = image_set
    window.open_path(images)
    qtbot.waitUntil(lambda: window.worker is None, timeout=30000)
    assert len(window.scene.images) == FRAMES
    panel = window.show_sfm_panel()
    assert panel.frames_label.text() == f"{FRAMES} of {FRAMES} frames"
    assert "GUESS" in panel.intrinsics_label.text()  # a bare folder of PNGs: the marked guess
    panel.step_box.setValue(2)
    assert panel.frames_label.text() == f"{FRAMES // 2} of {FRAMES} frames"
    panel.step_box.setValue(1)

    version = window.scene.version
    panel.set_request(SfmRequest(source="scene", intrinsics="calib", calib_path=str(calib), matcher="sequential",
                                 window=7))
    panel.progress_applied.connect(lambda p: panel.cancel() if "match" in p.stages else None)
    assert run_to_end(qtbot, panel) == "cancelled"
    panel.progress_applied.disconnect()
    assert window.scene.version == version
    assert not any(im.cam_from_world is not None for im in window.scene.images.values())
    assert len(window.scene.points) == 0 and "sfm_sparse" not in window.scene.clouds
    assert "not changed" in panel.message_label.text() and panel.run_button.isEnabled()

    assert run_to_end(qtbot, panel) == "succeeded"
    s = panel.summary
    assert s.registered == FRAMES and panel.table.rowCount() == FRAMES
    scene = window.scene
    assert sum(im.cam_from_world is not None for im in scene.images.values()) == FRAMES
    assert len(scene.points) == s.num_points and window.is_modified()
    used = {im.camera_id for im in scene.images.values()}
    assert all(scene.cameras[c].intrinsics_source == "calib" for c in used)
    # Every observation in the images points at a point whose track holds it.
    ids = set(scene.points.ids.tolist())
    assert all(set(im.point3d_ids[im.point3d_ids >= 0].tolist()) <= ids for im in scene.images.values())


def test_a_missing_folder_is_reported_and_changes_nothing(window, qtbot, tmp_path):
    panel = window.show_sfm_panel()
    missing = tmp_path / "no_such_folder"
    panel.set_request(SfmRequest(source="folder", folder=str(missing)))
    version = window.scene.version
    with qtbot.waitSignal(window.error_shown, timeout=10000) as error:
        assert run_to_end(qtbot, panel) == "failed"
    assert error.args[0] == "SfM failed" and str(missing) in error.args[1]
    assert window.scene.version == version and window.current_path is None


def test_seed_from_the_scenes_poses_is_offered_for_posed_frames(window, image_set):
    """With posed frames in the scene (SLAM keyframes), the tab offers to start from them; the work scene then
    carries those poses and the options ask the pipeline to seed from them."""
    from scene.camera import Camera
    from scene.model import FrameRef, Image, Scene
    from scene.rigid import Rigid3d
    from app.sfm_worker import working_scene

    images, _ = image_set
    panel = window.show_sfm_panel()
    assert not panel.seed_box.isEnabled()  # nothing posed yet
    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 320, 240, [262.5, 262.5, 160.0, 120.0]))
    files = sorted(images.iterdir())[:4]
    poses = [Rigid3d([1.0, 0.0, 0.0, 0.0], [0.1 * k, 0.0, 0.0]) if k % 2 == 0 else None for k in range(4)]
    scene.add_images([Image(k + 1, f.name, 1, pose, source=FrameRef(str(f))) for k, (f, pose) in
                      enumerate(zip(files, poses))])
    window.load_scene(scene)
    assert panel.seed_box.isEnabled() and "2 posed frames" in panel.seed_box.text()
    panel.set_request(SfmRequest(seed_from_poses=True))
    request = panel.request()
    assert request.seed_from_poses and sfm_options(request).seed_from_poses
    work, pool, chosen = working_scene(window.scene, request)
    assert chosen == [1, 2, 3, 4]
    assert [work.images[i].cam_from_world for i in chosen] == poses
    unseeded, _, _ = working_scene(window.scene, SfmRequest())
    assert all(unseeded.images[i].cam_from_world is None for i in chosen)
