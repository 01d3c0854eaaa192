"""Frame sources on synthetic inputs built in tmp_path: layout detection, order, timestamps, streaming, downscale."""
from __future__ import annotations

import logging
import shutil
import subprocess
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from scene.io.sources import detect_layout, natural_key, open_source, processed_size
from scene.io.sources_video import VideoSource
from scene.model import FrameRef


def pattern(i: int, width: int = 64, height: int = 48, channels: int = 3) -> np.ndarray:
    """A distinct, deterministic image per index."""
    rng = np.random.default_rng(i)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write(path: Path, image: np.ndarray, params=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, list(params)), path
    return path


def make_video(path: Path, n: int, size=(64, 48), fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(n):
        image = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
        cv2.putText(image, str(i), (4, size[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 255), 2)
        writer.write(image)
    writer.release()
    return path


# --- image folders ------------------------------------------------------------------------------

def test_natural_key_orders_numbers_by_value():
    names = ["img10.png", "img2.png", "IMG1.png", "img1b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img1b.png", "img2.png", "img10.png"]


def test_image_folder_natural_order_mixed_extensions_and_skips_other_files(tmp_path, caplog):
    lossless = {"img2.png": (), "img10.PNG": (), "img1.bmp": (), "img3.TIF": (), "img4.tiff": (),
                "img5.webp": (cv2.IMWRITE_WEBP_QUALITY, 101)}
    for name, params in lossless.items():
        write(tmp_path / name, pattern(int(natural_key(name)[1])), params)
    write(tmp_path / "img6.JPG", pattern(6))
    write(tmp_path / "img7.jpeg", pattern(7))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING):
        source = open_source(tmp_path)
    assert "notes.txt" in caplog.text
    assert source.layout == "images" and source.path == tmp_path
    assert source.size == (64, 48) and source.scale == 1.0 and len(source) == 8
    frames = list(source)
    names = [f.name for f in frames]
    for frame in frames[:5]:  # the lossless ones decode to exactly what was written
        assert np.array_equal(frame.image, pattern(int(natural_key(frame.name)[1])))
    assert names == source.frame_names()
    assert names == ["img1.bmp", "img2.png", "img3.TIF", "img4.tiff", "img5.webp", "img6.JPG", "img7.jpeg",
                     "img10.PNG"]


def test_image_folder_pixels_indices_and_refs_are_exact(tmp_path):
    for i in range(4):
        write(tmp_path / f"f{i}.png", pattern(i))
    source = open_source(tmp_path)
    frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for i, frame in enumerate(frames):
        assert frame.image.dtype == np.uint8 and np.array_equal(frame.image, pattern(i))
        assert frame.timestamp == float(i)
        assert frame.ref == FrameRef(str(tmp_path / f"f{i}.png"), None, float(i))
    assert not source.has_clock  # those timestamps are frame numbers, not times
    assert source.frame_refs() == [f.ref for f in frames]
    assert np.array_equal(source.read(2).image, pattern(2))
    assert source.read(-1).name == "f3.png"
    with pytest.raises(IndexError):
        source.read(4)


def test_gray_images_stay_gray_and_alpha_is_dropped(tmp_path):
    write(tmp_path / "a.png", pattern(0, channels=1))
    rgba = np.dstack([pattern(1), np.full((48, 64), 7, np.uint8)])
    write(tmp_path / "b.png", rgba)
    frames = list(open_source(tmp_path))
    assert frames[0].image.shape == (48, 64) and np.array_equal(frames[0].image, pattern(0, channels=1))
    assert frames[1].image.shape == (48, 64, 3) and np.array_equal(frames[1].image, pattern(1))


def test_iteration_is_lazy_one_frame_at_a_time(tmp_path):
    for i in range(3):
        write(tmp_path / f"f{i}.png", pattern(i))
    iterator = iter(open_source(tmp_path))
    assert next(iterator).index == 0
    (tmp_path / "f2.png").unlink()  # not read yet: a source that loaded everything up front would not notice
    assert [f.index for f in iterator] == [1]


def test_images_subfolder_is_opened_from_its_parent(tmp_path):
    write(tmp_path / "images" / "a.png", pattern(0))
    (tmp_path / "Readme.txt").write_text("dataset readme")
    source = open_source(tmp_path)
    assert source.layout == "images" and source.path == tmp_path / "images" and len(source) == 1


def test_processed_size_keeps_aspect_and_never_enlarges():
    assert processed_size(1226, 370, 613) == (613, 185, 0.5)
    assert processed_size(640, 480, 1000) == (640, 480, 1.0)
    assert processed_size(480, 640, None) == (480, 640, 1.0)


def test_max_size_downscales_frames_on_the_fly(tmp_path):
    write(tmp_path / "a.png", pattern(0, 200, 100))
    source = open_source(tmp_path, max_size=50)
    assert source.original_size == (200, 100) and source.size == (50, 25) and source.scale == 0.25
    frame = source.read(0)
    assert frame.image.shape == (25, 50, 3) and frame.scale == 0.25
    expected = cv2.resize(pattern(0, 200, 100), (50, 25), interpolation=cv2.INTER_AREA)
    assert np.array_equal(frame.image, expected)
    with pytest.raises(ValueError):
        open_source(tmp_path, max_size=-1)


# --- TUM ----------------------------------------------------------------------------------------

def make_tum(root: Path, n: int = 3) -> list[float]:
    stamps = [1341847980.722988 + i for i in range(n)]
    lines = ["# color images", "# timestamp filename"]
    for i, t in enumerate(stamps):
        write(root / "rgb" / f"{t:.6f}.png", pattern(i))
        lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    (root / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw\n")
    return stamps


def test_tum_layout_timestamps_from_rgb_txt(tmp_path):
    stamps = make_tum(tmp_path)
    source = open_source(tmp_path)
    assert source.layout == "tum" and len(source) == 3
    frames = list(source)
    assert [f.timestamp for f in frames] == [float(f"{t:.6f}") for t in stamps] and source.has_clock
    assert frames[1].name == f"rgb/{stamps[1]:.6f}.png" and np.array_equal(frames[1].image, pattern(1))
    assert source.ground_truth_path() == tmp_path / "groundtruth.txt"
    assert source.intrinsics_hint() is None
    assert detect_layout(tmp_path / "rgb") == "tum"  # the rgb/ folder itself


def test_tum_listed_but_missing_file_is_skipped_with_warning(tmp_path, caplog):
    make_tum(tmp_path)
    with open(tmp_path / "rgb.txt", "a") as fh:
        fh.write("1341847999.000000 rgb/missing.png\n")
    with caplog.at_level(logging.WARNING):
        source = open_source(tmp_path)
    assert len(source) == 3 and "missing.png" in caplog.text


# --- KITTI --------------------------------------------------------------------------------------

KITTI_P0 = "P0: 7.070912e+02 0 6.018873e+02 0 0 7.070912e+02 1.831104e+02 0 0 0 1 0\n"


def make_kitti(root: Path, frames=range(4), n_times: int = 6) -> None:
    for i in frames:
        write(root / "image_0" / f"{i:06d}.png", pattern(i, channels=1))
    (root / "times.txt").write_text("".join(f"{0.1 * i:e}\n" for i in range(n_times)))
    (root / "calib.txt").write_text(KITTI_P0)
    (root / "poses").mkdir()
    (root / "poses" / "07.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")


def test_kitti_layout_from_root_and_from_image_0(tmp_path):
    make_kitti(tmp_path)
    for path in (tmp_path, tmp_path / "image_0"):
        source = open_source(path)
        assert source.layout == "kitti" and len(source) == 4 and source.size == (64, 48)
        assert source.intrinsics_hint() == tmp_path / "calib.txt"
        assert source.ground_truth_path() == tmp_path / "poses" / "07.txt"
        frame = source.read(3)
        assert frame.name == "000003.png" and frame.timestamp == pytest.approx(0.3, abs=1e-12)
        assert frame.image.shape == (48, 64)


def test_kitti_frames_take_the_time_of_their_number(tmp_path):
    make_kitti(tmp_path, frames=[2, 5])
    assert [r.timestamp for r in open_source(tmp_path).frame_refs()] == pytest.approx([0.2, 0.5], abs=1e-12)


def test_kitti_standard_tree_finds_poses_two_levels_up(tmp_path):
    seq = tmp_path / "dataset" / "sequences" / "07"
    make_kitti(seq)
    for p in (seq / "poses").iterdir():
        p.unlink()
    (seq / "poses").rmdir()
    (tmp_path / "dataset" / "poses").mkdir()
    (tmp_path / "dataset" / "poses" / "07.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    assert open_source(seq).ground_truth_path() == tmp_path / "dataset" / "poses" / "07.txt"


# --- EuRoC --------------------------------------------------------------------------------------

def make_euroc(root: Path, n: int = 3) -> list[int]:
    cam = root / "mav0" / "cam0"
    stamps = [1403715273262142976 + 50_000_000 * i for i in range(n)]
    for i, ns in enumerate(stamps):
        write(cam / "data" / f"{ns}.png", pattern(i, channels=1))
    (cam / "data.csv").write_text("#timestamp [ns],filename\n" + "".join(f"{ns},{ns}.png\n" for ns in stamps))
    (cam / "sensor.yaml").write_text("%YAML:1.0\nresolution: [64, 48]\nintrinsics: [40, 41, 32, 24]\n"
                                     "distortion_model: radial-tangential\n"
                                     "distortion_coefficients: [-0.2, 0.05, 0.001, 0.0]\n")
    gt = root / "mav0" / "state_groundtruth_estimate0"
    gt.mkdir()
    (gt / "data.csv").write_text("#timestamp\n")
    return stamps


@pytest.mark.parametrize("sub", ["", "mav0", "mav0/cam0"])
def test_euroc_layout_from_root_mav0_or_cam0(tmp_path, sub):
    stamps = make_euroc(tmp_path)
    source = open_source(tmp_path / sub if sub else tmp_path)
    cam = tmp_path / "mav0" / "cam0"
    assert source.layout == "euroc" and len(source) == 3 and source.path == cam
    assert source.intrinsics_hint() == cam / "sensor.yaml"
    assert source.ground_truth_path() == tmp_path / "mav0" / "state_groundtruth_estimate0" / "data.csv"
    refs = source.frame_refs()
    assert refs[0].timestamp == 1403715273.262142976 and refs[2].timestamp == pytest.approx(stamps[2] * 1e-9, abs=1e-6)
    assert source.read(1).name == f"{stamps[1]}.png"


# --- video --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_path(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.avi", n=12, fps=10.0)


def test_video_count_size_and_timestamps(video_path):
    source = open_source(video_path)
    assert source.layout == "video" and source.path == video_path
    assert len(source) == 12 and source.size == (64, 48)
    frames = list(source)
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(12)], abs=1e-9)
    assert source.has_clock
    assert frames[3].name == "clip_000003" and frames[3].image.shape == (48, 64, 3)
    assert frames[3].ref == FrameRef(str(video_path), 3, frames[3].timestamp)
    assert source.frame_refs() == [f.ref for f in frames]
    assert source.intrinsics_hint() is None and source.ground_truth_path() is None


def test_video_random_access_matches_sequential_decode(video_path):
    source = open_source(video_path)
    frames = list(source)
    for index in (7, 2, 3, 11, 0):
        frame = source.read(index)
        assert frame.index == index and frame.timestamp == pytest.approx(frames[index].timestamp, abs=1e-9)
        assert np.array_equal(frame.image, frames[index].image)
    with pytest.raises(IndexError):
        source.read(12)
    source.close()
    assert np.array_equal(source.read(5).image, frames[5].image)  # reopens after close


def test_video_max_size(video_path):
    source = open_source(video_path, max_size=32)
    assert source.size == (32, 24) and source.scale == 0.5
    frame = next(iter(source))
    assert frame.image.shape == (24, 32, 3) and frame.scale == 0.5


def test_video_timestamp_falls_back_to_index_over_fps(video_path):
    class NoClock:
        def get(self, prop):
            return float("nan") if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    source = VideoSource(video_path)
    assert source._timestamp(NoClock(), 4) == pytest.approx(0.4)
    assert math.isclose(source._timestamp(NoClock(), 0), 0.0)


def test_mp4v_video_opens(tmp_path):
    path = make_video(tmp_path / "clip.mp4", n=3, fourcc="mp4v")
    source = open_source(path)
    assert len(source) == 3 and len(list(source)) == 3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is needed to tag a rotation")
def test_rotated_video_is_not_mistaken_for_a_size_change(tmp_path):
    """OpenCV applies rotation metadata (phone videos); the coded size stays constant, so nothing is refused."""
    plain = make_video(tmp_path / "plain.mp4", n=3, size=(64, 48), fourcc="mp4v")
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(plain), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True, timeout=60)
    source = open_source(rotated)
    assert source.size == (48, 64)
    assert [f.image.shape for f in source] == [(64, 48, 3)] * 3


def test_video_frame_walk_reports_progress_and_stops_when_asked(tmp_path):
    from scene.progress import Cancelled, RecordingProgress

    path = make_video(tmp_path / "long.avi", n=300, size=(16, 12))
    progress = RecordingProgress()
    refs = open_source(path).frame_refs(progress=progress)
    assert len(refs) == 300
    # Every 3 frames (1% of 300) during the walk, then the end.
    assert [r[1] for r in progress.reports] == [*range(0, 300, 3), 300]
    assert progress.reports[1] == ("scan frames", 3, 300, "long_000003")
    source = open_source(path)
    stopping = RecordingProgress(stop_after=4)
    with pytest.raises(Cancelled, match="long.avi"):
        source.frame_refs(progress=stopping)
    assert len(stopping.reports) == 4 and stopping.reports[-1][1] == 9
    assert len(source.frame_refs()) == 300  # nothing half-walked was cached
