"""NeRF outputs on a tiny trained run: loading, renders at cameras, stills, video, point cloud, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scene.errors import InputNotFound, ParallaxError, SchemaTooNew
from scene.model import Scene
from scene.progress import Cancelled, RecordingProgress
from tests import nerf_fixtures as nf

pytest.importorskip("nerfstudio")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return nf.shared_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(tiny):
    from nerf.load import load_pipeline

    return load_pipeline(tiny.root, device="cpu")


def test_loaded_run_maps_world_to_nerfstudio_frame_and_back(loaded, tiny):
    from scene.io.nerfstudio import opengl_world_from_cam

    assert loaded.step == nf.ITERATIONS - 1 and loaded.device == "cpu"
    pose = tiny.scene.images[1].cam_from_world
    xyz = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(loaded.ns_to_world(loaded.world_to_ns(xyz)), xyz, atol=1e-9)
    # the camera of training image 1, as nerfstudio's dataparser placed it
    trained = loaded.pipeline.datamanager.train_dataset.cameras.camera_to_worlds[0].numpy()
    np.testing.assert_allclose(loaded.ns_camera_to_world(pose), trained, atol=1e-5)
    assert opengl_world_from_cam(pose)[:3, 3] == pytest.approx(pose.center())


def test_render_at_training_views_is_closer_than_the_best_constant_colour(loaded, tiny):
    from nerf.render import render_image, scene_views

    views = scene_views(tiny.scene)
    for view in (views[0], views[5]):
        image = render_image(loaded, view.camera, view.cam_from_world)
        assert image.shape == (nf.SIZE, nf.SIZE, 3) and image.dtype == np.uint8
        truth = tiny.images[view.name].astype(np.float64)
        mse = np.mean((image - truth) ** 2)
        mse_constant = np.mean((truth - truth.reshape(-1, 3).mean(axis=0)) ** 2)  # the best single colour
        assert mse < 0.6 * mse_constant, (view.name, mse, mse_constant)


def test_render_size_and_intrinsics_follow_the_camera(loaded, tiny):
    from nerf.render import render_image

    pose = tiny.scene.images[3].cam_from_world
    wide = nf.tiny_camera().scaled(10, 6)
    image = render_image(loaded, wide, pose)
    assert image.shape == (6, 10, 3)
    # a distorted camera renders too (nerfstudio undistorts the rays)
    from scene.camera import Camera

    distorted = Camera(2, "OPENCV", 8, 8, [5.0, 5.0, 4.0, 4.0, -0.05, 0.01, 0.0, 0.0])
    assert render_image(loaded, distorted, pose).shape == (8, 8, 3)


def _write_cameras_json(tiny, path, w=12, h=8):
    """A transforms.json at w x h (its images are 24 x 24 on disk: the json's size must win)."""
    from scene.io.nerfstudio import opengl_world_from_cam

    frames = []
    for image_id, file_path in ((2, "../run/dataset/images/frame_0001.png"), (7, "renders/shot_b.jpg"),
                                (9, "deep/folder/frame_c")):
        frames.append({"file_path": file_path,
                       "transform_matrix": opengl_world_from_cam(tiny.scene.images[image_id].cam_from_world).tolist()})
    doc = {"camera_model": "PINHOLE", "fl_x": 7.0, "fl_y": 7.0, "cx": w / 2, "cy": h / 2, "w": w, "h": h,
           "frames": frames}
    path.write_text(json.dumps(doc))
    return path


def test_stills_at_transforms_cameras_are_named_after_frames_and_use_the_json_size(loaded, tiny, tmp_path):
    from nerf.render import render_stills, transforms_views

    views = transforms_views(_write_cameras_json(tiny, tmp_path / "cams.json"))
    progress = RecordingProgress()
    written = render_stills(loaded, views, tmp_path / "out", progress)
    assert sorted(p.name for p in written) == ["frame_0001.png", "frame_c.png", "shot_b.png"]
    import cv2

    for path in written:
        assert cv2.imread(str(path)).shape == (8, 12, 3)
    assert [r[1] for r in progress.reports if r[0] == "render"] == [0, 1, 2, 3]


def test_stills_refuse_two_frames_with_the_same_name(loaded, tiny, tmp_path):
    from nerf.render import View, render_stills

    camera = nf.tiny_camera(4)
    pose = tiny.scene.images[1].cam_from_world
    with pytest.raises(ParallaxError, match="would both be written as x.png"):
        render_stills(loaded, [View("a/x.png", camera, pose), View("b/x.jpg", camera, pose)], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ParallaxError, match="empty"):
        render_stills(loaded, [], tmp_path / "o")


def test_render_stops_when_asked(loaded, tiny, tmp_path):
    from nerf.render import render_stills, scene_views

    progress = RecordingProgress()
    progress.request_stop()
    with pytest.raises(Cancelled):
        render_stills(loaded, scene_views(tiny.scene)[:2], tmp_path / "stopped", progress)
    assert list((tmp_path / "stopped").glob("*.png")) == []


def test_video_along_an_orbit_decodes_to_n_frames_of_the_right_size(loaded, tiny, tmp_path):
    from geometry.camera_paths import orbit_from_cameras, orbit_path
    from nerf.render import View, render_views
    from nerf.video import read_mp4, write_mp4

    poses = orbit_path(orbit_from_cameras([im.cam_from_world for im in tiny.scene.images.values()]), 5)
    camera = nf.tiny_camera(12)
    views = [View(f"orbit_{i}", camera, p) for i, p in enumerate(poses)]
    rendered = []

    def keep(frames):
        for frame in frames:
            rendered.append(frame)
            yield frame

    progress = RecordingProgress()
    path = write_mp4(keep(render_views(loaded, views)), tmp_path / "orbit.mp4", fps=10, total=5, progress=progress)
    frames = read_mp4(path)
    assert len(frames) == 5 and all(f.shape == (12, 12, 3) for f in frames)
    luma = np.array([0.299, 0.587, 0.114])  # yuv420p keeps full-resolution luma; chroma is halved
    for i, decoded in enumerate(frames):  # the video holds the renders, in order
        errors = [np.mean(np.abs(decoded @ luma - original @ luma)) for original in rendered]
        assert errors[i] < 6.0 and errors[i] == min(errors), errors
    assert [r[1] for r in progress.reports if r[0] == "video"] == [1, 2, 3, 4, 5]


def test_video_pads_odd_sizes_and_refuses_bad_output(tmp_path):
    from nerf.video import read_mp4, write_mp4

    frames = [np.full((5, 7, 3), 40 * i, np.uint8) for i in range(3)]
    decoded = read_mp4(write_mp4(frames, tmp_path / "odd.mp4", fps=5))
    assert len(decoded) == 3 and decoded[0].shape == (6, 8, 3)
    assert abs(int(decoded[2][2, 3, 0]) - 80) <= 3
    with pytest.raises(ParallaxError, match="should end in .mp4"):
        write_mp4(frames, tmp_path / "odd.avi")
    with pytest.raises(ParallaxError, match="no frames"):
        write_mp4([], tmp_path / "empty.mp4")
    assert not (tmp_path / "empty.mp4").exists()


def test_point_cloud_lies_on_the_true_surface_in_the_scene_frame(loaded, tiny, tmp_path):
    from nerf.pointcloud import export_point_cloud
    from scene.io.ply import read_ply
    from scene.project import load_project

    scene = load_project(tiny.project)  # its sparse points give the bounding box
    progress = RecordingProgress()
    cloud = export_point_cloud(tiny.root, 800, scene=scene, output=tmp_path / "nerf.ply", loaded=loaded,
                               progress=progress)
    assert 650 <= len(cloud) <= 800
    distance = nf.distance_to_surface(cloud.xyz)
    box_min, box_max = nf.scene_box(0.1 * nf.SCENE_SIZE)
    uniform = np.random.default_rng(0).uniform(box_min, box_max, size=(20000, 3))
    baseline = np.median(nf.distance_to_surface(uniform))  # what points spread through the box would give
    assert np.median(distance) < 0.05 * nf.SCENE_SIZE
    assert np.median(distance) < 0.5 * baseline
    assert np.all(cloud.xyz >= box_min - 1e-9) and np.all(cloud.xyz <= box_max + 1e-9)
    assert scene.clouds["nerf"] is cloud
    written = read_ply(tmp_path / "nerf.ply")
    np.testing.assert_allclose(written.xyz, cloud.xyz)
    np.testing.assert_array_equal(written.rgb, cloud.rgb)
    assert progress.reports[-1][1] == 800


def test_point_cloud_refuses_a_non_ply_output(tiny, tmp_path):
    from nerf.pointcloud import export_point_cloud

    with pytest.raises(ParallaxError, match="should end in .ply"):
        export_point_cloud(tiny.root, 10, output=tmp_path / "cloud.xyz")


# --- run folders that cannot be loaded ---------------------------------------------------------

def test_missing_run_folder(tmp_path):
    from nerf.load import load_pipeline

    with pytest.raises(InputNotFound, match="NeRF run folder not found"):
        load_pipeline(tmp_path / "nope")


def test_folder_that_is_not_a_run(tmp_path):
    from nerf.load import load_pipeline

    with pytest.raises(ParallaxError, match="not a NeRF run folder"):
        load_pipeline(tmp_path)


def test_run_without_a_checkpoint(tiny, tmp_path):
    from nerf.load import load_pipeline

    run = nf.copy_run(tiny, tmp_path / "early", checkpoints=False)
    with pytest.raises(ParallaxError, match="no checkpoint yet"):
        load_pipeline(run)


def test_run_before_training_started(tmp_path):
    from nerf.load import load_pipeline

    (tmp_path / "run.json").write_text(json.dumps({"schema": 1, "preset": "parallax-cpu"}))
    with pytest.raises(ParallaxError, match="training has not started"):
        load_pipeline(tmp_path)


def test_run_from_a_newer_parallax(tiny, tmp_path):
    from nerf.load import load_pipeline

    run = nf.copy_run(tiny, tmp_path / "future", record={"schema": 99, "preset": "x"})
    with pytest.raises(SchemaTooNew, match="run schema 99"):
        load_pipeline(run)


def test_moved_run_folder_still_finds_its_dataset(tiny, tmp_path):
    from nerf.load import load_pipeline

    run = nf.copy_run(tiny, tmp_path / "moved")
    (tiny.root / "dataset").rename(tiny.root / "dataset.away")  # the stored absolute path now fails
    try:
        moved = load_pipeline(run)
    finally:
        (tiny.root / "dataset.away").rename(tiny.root / "dataset")
    assert str(moved.config.pipeline.datamanager.data).startswith(str(run))


def test_scene_views_errors():
    from nerf.render import scene_views

    with pytest.raises(ParallaxError, match="no registered cameras"):
        scene_views(Scene())
