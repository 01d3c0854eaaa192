"""Every layout on the real data sets in ../shared/data (skipped when absent). Reads only a few frames."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from scene.io.calibration import camera_from_exif, resolve_intrinsics
from scene.io.sources import open_source

pytestmark = pytest.mark.data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def dataset(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data set {name!r} not found at {path} (../shared/data is absent)")
    return path


def first_frames(source, n: int):
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


def test_kitti07(tmp_path):
    root = dataset("kitti07_f000_079")
    source = open_source(root)
    assert source.layout == "kitti" and len(source) == 80 and source.size == (1226, 370)
    times = np.loadtxt(root / "times.txt")
    assert [r.timestamp for r in source.frame_refs()] == times.tolist()
    frames = first_frames(source, 2)
    assert frames[1].timestamp == pytest.approx(1.038752e-01, abs=1e-12)
    assert frames[0].image.shape == (370, 1226) and frames[0].image.dtype == np.uint8
    last = source.read(79)
    assert last.name == "000079.png" and last.timestamp == times[79]
    assert source.intrinsics_hint() == root / "calib.txt"
    assert source.ground_truth_path() == root / "poses" / "07.txt"
    camera = resolve_intrinsics(source)
    assert camera.model == "PINHOLE" and camera.params.tolist() == [707.0912, 707.0912, 601.8873, 183.1104]
    assert open_source(root / "image_0").layout == "kitti"


def test_kitti07_downscaled_intrinsics():
    source = open_source(dataset("kitti07_f000_079"), max_size=613)
    assert source.size == (613, 185) and source.read(0).image.shape == (185, 613)
    camera = resolve_intrinsics(source)
    assert (camera.width, camera.height) == (613, 185)
    assert camera.params == pytest.approx([707.0912 / 2, 707.0912 * 185 / 370, 601.8873 / 2, 183.1104 / 2], abs=1e-9)


def test_tum_fr3_long_office():
    root = dataset("tum_fr3_long_office_1hz")
    source = open_source(root)
    assert source.layout == "tum" and len(source) == 17 and source.size == (640, 480)
    frames = first_frames(source, 2)
    assert frames[0].timestamp == 1341847980.722988 and frames[1].timestamp == 1341847981.726650
    assert frames[0].name == "rgb/1341847980.722988.png" and frames[0].image.shape == (480, 640, 3)
    assert source.frame_refs()[-1].timestamp == 1341847996.874766
    assert source.ground_truth_path() == root / "groundtruth.txt"
    # The folder names its camera (fr3): the intrinsics its README gives, published by TUM.
    camera = resolve_intrinsics(source)
    assert camera.model == "PINHOLE" and camera.params.tolist() == [535.4, 539.2, 320.1, 247.6]


@pytest.mark.parametrize("sub", ["", "mav0", "mav0/cam0"])
def test_euroc_v101_micro(sub):
    root = dataset("euroc_v101_micro")
    source = open_source(root / sub if sub else root)
    assert source.layout == "euroc" and len(source) == 95 and source.size == (752, 480)
    refs = source.frame_refs()
    assert refs[0].timestamp == 1403715273.262142976
    assert refs[-1].timestamp == pytest.approx(1403715277.962142976, abs=1e-6)
    assert np.diff([r.timestamp for r in refs]) == pytest.approx(0.05, abs=1e-6)
    frame = source.read(0)
    assert frame.name == "1403715273262142976.png" and frame.image.shape == (480, 752)
    assert source.intrinsics_hint() == root / "mav0" / "cam0" / "sensor.yaml"
    assert source.ground_truth_path() == root / "groundtruth" / "V1_01_easy_vicon2gt.txt"
    camera = resolve_intrinsics(source)
    assert camera.model == "OPENCV" and camera.intrinsics_source == "sensor_yaml"
    assert camera.params.tolist() == [458.654, 457.296, 367.215, 248.375, -0.28340811, 0.07395907, 0.00019359,
                                      1.76187114e-05]


def test_sceaux_castle_skips_k_txt(caplog):
    root = dataset("sceaux_castle") / "images"
    with caplog.at_level(logging.WARNING):
        source = open_source(root, max_size=708)
    assert "K.txt" in caplog.text
    assert source.layout == "images" and len(source) == 11
    assert source.frame_names()[:2] == ["100_7100.JPG", "100_7101.JPG"]
    assert source.original_size == (2832, 2128) and source.size == (708, 532)
    frame = source.read(10)
    assert frame.name == "100_7110.JPG" and frame.image.shape == (532, 708, 3) and frame.scale == 0.25
    # K.txt beside the images is the folder's own calibration; scaled to the processed size.
    camera = resolve_intrinsics(source)
    assert camera.params == pytest.approx([2905.88 / 4, 2905.88 / 4, 1416 / 4, 1064 / 4], abs=1e-9)


def test_sceaux_castle_exif_focal_within_one_percent():
    camera = camera_from_exif(dataset("sceaux_castle") / "images" / "100_7100.JPG")
    assert (camera.width, camera.height) == (2832, 2128)
    assert abs(camera.params[0] / 2905.88 - 1) < 0.011


def test_instant_ngp_fox_images():
    root = dataset("instant_ngp_fox") / "images"
    source = open_source(root, max_size=480)
    assert source.layout == "images" and len(source) == 67
    assert source.original_size == (1080, 1920) and source.size == (270, 480)
    frames = first_frames(source, 2)
    assert [f.name for f in frames] == ["0001.jpg", "0002.jpg"] and frames[0].image.shape == (480, 270, 3)
    # transforms.json above images/ calibrates them (instant-ngp layout); scaled to the processed size.
    camera = resolve_intrinsics(source)
    assert not camera.is_guess and (camera.width, camera.height) == (270, 480) and camera.model == "OPENCV"
    assert camera.params[:4] == pytest.approx([1375.52 / 4, 1374.49 / 4, 554.558 / 4, 965.268 / 4])
