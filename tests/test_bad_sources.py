"""Bad frame-source input: every case raises a ParallaxError naming the path, or skips the bad frame with a warning."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from scene.errors import CorruptInput, InputNotFound, ParallaxError, UnsupportedFormat
from scene.io.sources import open_source
from scene.io.sources_decode import container_problem



def pattern(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def make_video(path: Path, n: int, size=(64, 48), fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8))
    writer.release()
    return path


def _truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _folder_with_one_truncated(tmp_path: Path, suffix: str) -> tuple[Path, Path]:
    for i in range(4):
        write(tmp_path / f"f{i}{suffix}", pattern(i, 128, 96))
    return tmp_path, _truncate(tmp_path / f"f2{suffix}")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputNotFound, match="nope"):
        open_source(missing)


def test_empty_folder(tmp_path):
    with pytest.raises(InputNotFound, match=f"{tmp_path}.*empty"):
        open_source(tmp_path)


def test_folder_of_non_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("1,2")
    with pytest.raises(UnsupportedFormat, match="no images found") as info:
        open_source(tmp_path)
    assert str(tmp_path) in str(info.value) and "a.txt" in str(info.value)


def test_truncated_jpeg_among_good_is_skipped_with_warning(tmp_path, caplog):
    folder, bad = _folder_with_one_truncated(tmp_path, ".jpg")
    # OpenCV alone does not notice: it returns a partially decoded image.
    assert cv2.imdecode(np.fromfile(str(bad), np.uint8), cv2.IMREAD_ANYCOLOR) is not None
    assert "truncated JPEG" in container_problem(bad.read_bytes())
    source = open_source(folder)
    assert len(source) == 4
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]
    assert "f2.jpg" in caplog.text and "truncated JPEG" in caplog.text
    with pytest.raises(CorruptInput, match="f2.jpg"):
        source.read(2)


def test_truncated_png_among_good_is_skipped_with_warning(tmp_path, caplog):
    folder, bad = _folder_with_one_truncated(tmp_path, ".png")
    assert "truncated PNG" in container_problem(bad.read_bytes())
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(folder))
    assert [f.index for f in frames] == [0, 1, 3]
    assert np.array_equal(frames[2].image, pattern(3, 128, 96))
    assert "f2.png" in caplog.text and "truncated PNG" in caplog.text


def test_png_missing_only_iend_is_truncated(tmp_path):
    path = write(tmp_path / "a.png", pattern(0))
    data = path.read_bytes()
    assert data.endswith(b"IEND\xaeB`\x82")
    assert container_problem(data) is None
    assert "no IEND" in container_problem(data[:-12])


def test_complete_jpeg_with_trailing_bytes_is_accepted(tmp_path):
    path = write(tmp_path / "a.jpg", pattern(0))
    assert container_problem(path.read_bytes() + b"\x00" * 64 + b"appended data") is None


def test_first_image_truncated_size_comes_from_next(tmp_path, caplog):
    write(tmp_path / "a.png", pattern(0, 30, 20))
    write(tmp_path / "b.png", pattern(1, 64, 48))
    _truncate(tmp_path / "a.png")
    with caplog.at_level(logging.WARNING):
        source = open_source(tmp_path)
    assert source.size == (64, 48) and "a.png" in caplog.text


def test_all_images_unreadable(tmp_path):
    for i in range(2):
        _truncate(write(tmp_path / f"f{i}.jpg", pattern(i)))
    with pytest.raises(CorruptInput, match=f"{tmp_path}.*none of its 2 images"):
        open_source(tmp_path)


def test_corrupt_video(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptInput, match="junk.mp4"):
        open_source(path)


def test_truncated_video_header(tmp_path):
    path = make_video(tmp_path / "cut.mp4", n=5, fourcc="mp4v")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptInput, match="cut.mp4"):
        open_source(path)


def test_zero_length_video(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(CorruptInput, match="empty.avi.*0 bytes"):
        open_source(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is needed to concatenate two streams")
def test_video_with_frame_size_change_is_refused_at_the_change(tmp_path):
    """OpenCV rescales the second part to the first size silently; the source must refuse it instead."""
    pytest.importorskip("av", reason="PyAV detects the native frame sizes")
    first = make_video(tmp_path / "a.avi", n=5, size=(64, 48))
    second = make_video(tmp_path / "b.avi", n=5, size=(48, 32))
    listing = tmp_path / "list.txt"
    listing.write_text(f"file '{first}'\nfile '{second}'\n")
    joined = tmp_path / "joined.avi"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-c", "copy", str(joined)], check=True, timeout=60)
    source = open_source(joined)
    assert source.size == (64, 48)
    delivered = []
    with pytest.raises(CorruptInput, match=r"joined.avi.*frame 5 .*64x48 to 48x32"):
        for frame in source:
            delivered.append(frame.index)
    assert delivered == [0, 1, 2, 3, 4]
    assert source.read(4).image.shape == (48, 64, 3)
    with pytest.raises(CorruptInput, match="frame 7"):
        source.read(7)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "model.xyz"
    path.write_text("1 2 3")
    with pytest.raises(UnsupportedFormat, match="model.xyz.*unsupported file type .xyz"):
        open_source(path)


def test_single_image_file_is_not_a_frame_source(tmp_path):
    path = write(tmp_path / "one.png", pattern(0))
    with pytest.raises(UnsupportedFormat, match="one.png.*open the folder"):
        open_source(path)


def test_tum_rgb_txt_bad_line(tmp_path):
    (tmp_path / "rgb.txt").write_text("# header\nnot-a-time rgb/x.png\n")
    with pytest.raises(CorruptInput, match="rgb.txt: line 2"):
        open_source(tmp_path)


def test_kitti_times_txt_too_short(tmp_path):
    for i in range(3):
        write(tmp_path / "image_0" / f"{i:06d}.png", pattern(i))
    (tmp_path / "times.txt").write_text("0.0\n0.1\n")
    with pytest.raises(CorruptInput, match="times.txt.*000002.png"):
        open_source(tmp_path)


def test_euroc_data_csv_bad_line(tmp_path):
    cam = tmp_path / "mav0" / "cam0"
    (cam / "data").mkdir(parents=True)
    (cam / "data.csv").write_text("#timestamp [ns],filename\n12.5;x.png\n")
    with pytest.raises(CorruptInput, match="data.csv: line 2"):
        open_source(tmp_path)


def test_every_error_is_a_parallax_error():
    for cls in (InputNotFound, UnsupportedFormat, CorruptInput):
        assert issubclass(cls, ParallaxError)


# --- truncated files never reach a scene -------------------------------------------------------

def _truncated_warnings(caplog, *names) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and any(name in r.getMessage() for name in names)]


def test_open_path_leaves_truncated_jpeg_and_png_out_of_the_scene(tmp_path, caplog):
    from scene.io import open_path

    names = ["a0.png", "a1.jpg", "a2.png", "a3.png", "a4.jpg", "a5.png"]
    for i, name in enumerate(names):
        write(tmp_path / name, pattern(i, 128, 96))
    _truncate(tmp_path / "a1.jpg")
    _truncate(tmp_path / "a3.png")
    with caplog.at_level(logging.WARNING):
        scene = open_path(tmp_path)
    assert sorted(im.name for im in scene.images.values()) == ["a0.png", "a2.png", "a4.jpg", "a5.png"]
    assert all("a1.jpg" not in im.source.path and "a3.png" not in im.source.path for im in scene.images.values())
    assert scene.sources[0]["frames"] == 4
    warnings = _truncated_warnings(caplog, "a1.jpg", "a3.png")
    assert len(warnings) == 1  # one warning naming every broken file
    assert "a1.jpg (truncated JPEG" in warnings[0] and "a3.png (truncated PNG" in warnings[0]
    assert str(tmp_path) in warnings[0]


def _tum_with(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        write(root / "rgb" / name, pattern(i))
    (root / "rgb.txt").write_text("".join(f"{i}.5 rgb/{name}\n" for i, name in enumerate(names)))


def _kitti_with(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        write(root / "image_0" / name, pattern(i))
    (root / "times.txt").write_text("".join(f"{0.1 * i}\n" for i in range(len(names))))


def _euroc_with(root: Path, names: list[str]) -> None:
    cam = root / "mav0" / "cam0"
    for i, name in enumerate(names):
        write(cam / "data" / name, pattern(i))
    rows = "".join(f"{1000 + i},{name}\n" for i, name in enumerate(names))
    (cam / "data.csv").write_text("#timestamp [ns],filename\n" + rows)


@pytest.mark.parametrize("layout, make, folder", [("tum", _tum_with, "rgb"), ("kitti", _kitti_with, "image_0"),
                                                  ("euroc", _euroc_with, "mav0/cam0/data")])
def test_truncated_file_is_left_out_of_every_layouts_frame_list(tmp_path, caplog, layout, make, folder):
    from scene.io import open_path

    names = ["000000.png", "000001.jpg", "000002.png"]
    make(tmp_path, names)
    _truncate(tmp_path / folder / "000001.jpg")
    source = open_source(tmp_path)
    assert source.layout == layout and len(source) == 3
    with caplog.at_level(logging.WARNING):
        refs = source.frame_refs()
    assert [Path(r.path).name for r in refs] == ["000000.png", "000002.png"]
    assert len(source) == 2 and [Path(f.ref.path).name for f in source] == ["000000.png", "000002.png"]
    assert len(_truncated_warnings(caplog, "000001.jpg")) == 1
    scene = open_path(tmp_path)
    assert sorted(Path(im.source.path).name for im in scene.images.values()) == ["000000.png", "000002.png"]
