"""Scene -> nerfstudio dataset: the written transforms.json round-trips the scene's poses (OpenGL axes exact),
images are undistorted and downscaled with matching intrinsics, alpha goes onto white, bounds come from the
sparse points, and a transforms.json works as a source. No torch here."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from assets.camera_paths import camera_path, look_at
from nerf.dataset import held_out_indices, prepare_dataset
from scene.camera import Camera
from scene.io.nerfstudio import read_transforms
from scene.model import FrameRef, Image, Points3D, Scene

W, H = 48, 36


def _scene(folder, views=4, camera=None, pixels=None, poses=None) -> Scene:
    folder.mkdir(parents=True, exist_ok=True)
    camera = camera or Camera(1, "PINHOLE", W, H, np.array([40.0, 41.0, 24.5, 17.5]))
    scene = Scene()
    scene.add_camera(camera)
    poses = poses or [look_at(np.array([2.0 * np.cos(a), 0.3 * i, 2.0 * np.sin(a)]), np.zeros(3)).inverse()
                      for i, a in enumerate(np.linspace(0, 1.5, views))]
    images = []
    for i, cam_from_world in enumerate(poses):
        image = pixels(i) if pixels else np.full((camera.height, camera.width, 3), 40 * i, np.uint8)
        path = folder / f"im{i}.png"
        cv2.imwrite(str(path), image)
        images.append(Image(i + 1, path.name, 1, cam_from_world, source=FrameRef(str(path))))
    scene.add_images(images)
    return scene


def test_round_trip_poses_and_opengl_axes(tmp_path):
    scene = _scene(tmp_path / "src", views=5)
    info = prepare_dataset(scene, tmp_path / "ds")
    doc = json.loads(info.transforms.read_text())
    back = read_transforms(info.transforms)
    assert len(back.images) == 5 and info.num_images == 5
    for frame, original in zip(doc["frames"], sorted(scene.images.values(), key=lambda im: im.image_id)):
        m = np.array(frame["transform_matrix"])
        rotation_wc = original.cam_from_world.rotation.T
        # OpenGL camera axes: x right, y up, looking down -z; OpenCV: y down, looking down +z.
        np.testing.assert_allclose(m[:3, 0], rotation_wc[:, 0], atol=1e-12)
        np.testing.assert_allclose(m[:3, 1], -rotation_wc[:, 1], atol=1e-12)
        np.testing.assert_allclose(m[:3, 2], -rotation_wc[:, 2], atol=1e-12)
        np.testing.assert_allclose(m[:3, 3], original.cam_from_world.center(), atol=1e-12)
        np.testing.assert_array_equal(m[3], [0, 0, 0, 1])
        image = back.images[frame["colmap_im_id"]]
        np.testing.assert_allclose(image.cam_from_world.rotation, original.cam_from_world.rotation, atol=1e-12)
        np.testing.assert_allclose(image.cam_from_world.translation, original.cam_from_world.translation, atol=1e-12)
        assert (tmp_path / "ds" / frame["file_path"]).is_file()
    camera = next(iter(back.cameras.values()))
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", W, H)
    np.testing.assert_allclose(camera.params, [40.0, 41.0, 24.5, 17.5])


def test_undistort_and_downscale_keep_projections(tmp_path):
    """A dot drawn where the distorted camera sees a 3D point lands where the written pinhole camera sees it."""
    width, height = 160, 120
    k1, k2, p1, p2 = -0.25, 0.08, 0.001, -0.002
    camera = Camera(1, "OPENCV", width, height, np.array([120.0, 118.0, 81.0, 58.5, k1, k2, p1, p2]))
    point_cam = np.array([0.45, -0.3, 1.0])  # near a corner: distortion moves it by several pixels
    k = camera.calibration_matrix()
    distorted, _ = cv2.projectPoints(point_cam[None], np.zeros(3), np.zeros(3), k, np.array([k1, k2, p1, p2]))
    u, v = distorted.reshape(2)
    yy, xx = np.mgrid[0:height, 0:width]

    def dot(_):
        blob = np.exp(-((xx + 0.5 - u) ** 2 + (yy + 0.5 - v) ** 2) / (2 * 2.0 ** 2))
        return np.repeat((255 * blob).astype(np.uint8)[:, :, None], 3, axis=2)

    pinhole_u = 120.0 * point_cam[0] / point_cam[2] + 81.0
    assert abs(u - pinhole_u) > 3.0  # the distortion is large enough to matter
    scene = _scene(tmp_path / "src", views=3, camera=camera, pixels=dot)
    info = prepare_dataset(scene, tmp_path / "ds", max_size=80)
    doc = json.loads(info.transforms.read_text())
    assert (doc["w"], doc["h"], doc["camera_model"]) == (80, 60, "PINHOLE")
    assert not any(key in doc for key in ("k1", "k2", "p1", "p2"))
    out = cv2.imread(str(tmp_path / "ds" / doc["frames"][0]["file_path"]), cv2.IMREAD_GRAYSCALE).astype(float)
    weights = np.where(out > 0.2 * out.max(), out, 0.0)
    ys, xs = np.mgrid[0:60, 0:80]
    found = np.array([(weights * (xs + 0.5)).sum(), (weights * (ys + 0.5)).sum()]) / weights.sum()
    expected = np.array([doc["fl_x"] * point_cam[0] + doc["cx"], doc["fl_y"] * point_cam[1] + doc["cy"]])
    np.testing.assert_allclose(found, expected, atol=0.35)


def test_downscale_scales_the_intrinsics(tmp_path):
    scene = _scene(tmp_path / "src")
    info = prepare_dataset(scene, tmp_path / "ds", max_size=24)
    doc = json.loads(info.transforms.read_text())
    assert (doc["w"], doc["h"]) == (24, 18) and info.sizes == [(24, 18)]
    np.testing.assert_allclose([doc["fl_x"], doc["fl_y"], doc["cx"], doc["cy"]], [20.0, 20.5, 12.25, 8.75])
    assert cv2.imread(str(tmp_path / "ds" / doc["frames"][0]["file_path"])).shape == (18, 24, 3)


def test_alpha_goes_onto_white_and_marks_the_background(tmp_path):
    def rgba(i):
        image = np.zeros((H, W, 4), np.uint8)
        image[10:20, 10:30] = (0, 0, 200, 255)  # an opaque red block on a transparent background
        return image

    scene = _scene(tmp_path / "src", pixels=rgba)
    info = prepare_dataset(scene, tmp_path / "ds")
    assert info.background == "white" and info.had_alpha
    out = cv2.imread(str(tmp_path / "ds" / "images" / "im0.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (H, W, 3)
    assert np.all(out[0, 0] == 255) and np.all(out[15, 15] == (0, 0, 200))


def test_background_detection_on_opaque_images(tmp_path):
    def on_white(i):
        image = np.full((H, W, 3), 255, np.uint8)
        image[12:24, 12:36] = 30
        return image

    assert prepare_dataset(_scene(tmp_path / "w", pixels=on_white), tmp_path / "dw").background == "white"
    assert prepare_dataset(_scene(tmp_path / "d"), tmp_path / "dd").background == "scene"


def test_bounds_from_sparse_points(tmp_path):
    scene = _scene(tmp_path / "src")
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(200, 3)) * 0.5 + np.array([1.0, -2.0, 0.5])
    xyz[:5] = 1e4  # outliers must not move the centre or blow up the radius
    ids = np.arange(1, 201)
    scene.set_points(Points3D.from_tracks(ids, xyz, np.zeros((200, 3), np.uint8), np.zeros(200),
                                          [[] for _ in ids]))
    info = prepare_dataset(scene, tmp_path / "ds")
    bounds = json.loads(info.transforms.read_text())["parallax_bounds"]
    np.testing.assert_allclose(bounds["center"], np.median(xyz, axis=0))
    assert 0.5 < bounds["radius"] < 2.0 and bounds["points"] == 200
    assert "parallax_bounds" not in json.loads(prepare_dataset(_scene(tmp_path / "s2"), tmp_path / "d2")
                                               .transforms.read_text())


def test_held_out_views_follow_the_nerf_synthetic_protocol(tmp_path):
    assert held_out_indices(100) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert held_out_indices(4) == [0]
    info = prepare_dataset(_scene(tmp_path / "src", views=12), tmp_path / "ds")
    doc = json.loads(info.transforms.read_text())
    assert doc["val_filenames"] == ["images/im5.png"] and "images/im5.png" not in doc["train_filenames"]
    assert len(doc["train_filenames"]) == 11


def test_a_transforms_json_is_a_source(tmp_path):
    from scene.io.nerfstudio import write_transforms

    scene = _scene(tmp_path / "src", views=3)
    source = write_transforms(scene, tmp_path / "src" / "transforms.json")
    info = prepare_dataset(source, tmp_path / "ds")
    back = read_transforms(info.transforms)
    for image in back.images.values():
        original = scene.images[image.image_id]
        np.testing.assert_allclose(image.cam_from_world.translation, original.cam_from_world.translation, atol=1e-9)
    with pytest.raises(Exception, match="not a Parallax project"):
        prepare_dataset(tmp_path / "src" / "im0.png", tmp_path / "ds2")
