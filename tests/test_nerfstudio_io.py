"""nerfstudio transforms.json: the OpenGL <-> OpenCV pair, real files, round trips, bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound, UnsupportedFormat
from scene.io.nerfstudio import (cam_from_world_from_opengl, opengl_world_from_cam, read_transforms,
                                 write_transforms)
from scene.model import Image, Scene
from scene.rigid import Rigid3d

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _data(name: str) -> Path:
    if not (DATA / name).exists():
        pytest.skip(f"real data set {name!r} not found at {DATA / name} (../shared/data is absent)")
    return DATA / name


# --- the conversion pair on hand-worked examples ------------------------------------------------

def test_identity_opengl_camera_looks_down_minus_z():
    """OpenGL identity camera-to-world: it looks along world -z, its y is world +y (up)."""
    cam_from_world = cam_from_world_from_opengl(np.eye(4))
    np.testing.assert_array_equal(cam_from_world.rotation, np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_array_equal(cam_from_world.translation, np.zeros(3))
    # A point 5 m in front of the OpenGL camera (world -z) is at OpenCV depth +5 (looking along +z).
    np.testing.assert_array_equal(cam_from_world.apply([[0.0, 0.0, -5.0]]), [[0.0, 0.0, 5.0]])
    # World up (+y) is image up, i.e. OpenCV -y.
    np.testing.assert_array_equal(cam_from_world.apply([[0.0, 1.0, -5.0]]), [[0.0, -1.0, 5.0]])


def test_rotated_translated_camera_by_hand():
    """OpenGL camera at (1, 2, 3), turned +90 deg about world y: its -z axis points along world -x."""
    gl = np.array([[0.0, 0.0, 1.0, 1.0],
                   [0.0, 1.0, 0.0, 2.0],
                   [-1.0, 0.0, 0.0, 3.0],
                   [0.0, 0.0, 0.0, 1.0]])
    cam_from_world = cam_from_world_from_opengl(gl)
    np.testing.assert_allclose(cam_from_world.center(), [1.0, 2.0, 3.0], atol=1e-15)
    # 4 m along world -x from the centre: straight ahead, OpenCV (0, 0, 4).
    np.testing.assert_allclose(cam_from_world.apply([[-3.0, 2.0, 3.0]]), [[0.0, 0.0, 4.0]], atol=1e-15)
    # The camera's x axis (right, the same in both conventions) is world -z.
    np.testing.assert_allclose(cam_from_world.apply([[1.0, 2.0, 2.0]]), [[1.0, 0.0, 0.0]], atol=1e-15)
    # World +y is up: OpenCV -y.
    np.testing.assert_allclose(cam_from_world.apply([[1.0, 3.0, 3.0]]), [[0.0, -1.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(opengl_world_from_cam(cam_from_world), gl, atol=1e-15)


def test_conversion_pair_inverts_random_poses():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        pose = Rigid3d(q / np.linalg.norm(q), rng.normal(size=3) * 10)
        back = cam_from_world_from_opengl(opengl_world_from_cam(pose))
        np.testing.assert_allclose(back.matrix(), pose.matrix(), atol=1e-13)


@pytest.mark.parametrize("matrix, message", [
    (np.diag([2.0, 2.0, 2.0, 1.0]), "not rigid"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "not rigid"),  # a reflection: det -1
    (np.eye(3), "shape"),
    (np.full((4, 4), np.nan), "NaN"),
])
def test_conversion_rejects_bad_matrices(matrix, message):
    with pytest.raises(ValueError, match=message):
        cam_from_world_from_opengl(matrix)


# --- real files --------------------------------------------------------------------------------

def test_instant_ngp_fox():
    folder = _data("instant_ngp_fox")
    doc = json.loads((folder / "transforms.json").read_text())
    scene = read_transforms(folder / "transforms.json")
    assert len(scene.cameras) == 1 and len(scene.images) == len(doc["frames"]) == 67
    cam = scene.cameras[1]
    assert (cam.model, cam.width, cam.height) == ("OPENCV", 1080, 1920)
    assert cam.params.tolist() == [1375.52, 1374.49, 554.558, 965.268, 0.0578421, -0.0805099, -0.000980296,
                                   0.00015575]
    assert cam.intrinsics_source == "transforms"
    for im, frame in zip(scene.images.values(), doc["frames"]):
        assert im.name == frame["file_path"]
        assert Path(im.source.path) == folder / frame["file_path"] and Path(im.source.path).is_file()
        np.testing.assert_allclose(opengl_world_from_cam(im.cam_from_world), frame["transform_matrix"], atol=5e-6)


def test_nerf_synthetic_lego_focal_from_camera_angle():
    folder = _data("nerf_synthetic_lego_train")
    doc = json.loads((folder / "transforms_train.json").read_text())
    scene = read_transforms(folder / "transforms_train.json")
    cam = scene.cameras[1]
    focal = 0.5 * 800 / math.tan(0.5 * doc["camera_angle_x"])  # 800 px measured on ./train/r_0.png
    assert (cam.model, cam.width, cam.height) == ("PINHOLE", 800, 800)
    assert cam.params.tolist() == [focal, focal, 400.0, 400.0]
    assert abs(focal - 1111.111) < 1e-3
    assert len(scene.images) == 100 and len(scene.cameras) == 1
    first = scene.images[1]
    assert first.name == "./train/r_0" and Path(first.source.path) == folder / "train" / "r_0.png"
    np.testing.assert_allclose(opengl_world_from_cam(first.cam_from_world), doc["frames"][0]["transform_matrix"],
                               atol=5e-6)


def test_real_file_round_trip(tmp_path):
    scene = read_transforms(_data("instant_ngp_fox") / "transforms.json")
    write_transforms(scene, tmp_path / "transforms.json")
    _assert_same(scene, read_transforms(tmp_path / "transforms.json"))


# --- round trips -------------------------------------------------------------------------------

def _scene(per_frame: bool) -> Scene:
    rng = np.random.default_rng(7)
    scene = Scene()
    scene.add_camera(Camera(1, "OPENCV", 640, 480, [500.1, 499.9, 320.25, 240.125, -0.1, 0.02, 1e-3, -1e-4]))
    if per_frame:
        scene.add_camera(Camera(2, "OPENCV", 800, 600, [700.0 + 1 / 3, 701.0, 400.0, 300.0, 0.0, 0.0, 0.0, 0.0]))
    images = []
    for i in range(1, 7):
        q = rng.normal(size=4)
        images.append(Image(i * 3, f"images/frame_{i:05d}.jpg", 2 if per_frame and i % 2 else 1,
                            Rigid3d(q / np.linalg.norm(q), rng.normal(size=3))))
    images.append(Image(99, "images/unposed.jpg", 1, None))
    scene.add_images(images)
    return scene


def _assert_same(a: Scene, b: Scene) -> None:
    registered = [im for im in a.images.values() if im.registered]
    assert [im.image_id for im in registered] == list(b.images)
    assert len(a.cameras) == len(b.cameras)
    for im in registered:
        other = b.images[im.image_id]
        assert im.name == other.name
        # transforms.json has no camera ids: compare each image's intrinsics, bit-exact.
        ours, theirs = a.cameras[im.camera_id], b.cameras[other.camera_id]
        assert (ours.model, ours.width, ours.height) == (theirs.model, theirs.width, theirs.height)
        assert np.array_equal(ours.params, theirs.params)
        # Poses pass through a 4x4 matrix: equal to a few ulp, not bit-exact.
        np.testing.assert_allclose(other.cam_from_world.matrix(), im.cam_from_world.matrix(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("per_frame", [False, True], ids=["shared-intrinsics", "per-frame-intrinsics"])
def test_write_read_round_trip(tmp_path, per_frame):
    scene = _scene(per_frame)
    write_transforms(scene, tmp_path / "transforms.json")
    doc = json.loads((tmp_path / "transforms.json").read_text())
    assert ("fl_x" in doc) is (not per_frame) and ("fl_x" in doc["frames"][0]) is per_frame
    assert len(doc["frames"]) == 6  # the unposed image is skipped
    loaded = read_transforms(tmp_path / "transforms.json")
    _assert_same(scene, loaded)
    assert Path(loaded.images[3].source.path) == tmp_path / "images" / "frame_00001.jpg"
    assert [p.name for p in tmp_path.iterdir()] == ["transforms.json"]  # no temp file left


def test_applied_transform_is_kept_not_applied(tmp_path):
    applied = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
    matrix = [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.25], [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 1.0]]
    doc = {"fl_x": 100.0, "fl_y": 100.0, "cx": 50.0, "cy": 40.0, "w": 100, "h": 80, "applied_transform": applied,
           "frames": [{"file_path": "a.png", "transform_matrix": matrix}]}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    scene = read_transforms(tmp_path)
    assert scene.metadata["nerfstudio"]["applied_transform"] == applied
    np.testing.assert_array_equal(opengl_world_from_cam(scene.images[1].cam_from_world), matrix)
    write_transforms(scene, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["applied_transform"] == applied


def test_per_frame_intrinsics_override_top_level(tmp_path):
    eye = np.eye(4).tolist()
    doc = {"fl_x": 100.0, "w": 100, "h": 80, "frames": [
        {"file_path": "a.png", "transform_matrix": eye},
        {"file_path": "b.png", "transform_matrix": eye, "fl_x": 120.0, "fl_y": 121.0, "k1": 0.1},
        {"file_path": "c.png", "transform_matrix": eye}]}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    scene = read_transforms(tmp_path / "transforms.json")
    assert [im.camera_id for im in scene.images.values()] == [1, 2, 1]
    assert scene.cameras[1].model == "PINHOLE" and scene.cameras[1].params.tolist() == [100.0, 100.0, 50.0, 40.0]
    assert scene.cameras[2].model == "OPENCV"
    assert scene.cameras[2].params.tolist() == [120.0, 121.0, 50.0, 40.0, 0.1, 0.0, 0.0, 0.0]


# --- bad input -----------------------------------------------------------------------------------

def _write(tmp_path, doc) -> Path:
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _good_frame(name="a.png"):
    return {"file_path": name, "transform_matrix": np.eye(4).tolist()}


INTRINSICS = {"fl_x": 100.0, "fl_y": 100.0, "cx": 50.0, "cy": 40.0, "w": 100, "h": 80}


def test_missing_file_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound):
        read_transforms(tmp_path / "transforms.json")


def test_invalid_json(tmp_path):
    with pytest.raises(CorruptInput, match="invalid JSON at line 1"):
        read_transforms(_write(tmp_path, "{frames: ["))


def test_missing_frames(tmp_path):
    with pytest.raises(CorruptInput, match="'frames' is missing"):
        read_transforms(_write(tmp_path, dict(INTRINSICS)))


def test_missing_transform_matrix(tmp_path):
    doc = dict(INTRINSICS, frames=[_good_frame(), {"file_path": "b.png"}])
    with pytest.raises(CorruptInput, match=r"frame 1 \(b\.png\): required field 'transform_matrix' is missing"):
        read_transforms(_write(tmp_path, doc))


def test_missing_file_path(tmp_path):
    doc = dict(INTRINSICS, frames=[_good_frame(), {"transform_matrix": np.eye(4).tolist()}])
    with pytest.raises(CorruptInput, match=r"frame 1: required field 'file_path' is missing"):
        read_transforms(_write(tmp_path, doc))


def test_missing_intrinsics(tmp_path):
    doc = {"w": 100, "h": 80, "frames": [_good_frame(), _good_frame("b.png")]}
    with pytest.raises(CorruptInput, match=r"frame 0 \(a\.png\): intrinsics missing: neither 'fl_x' nor "
                                           "'camera_angle_x'"):
        read_transforms(_write(tmp_path, doc))


def test_missing_size_and_unreadable_image(tmp_path):
    doc = {"fl_x": 100.0, "frames": [_good_frame()]}
    with pytest.raises(CorruptInput, match=r"'w'/'h' are absent and the image .*a\.png cannot be opened"):
        read_transforms(_write(tmp_path, doc))


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_non_finite_matrix(tmp_path, value):
    text = json.dumps(dict(INTRINSICS, frames=[_good_frame(), _good_frame("b.png")])).replace("1.0", value, 3)
    with pytest.raises(CorruptInput, match=r"frame 0 \(a\.png\): transform_matrix contains NaN or infinity"):
        read_transforms(_write(tmp_path, text))


@pytest.mark.parametrize("value", ["NaN", "-Infinity"])
def test_non_finite_intrinsics(tmp_path, value):
    text = json.dumps(dict(INTRINSICS, frames=[_good_frame()])).replace('"fl_y": 100.0', f'"fl_y": {value}')
    with pytest.raises(CorruptInput, match=r"frame 0 \(a\.png\): 'fl_y' is .*NaN or infinite"):
        read_transforms(_write(tmp_path, text))


def test_non_rigid_matrix(tmp_path):
    scaled = (np.diag([1.0, 1.0, 1.0, 1.0]) * [2.0, 2.0, 2.0, 1.0]).tolist()
    doc = dict(INTRINSICS, frames=[_good_frame(), {"file_path": "b.png", "transform_matrix": scaled}])
    with pytest.raises(CorruptInput, match=r"frame 1 \(b\.png\): transform_matrix is not rigid \(rotation "
                                           "determinant 8"):
        read_transforms(_write(tmp_path, doc))


def test_non_numeric_intrinsic(tmp_path):
    doc = dict(INTRINSICS, frames=[dict(_good_frame(), cx="fifty")])
    with pytest.raises(CorruptInput, match=r"frame 0 \(a\.png\): 'cx' is 'fifty', not a number"):
        read_transforms(_write(tmp_path, doc))


def test_unsupported_camera_model(tmp_path):
    doc = dict(INTRINSICS, camera_model="EQUIRECTANGULAR", frames=[_good_frame()])
    with pytest.raises(UnsupportedFormat, match="EQUIRECTANGULAR"):
        read_transforms(_write(tmp_path, doc))


def test_write_refuses_models_without_nerfstudio_equivalent(tmp_path):
    scene = Scene()
    scene.add_camera(Camera(1, "FOV", 100, 80, [90.0, 90.0, 50.0, 40.0, 0.9]))
    scene.add_images([Image(1, "a.png", 1, Rigid3d())])
    with pytest.raises(UnsupportedFormat, match="FOV"):
        write_transforms(scene, tmp_path / "transforms.json")
    assert not list(tmp_path.iterdir())
