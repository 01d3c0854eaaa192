"""Calibration files, EXIF intrinsics, the resolve_intrinsics priority and add_source_to_scene."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound
from scene.io.calibration import (add_source_to_scene, camera_from_exif, load_calibration, resolve_intrinsics,
                                  resolve_intrinsics_with_origin)
from scene.io.sources import open_source
from scene.model import Scene
from scene.progress import Cancelled, RecordingProgress

KITTI_CALIB = ("P0: 7.070912e+02 0.0 6.018873e+02 0.0 0.0 7.070912e+02 1.831104e+02 0.0 0.0 0.0 1.0 0.0\n"
               "P1: 7.070912e+02 0.0 6.018873e+02 -3.798145e+02 0.0 7.070912e+02 1.831104e+02 0.0 0.0 0.0 1.0 0.0\n")
EUROC_SENSOR = """%YAML:1.0
# General sensor definitions.
sensor_type: camera
T_BS:
  cols: 4
  rows: 4
  data: [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
rate_hz: 20
resolution: [752, 480]
camera_model: pinhole
intrinsics: [458.654, 457.296, 367.215, 248.375] #fu, fv, cu, cv
distortion_model: radial-tangential
distortion_coefficients: [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05]
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _params(camera: Camera) -> list[float]:
    return camera.params.tolist()


# --- file formats ---------------------------------------------------------------------------

def test_kitti_calib_txt_p0(tmp_path):
    camera = load_calibration(_write(tmp_path / "calib.txt", KITTI_CALIB), image_size=(1226, 370))
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (1226, 370)
    assert _params(camera) == [707.0912, 707.0912, 601.8873, 183.1104]
    assert camera.intrinsics_source == "calib"


def test_kitti_calib_without_image_size_is_refused(tmp_path):
    with pytest.raises(CorruptInput, match="calib.txt.*no image resolution"):
        load_calibration(_write(tmp_path / "calib.txt", KITTI_CALIB))


def test_yaml_fx_fy_cx_cy_without_distortion_is_pinhole(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: 500\nfy: 510\ncx: 320\ncy: 240\nwidth: 640\nheight: 480\nname: x\n")
    camera = load_calibration(path)
    assert camera.model == "PINHOLE" and _params(camera) == [500, 510, 320, 240] and camera.width == 640


def test_yaml_all_zero_distortion_is_pinhole(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: 500\nfy: 500\ncx: 320\ncy: 240\nk1: 0\nk2: 0\np1: 0\np2: 0\nk3: 0\n")
    assert load_calibration(path, image_size=(640, 480)).model == "PINHOLE"


def test_json_with_k1_k2_p1_p2_is_opencv(tmp_path):
    data = {"fx": 500, "fy": 501, "cx": 320, "cy": 240, "k1": -0.1, "k2": 0.01, "p1": 0.001, "width": 640,
            "height": 480, "comment": "ignored"}
    camera = load_calibration(_write(tmp_path / "cam.json", json.dumps(data)))
    assert camera.model == "OPENCV" and _params(camera) == [500, 501, 320, 240, -0.1, 0.01, 0.001, 0.0]


def test_nonzero_k3_gives_full_opencv(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: 500\nfy: 500\ncx: 320\ncy: 240\nk1: -0.1\nk3: 0.02\n")
    camera = load_calibration(path, image_size=(640, 480))
    assert camera.model == "FULL_OPENCV"
    assert _params(camera) == [500, 500, 320, 240, -0.1, 0, 0, 0, 0.02, 0, 0, 0]


def test_nerfstudio_style_aliases(tmp_path):
    data = {"fl_x": 1375.52, "fl_y": 1374.49, "cx": 554.558, "cy": 965.268, "w": 1080, "h": 1920, "frames": []}
    camera = load_calibration(_write(tmp_path / "transforms.json", json.dumps(data)))
    assert camera.model == "PINHOLE" and _params(camera) == [1375.52, 1374.49, 554.558, 965.268]
    assert (camera.width, camera.height) == (1080, 1920)


def test_orbslam_camera_prefixed_keys(tmp_path):
    text = "%YAML:1.0\nCamera.fx: 535.4\nCamera.fy: 539.2\nCamera.cx: 320.1\nCamera.cy: 247.6\nCamera.k1: 0.0\n"
    camera = load_calibration(_write(tmp_path / "TUM3.yaml", text), image_size=(640, 480))
    assert camera.model == "PINHOLE" and _params(camera) == [535.4, 539.2, 320.1, 247.6]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_colmap_style_model_params(tmp_path, suffix):
    data = {"model": "SIMPLE_RADIAL", "width": 800, "height": 600, "params": [700.0, 400.0, 300.0, 0.05]}
    text = json.dumps(data) if suffix == ".json" else "\n".join(f"{k}: {v}" for k, v in data.items())
    camera = load_calibration(_write(tmp_path / f"cam{suffix}", text))
    assert camera.model == "SIMPLE_RADIAL" and _params(camera) == [700, 400, 300, 0.05]
    assert (camera.width, camera.height) == (800, 600)


def test_colmap_cameras_txt_first_camera(tmp_path):
    text = ("# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
            "# Number of cameras: 2\n1 OPENCV 752 480 458.6 457.3 367.2 248.4 -0.28 0.07 0.0002 0.00002\n"
            "2 PINHOLE 640 480 500 500 320 240\n")
    camera = load_calibration(_write(tmp_path / "cameras.txt", text))
    assert camera.model == "OPENCV" and camera.width == 752 and camera.intrinsics_source == "calib"
    assert _params(camera) == [458.6, 457.3, 367.2, 248.4, -0.28, 0.07, 0.0002, 0.00002]


def test_euroc_sensor_yaml(tmp_path):
    camera = load_calibration(_write(tmp_path / "sensor.yaml", EUROC_SENSOR))
    assert camera.model == "OPENCV" and (camera.width, camera.height) == (752, 480)
    assert _params(camera) == [458.654, 457.296, 367.215, 248.375, -0.28340811, 0.07395907, 0.00019359,
                               1.76187114e-05]
    assert camera.intrinsics_source == "sensor_yaml"


def test_euroc_equidistant_is_opencv_fisheye(tmp_path):
    text = EUROC_SENSOR.replace("radial-tangential", "equidistant")
    assert load_calibration(_write(tmp_path / "sensor.yaml", text)).model == "OPENCV_FISHEYE"


def test_opencv_filestorage_yaml(tmp_path):
    path = tmp_path / "opencv.yaml"
    k = np.array([[600.0, 0, 330.0], [0, 610.0, 250.0], [0, 0, 1]])
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", 640)
    fs.write("image_height", 480)
    fs.write("camera_matrix", k)
    fs.write("distortion_coefficients", np.array([[-0.2, 0.05, 0.001, -0.002, 0.0]]))
    fs.release()
    assert path.read_text().startswith("%YAML:1.0")
    camera = load_calibration(path)
    assert camera.model == "OPENCV" and (camera.width, camera.height) == (640, 480)
    assert _params(camera) == [600, 610, 330, 250, -0.2, 0.05, 0.001, -0.002]


def test_plain_3x3_k_matrix(tmp_path):
    path = _write(tmp_path / "K.txt", "2905.88 0 1416 \n0 2905.88 1064\n0 0 1")
    camera = load_calibration(path, image_size=(2832, 2128))
    assert camera.model == "PINHOLE" and _params(camera) == [2905.88, 2905.88, 1416, 1064]


def test_calibration_is_scaled_to_a_uniformly_scaled_image_size(tmp_path):
    camera = load_calibration(_write(tmp_path / "sensor.yaml", EUROC_SENSOR), image_size=(376, 240))
    assert (camera.width, camera.height) == (376, 240)
    assert camera.params[:4] == pytest.approx([458.654 / 2, 457.296 / 2, 367.215 / 2, 248.375 / 2], abs=1e-12)


# --- bad calibration files ------------------------------------------------------------------

def test_missing_calibration_file(tmp_path):
    with pytest.raises(InputNotFound, match="nope.yaml"):
        load_calibration(tmp_path / "nope.yaml")


def test_calibration_missing_fields(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: 500\ncx: 320\nwidth: 640\nheight: 480\n")
    with pytest.raises(CorruptInput, match="cam.yaml.*missing intrinsics fy, cy"):
        load_calibration(path)


def test_calibration_with_nan(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: .nan\nfy: 500\ncx: 320\ncy: 240\nwidth: 640\nheight: 480\n")
    with pytest.raises(CorruptInput, match="cam.yaml.*NaN"):
        load_calibration(path)


def test_calibration_nan_in_json_distortion(tmp_path):
    path = _write(tmp_path / "cam.json", '{"fx": 1, "fy": 1, "cx": 1, "cy": 1, "k1": NaN, "w": 4, "h": 4}')
    with pytest.raises(CorruptInput, match="cam.json.*k1 is NaN"):
        load_calibration(path)


def test_calibration_unknown_format(tmp_path):
    path = _write(tmp_path / "cam.txt", "this is not a calibration\n1 2\n")
    with pytest.raises(CorruptInput, match="cam.txt.*unknown calibration format"):
        load_calibration(path)


def test_calibration_invalid_yaml(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: [1, 2\ncy: :\n")
    with pytest.raises(CorruptInput, match="cam.yaml.*invalid YAML"):
        load_calibration(path)


def test_calibration_unknown_colmap_model(tmp_path):
    path = _write(tmp_path / "cam.json", '{"model": "MAGIC", "width": 4, "height": 4, "params": [1]}')
    with pytest.raises(CorruptInput, match="cam.json.*unknown camera model 'MAGIC'"):
        load_calibration(path)


def test_calibration_wrong_param_count(tmp_path):
    path = _write(tmp_path / "cam.json", '{"model": "PINHOLE", "width": 4, "height": 4, "params": [1, 2]}')
    with pytest.raises(CorruptInput, match="cam.json.*takes 4 parameters"):
        load_calibration(path)


def test_calibration_non_positive_focal(tmp_path):
    path = _write(tmp_path / "cam.yaml", "fx: -5\nfy: 500\ncx: 320\ncy: 240\nwidth: 640\nheight: 480\n")
    with pytest.raises(CorruptInput, match="cam.yaml.*focal length must be positive"):
        load_calibration(path)


def test_calibration_for_a_different_aspect_ratio_is_refused(tmp_path):
    with pytest.raises(CorruptInput, match="sensor.yaml.*752x480.*640x640"):
        load_calibration(_write(tmp_path / "sensor.yaml", EUROC_SENSOR), image_size=(640, 640))


# --- EXIF -----------------------------------------------------------------------------------

def _jpeg_with_exif(path: Path, size=(40, 30), make=None, model=None, focal=None, focal35=None,
                    orientation=None, plane_x_resolution=None, plane_unit=None, pixel_x=None) -> Path:
    exif = PILImage.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if orientation:
        exif[0x0112] = orientation
    details = exif.get_ifd(0x8769)
    if focal is not None:
        details[0x920A] = focal
    if focal35 is not None:
        details[0xA405] = focal35
    if plane_x_resolution is not None:
        details[0xA20E] = plane_x_resolution  # FocalPlaneXResolution
    if plane_unit is not None:
        details[0xA210] = plane_unit  # FocalPlaneResolutionUnit
    if pixel_x is not None:
        details[0xA002] = pixel_x  # PixelXDimension
    PILImage.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, exif=exif)
    return path


def test_exif_35mm_equivalent(tmp_path):
    camera = camera_from_exif(_jpeg_with_exif(tmp_path / "a.jpg", focal=4.0, focal35=28))
    assert camera.model == "SIMPLE_RADIAL" and camera.intrinsics_source == "exif"
    assert _params(camera) == pytest.approx([28 / 36 * 40, 20, 15, 0], abs=1e-12)


def test_exif_sensor_table_beats_35mm_equivalent(tmp_path):
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(2832, 2128), make="EASTMAN KODAK COMPANY",
                           model="KODAK Z612 ZOOM DIGITAL CAMERA", focal=5.85, focal35=35)
    assert camera_from_exif(path).params[0] == pytest.approx(5.85 / 5.76 * 2832, abs=1e-9)


def test_exif_orientation_swaps_width_and_height(tmp_path):
    camera = camera_from_exif(_jpeg_with_exif(tmp_path / "a.jpg", focal35=36, orientation=6))
    assert (camera.width, camera.height) == (30, 40) and camera.params[0] == pytest.approx(40.0)


def test_exif_focal_plane_resolution_in_cm_beats_35mm_equivalent(tmp_path):
    # 640 px at 1000 px/cm: a 6.4 mm wide sensor, so 4 mm is 400 px (the 35 mm tag would give 497.8).
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(640, 480), make="Acme", model="Cam 1", focal=4.0,
                           focal35=28, plane_x_resolution=1000.0, plane_unit=3)
    camera = camera_from_exif(path)
    assert (camera.width, camera.height) == (640, 480)
    assert _params(camera) == pytest.approx([400.0, 320.0, 240.0, 0.0], abs=1e-9)


def test_exif_focal_plane_resolution_defaults_to_inches(tmp_path):
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(640, 480), focal=4.0, focal35=28, plane_x_resolution=2540.0)
    assert camera_from_exif(path).params[0] == pytest.approx(400.0, abs=1e-9)
    path = _jpeg_with_exif(tmp_path / "b.jpg", size=(640, 480), focal=4.0, focal35=28, plane_x_resolution=2540.0,
                           plane_unit=2)
    assert camera_from_exif(path).params[0] == pytest.approx(400.0, abs=1e-9)


def test_exif_focal_plane_resolution_of_a_resized_picture_uses_pixel_x_dimension(tmp_path):
    # Captured 1280 px wide at 2000 px/cm (6.4 mm sensor), stored at 640 px: f = 4 / 6.4 * 640.
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(640, 480), focal=4.0, plane_x_resolution=2000.0,
                           plane_unit=3, pixel_x=1280)
    assert camera_from_exif(path).params[0] == pytest.approx(400.0, abs=1e-9)


def test_exif_focal_plane_resolution_with_rotation(tmp_path):
    # The resolution is along the stored x axis, which is the displayed y axis after a 90 degree turn.
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(640, 480), focal=4.0, plane_x_resolution=1000.0, plane_unit=3,
                           orientation=6)
    camera = camera_from_exif(path)
    assert (camera.width, camera.height) == (480, 640)
    assert _params(camera) == pytest.approx([400.0, 240.0, 320.0, 0.0], abs=1e-9)


def test_exif_sensor_table_beats_focal_plane_resolution(tmp_path):
    path = _jpeg_with_exif(tmp_path / "a.jpg", size=(2832, 2128), make="EASTMAN KODAK COMPANY",
                           model="KODAK Z612 ZOOM DIGITAL CAMERA", focal=5.85, plane_x_resolution=1000.0, plane_unit=3)
    assert camera_from_exif(path).params[0] == pytest.approx(5.85 / 5.76 * 2832, abs=1e-9)


def test_exif_implausible_focal_plane_resolution_falls_back_to_35mm(tmp_path):
    # 40 px at 1000 px/cm would be a 0.4 mm sensor: broken tags, not a camera.
    path = _jpeg_with_exif(tmp_path / "a.jpg", focal=4.0, focal35=28, plane_x_resolution=1000.0, plane_unit=3)
    assert camera_from_exif(path).params[0] == pytest.approx(28 / 36 * 40, abs=1e-12)
    unitless = _jpeg_with_exif(tmp_path / "b.jpg", size=(640, 480), focal=4.0, focal35=28,
                               plane_x_resolution=1000.0, plane_unit=1)
    assert camera_from_exif(unitless).params[0] == pytest.approx(28 / 36 * 640, abs=1e-9)


def test_exif_without_focal_is_none(tmp_path):
    assert camera_from_exif(_jpeg_with_exif(tmp_path / "a.jpg", make="Canon", model="Canon PowerShot A10")) is None
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert camera_from_exif(tmp_path / "b.jpg") is None


# --- resolve_intrinsics priority and scaling ---------------------------------------------------

def _kitti_folder(root: Path, size=(200, 100)) -> Path:
    (root / "image_0").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "image_0" / f"{i:06d}.png"), np.full((size[1], size[0]), 50 * i, np.uint8))
    (root / "times.txt").write_text("0.0\n0.1\n")
    (root / "calib.txt").write_text("P0: 150 0 100 0 0 150 50 0 0 0 1 0\n")
    return root


def test_resolve_prefers_explicit_calib_over_layout_file(tmp_path):
    source = open_source(_kitti_folder(tmp_path / "seq"))
    calib = _write(tmp_path / "mine.yaml", "fx: 170\nfy: 171\ncx: 99\ncy: 49\n")
    camera = resolve_intrinsics(source, calib_path=calib)
    assert _params(camera) == [170, 171, 99, 49] and camera.intrinsics_source == "calib"


def test_resolve_uses_layout_file(tmp_path):
    camera = resolve_intrinsics(open_source(_kitti_folder(tmp_path)))
    assert camera.model == "PINHOLE" and _params(camera) == [150, 150, 100, 50] and camera.width == 200


def test_resolve_scales_original_intrinsics_to_max_size(tmp_path):
    source = open_source(_kitti_folder(tmp_path), max_size=100)
    assert source.size == (100, 50)
    camera = resolve_intrinsics(source)
    assert (camera.width, camera.height) == (100, 50)
    assert _params(camera) == [75, 75, 50, 25]
    explicit = resolve_intrinsics(source, processed_size=(50, 25))
    assert _params(explicit) == [37.5, 37.5, 25, 12.5]


def test_resolve_uses_exif_then_guess(tmp_path):
    (tmp_path / "exif").mkdir()
    _jpeg_with_exif(tmp_path / "exif" / "a.jpg", focal35=36)
    source = open_source(tmp_path / "exif")
    camera = resolve_intrinsics(source)
    assert camera.intrinsics_source == "exif" and camera.params[0] == pytest.approx(40.0)
    assert resolve_intrinsics_with_origin(source) == (camera, "the EXIF of a.jpg")
    (tmp_path / "plain").mkdir()
    cv2.imwrite(str(tmp_path / "plain" / "a.png"), np.zeros((30, 40, 3), np.uint8))
    guess = resolve_intrinsics(open_source(tmp_path / "plain", max_size=20))
    assert guess.is_guess and guess.intrinsics_source == "guess"
    assert (guess.width, guess.height) == (20, 15) and guess.params[0] == pytest.approx(1.2 * 40 / 2)


def test_resolve_uses_calibration_file_beside_images(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    _write(tmp_path / "K.txt", "50 0 20\n0 50 15\n0 0 1\n")
    camera = resolve_intrinsics(open_source(tmp_path))
    assert camera.intrinsics_source == "calib" and _params(camera) == [50, 50, 20, 15]


def _png(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))


def test_resolve_uses_nerf_synthetic_transforms_beside_the_folder(tmp_path):
    # NeRF synthetic: transforms_train.json beside train/, frames "./train/r_0" without suffix, only camera_angle_x.
    for i in range(2):
        _png(tmp_path / "train" / f"r_{i}.png")
    frames = [{"file_path": f"./train/r_{i}", "transform_matrix": np.eye(4).tolist()} for i in range(2)]
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.6911112, "frames": frames}))
    camera = resolve_intrinsics(open_source(tmp_path / "train"))
    fx = 0.5 * 40 / np.tan(0.5 * 0.6911112)
    assert camera.intrinsics_source == "calib" and camera.model == "PINHOLE"
    assert camera.params.tolist() == pytest.approx([fx, fx, 20, 15])


def test_resolve_uses_instant_ngp_transforms_of_the_images_folder(tmp_path):
    # instant-ngp / nerfstudio: transforms.json at the root, images/ below; opening the root opens images/.
    for i in range(2):
        _png(tmp_path / "images" / f"{i:04d}.jpg", (80, 60))
    doc = {"fl_x": 70.0, "fl_y": 71.0, "cx": 41.0, "cy": 29.0, "w": 80, "h": 60, "k1": 0.05, "k2": -0.08,
           "p1": 0.001, "p2": 0.0002,
           "frames": [{"file_path": f"images/{i:04d}.jpg", "transform_matrix": np.eye(4).tolist()} for i in range(2)]}
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    source = open_source(tmp_path / "images", max_size=40)
    camera = resolve_intrinsics(source)
    assert resolve_intrinsics_with_origin(source) == (camera, str(tmp_path / "transforms.json"))
    assert camera.model == "OPENCV" and camera.intrinsics_source == "calib"
    assert camera.params.tolist() == pytest.approx([35.0, 35.5, 20.5, 14.5, 0.05, -0.08, 0.001, 0.0002])


def test_transforms_of_other_images_or_without_intrinsics_are_not_a_calibration(tmp_path):
    _png(tmp_path / "images" / "a.png")
    other = {"fl_x": 70.0, "w": 40, "h": 30, "frames": [{"file_path": "elsewhere/a.png", "transform_matrix": []}]}
    (tmp_path / "transforms.json").write_text(json.dumps(other))
    per_frame = {"frames": [{"file_path": "images/a.png", "fl_x": 70.0, "transform_matrix": []}]}
    (tmp_path / "transforms_per_frame.json").write_text(json.dumps(per_frame))
    (tmp_path / "transforms_broken.json").write_text("{ not json")
    assert resolve_intrinsics(open_source(tmp_path / "images")).is_guess


def test_transforms_json_as_calib_file_reads_its_conventions(tmp_path):
    # camera_angle_y gives fy; the image size fills in absent w / h.
    doc = {"camera_angle_x": 1.0, "camera_angle_y": 0.8, "frames": []}
    path = _write(tmp_path / "transforms.json", json.dumps(doc))
    camera = load_calibration(path, image_size=(40, 30))
    assert camera.params.tolist() == pytest.approx([20 / np.tan(0.5), 15 / np.tan(0.4), 20, 15])
    with pytest.raises(CorruptInput, match=r"t2\.json: intrinsics missing.*fl_x"):
        load_calibration(_write(tmp_path / "t2.json", json.dumps({"w": 40, "h": 30, "frames": []})))


def _tum_folder(root: Path, size=(320, 240)) -> Path:
    _png(root / "rgb" / "1.000000.png", size)
    (root / "rgb.txt").write_text("# timestamp filename\n1.000000 rgb/1.000000.png\n")
    return root


@pytest.mark.parametrize("name, number", [("rgbd_dataset_freiburg1_xyz", 1), ("rgbd_dataset_freiburg2_desk", 2),
                                          ("tum_fr3_long_office_1hz", 3), ("TUM-FR_2", 2), ("fr4_office", None),
                                          ("frame3", None), ("fr12", None), ("xfr3", None)])
def test_tum_folder_name_names_its_freiburg_camera(name, number):
    from scene.io.published_intrinsics import tum_freiburg_camera

    assert tum_freiburg_camera(Path("/data") / name) == number


def test_resolve_uses_tum_published_intrinsics_scaled_to_the_frames(tmp_path, caplog):
    source = open_source(_tum_folder(tmp_path / "rgbd_dataset_freiburg1_xyz"))
    with caplog.at_level("INFO"):
        camera = resolve_intrinsics(source)
    assert "Freiburg 1" in caplog.text and camera.intrinsics_source == "calib" and camera.model == "FULL_OPENCV"
    origin = "TUM RGB-D Freiburg 1 colour camera, published intrinsics"
    assert resolve_intrinsics_with_origin(source) == (camera, origin)
    assert (camera.width, camera.height) == (320, 240)
    assert camera.params.tolist() == pytest.approx([517.306408 / 2, 516.469215 / 2, 318.643040 / 2, 255.313989 / 2,
                                                    0.262383, -0.953104, -0.005358, 0.002628, 1.163314, 0, 0, 0])
    fr3 = resolve_intrinsics(open_source(_tum_folder(tmp_path / "tum_fr3", (640, 480))))
    assert fr3.model == "PINHOLE" and fr3.params.tolist() == [535.4, 539.2, 320.1, 247.6]


def test_tum_calibration_file_wins_and_other_sizes_are_not_fitted(tmp_path, caplog):
    root = _tum_folder(tmp_path / "rgbd_dataset_freiburg2_desk")
    _write(root / "calib.yaml", "fx: 50\nfy: 50\ncx: 160\ncy: 120\n")
    assert _params(resolve_intrinsics(open_source(root))) == [50, 50, 160, 120]
    odd = _tum_folder(tmp_path / "rgbd_dataset_freiburg2_pano", (400, 240))
    with caplog.at_level("WARNING"):
        camera = resolve_intrinsics(open_source(odd))
    assert camera.is_guess and "not the frames' 400x240" in caplog.text
    assert resolve_intrinsics_with_origin(open_source(odd))[1].startswith("a guess")
    assert resolve_intrinsics(open_source(_tum_folder(tmp_path / "office"))).is_guess


def test_resolve_with_missing_calib_path(tmp_path):
    with pytest.raises(InputNotFound, match="missing.yaml"):
        resolve_intrinsics(open_source(_kitti_folder(tmp_path)), calib_path=tmp_path / "missing.yaml")


# --- add_source_to_scene ----------------------------------------------------------------------

def test_add_source_to_scene(tmp_path):
    source = open_source(_kitti_folder(tmp_path), max_size=100)
    camera = resolve_intrinsics(source)
    scene = Scene()
    ids = add_source_to_scene(scene, source, camera)
    assert ids == [1, 2] and scene.cameras == {1: camera}
    image = scene.images[2]
    assert image.name == "000001.png" and image.camera_id == 1 and image.cam_from_world is None
    assert image.source.path == str(tmp_path / "image_0" / "000001.png") and image.source.timestamp == 0.1
    assert scene.sources == [{"path": str(tmp_path), "layout": "kitti", "frames": 2, "width": 100, "height": 50}]
    # A second source with other intrinsics gets its own camera id; the same camera is reused.
    other = resolve_intrinsics(source, processed_size=(50, 25))
    more = add_source_to_scene(scene, source, other)
    assert more == [3, 4] and scene.images[3].camera_id == 2 and scene.cameras[2].params[0] == 37.5
    again = add_source_to_scene(scene, source, camera)
    assert len(scene.cameras) == 2 and scene.images[again[0]].camera_id == 1


def test_add_video_source_to_scene(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    source = open_source(path)
    scene = Scene()
    ids = add_source_to_scene(scene, source, resolve_intrinsics(source))
    assert [scene.images[i].name for i in ids] == ["clip_000000", "clip_000001", "clip_000002"]
    assert [scene.images[i].source.frame_index for i in ids] == [0, 1, 2]
    assert [scene.images[i].source.timestamp for i in ids] == pytest.approx([0.0, 0.2, 0.4])
    assert scene.cameras[1].is_guess


def _image_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), np.full((6, 8), i, np.uint8))
    return folder


def test_add_source_to_scene_reports_scan_progress(tmp_path):
    source = open_source(_image_folder(tmp_path, 250))
    progress = RecordingProgress()
    ids = add_source_to_scene(Scene(), source, resolve_intrinsics(source), progress=progress)
    assert len(ids) == 250
    # Every 2 frames (1% of 250) while scanning, then the end.
    assert progress.reports[:2] == [("scan frames", 0, 250, "f000.png"), ("scan frames", 2, 250, "f002.png")]
    assert [r[1] for r in progress.reports] == [*range(0, 250, 2), 250]
    assert progress.reports[-1][:3] == ("scan frames", 250, 250)


def test_add_source_to_scene_cancelled_leaves_the_scene_unchanged(tmp_path):
    source = open_source(_image_folder(tmp_path, 20))
    camera = resolve_intrinsics(source)
    scene = Scene()
    progress = RecordingProgress(stop_after=3)
    with pytest.raises(Cancelled, match=str(tmp_path)):
        add_source_to_scene(scene, source, camera, progress=progress)
    assert len(progress.reports) == 3  # stopped at the next step boundary
    assert scene.cameras == {} and scene.images == {} and scene.sources == []
    assert add_source_to_scene(scene, source, camera) == list(range(1, 21))  # a later call scans again


def test_add_video_source_to_scene_cancelled_during_the_frame_walk(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (16, 12))
    for i in range(120):
        writer.write(np.full((12, 16, 3), i, np.uint8))
    writer.release()
    source = open_source(path)
    scene = Scene()
    progress = RecordingProgress(stop_after=10)
    with pytest.raises(Cancelled, match="clip.avi"):
        add_source_to_scene(scene, source, resolve_intrinsics(source), progress=progress)
    assert progress.reports[9] == ("scan frames", 9, 120, "clip_000009")
    assert scene.cameras == {} and scene.images == {} and scene.sources == []
