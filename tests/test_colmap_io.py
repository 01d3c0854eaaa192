"""COLMAP text/binary models: bit-exact round trips and a clear CorruptInput for every kind of bad file."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound, UnsupportedFormat
from scene.io.colmap import find_model_folder, read_colmap_model, write_colmap_model
from scene.model import Image, Points3D, Scene
from scene.rigid import Rigid3d


def _random_quat(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q  # any sign: the file must keep it verbatim


def make_scene(seed: int = 0, unregistered: bool = False) -> Scene:
    """3 cameras, 5 images, 40 points with tracks consistent with the keypoints' point ids."""
    rng = np.random.default_rng(seed)
    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 640, 480, [500.1234567890123, 501.0, 320.5, 239.75]))
    scene.add_camera(Camera(7, "OPENCV", 1024, 768, [800.0, 801.5, 512.0, 384.0, -0.1, 0.01, 1e-4, -2e-5]))
    scene.add_camera(Camera(3, "SIMPLE_RADIAL", 800, 600, [700.0 + 1 / 3, 400.0, 300.0, 0.05]))
    camera_of = {10: 1, 11: 7, 12: 3, 13: 1, 25: 7}
    num_kp = {10: 30, 11: 25, 12: 0, 13: 40, 25: 35}
    images = []
    for image_id, cam in camera_of.items():
        kps = rng.uniform(0, 600, size=(num_kp[image_id], 2))
        pose = None if (unregistered and image_id == 13) else Rigid3d(_random_quat(rng), rng.normal(size=3) * 3)
        images.append(Image(image_id, f"sub_dir/img_{image_id:03d}.jpg" if image_id == 25 else f"img_{image_id}.png",
                            cam, pose, kps, np.full(num_kp[image_id], -1)))
    point_ids = rng.choice(10**6, size=40, replace=False) + 1
    tracks = []
    free = {im.image_id: list(rng.permutation(len(im.keypoints))) for im in images}
    for pid in point_ids:
        track = []
        for im in images:
            if free[im.image_id] and rng.random() < 0.6:
                kp = int(free[im.image_id].pop())
                im.point3d_ids[kp] = pid
                track.append((im.image_id, kp))
        rng.shuffle(track)
        tracks.append(track)
    scene.add_images(images)
    xyz = rng.normal(size=(40, 3)) * 10
    xyz[0] = [0.1, -0.0, 1e-300]
    error = rng.uniform(0, 2, size=40)
    error[1] = -1.0  # COLMAP's "undefined error"
    scene.set_points(Points3D.from_tracks(point_ids, xyz, rng.integers(0, 256, size=(40, 3)), error, tracks))
    return scene


def assert_scenes_equal(a: Scene, b: Scene, registered_only: bool = False) -> None:
    assert list(a.cameras) == list(b.cameras)
    for cid in a.cameras:
        assert a.cameras[cid] == b.cameras[cid]
        assert a.cameras[cid].model == b.cameras[cid].model
    a_images = {k: v for k, v in a.images.items() if v.registered or not registered_only}
    assert list(a_images) == list(b.images)
    for iid, im in a_images.items():
        other = b.images[iid]
        assert (im.name, im.camera_id) == (other.name, other.camera_id)
        assert im.cam_from_world == other.cam_from_world  # bit-exact quaternion and translation
        assert np.array_equal(im.keypoints, other.keypoints)
        assert np.array_equal(im.point3d_ids, other.point3d_ids)
    for name in ("ids", "xyz", "rgb", "error", "track_ptr", "track_image_ids", "track_kp_idx"):
        assert np.array_equal(getattr(a.points, name), getattr(b.points, name)), name
        assert getattr(a.points, name).dtype == getattr(b.points, name).dtype


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_is_bit_exact(tmp_path, binary):
    scene = make_scene()
    write_colmap_model(scene, tmp_path / "model", binary=binary)
    ext = ".bin" if binary else ".txt"
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        f"{s}{ext}" for s in ("cameras", "images", "points3D", "rigs", "frames"))  # no temp files left
    loaded = read_colmap_model(tmp_path / "model")
    assert_scenes_equal(scene, loaded)
    assert all(c.intrinsics_source == "colmap" for c in loaded.cameras.values())
    assert loaded.metadata["colmap"]["format"] == ("binary" if binary else "text")
    # Rewriting what was read gives identical bytes.
    write_colmap_model(loaded, tmp_path / "again", binary=binary)
    for stem in ("cameras", "images", "points3D", "rigs", "frames"):
        assert (tmp_path / "model" / f"{stem}{ext}").read_bytes() == (tmp_path / "again" / f"{stem}{ext}").read_bytes()


def test_text_and_binary_load_identically(tmp_path):
    scene = make_scene(seed=3)
    write_colmap_model(scene, tmp_path / "t", binary=False)
    write_colmap_model(scene, tmp_path / "b", binary=True)
    assert_scenes_equal(read_colmap_model(tmp_path / "t"), read_colmap_model(tmp_path / "b"))


def test_unregistered_images_and_their_observations_are_not_written(tmp_path):
    scene = make_scene(unregistered=True)
    write_colmap_model(scene, tmp_path, binary=True)
    loaded = read_colmap_model(tmp_path)
    assert 13 not in loaded.images and len(loaded.images) == 4
    assert 13 not in set(loaded.points.track_image_ids.tolist())
    expected_obs = sum(int((im.point3d_ids >= 0).sum()) for im in scene.images.values() if im.image_id != 13)
    assert len(loaded.points.track_image_ids) == expected_obs
    assert np.array_equal(loaded.points.ids, scene.points.ids)


def test_finds_model_in_sparse_0_and_prefers_binary(tmp_path):
    scene = make_scene()
    write_colmap_model(scene, tmp_path / "sparse" / "0", binary=True)
    assert find_model_folder(tmp_path) == (tmp_path / "sparse" / "0", True)
    assert_scenes_equal(scene, read_colmap_model(tmp_path))


def test_writing_other_format_replaces_stale_model(tmp_path):
    write_colmap_model(make_scene(seed=1), tmp_path, binary=True)
    scene = make_scene(seed=2)
    write_colmap_model(scene, tmp_path, binary=False)
    assert not list(tmp_path.glob("*.bin"))
    assert_scenes_equal(scene, read_colmap_model(tmp_path))


# --- bad input -------------------------------------------------------------------------------

def _text_model(tmp_path):
    write_colmap_model(make_scene(), tmp_path, binary=False)
    return tmp_path


def _replace_line(path, predicate, edit):
    lines = path.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#") and predicate(line):
            lines[i] = edit(line)
            path.write_text("".join(lines))
            return i + 1
    raise AssertionError("no line matched")


def test_empty_folder_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound, match="no COLMAP model"):
        read_colmap_model(tmp_path)


def test_missing_path_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound, match="not found"):
        read_colmap_model(tmp_path / "nope")


def test_incomplete_model_names_missing_file(tmp_path):
    _text_model(tmp_path)
    (tmp_path / "points3D.txt").unlink()
    with pytest.raises(InputNotFound, match=r"points3D\.txt missing"):
        read_colmap_model(tmp_path)


@pytest.mark.parametrize("stem", ["cameras", "images", "points3D", "frames", "rigs"])
def test_truncated_binary_file(tmp_path, stem):
    write_colmap_model(make_scene(), tmp_path, binary=True)
    path = tmp_path / f"{stem}.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])
    with pytest.raises(CorruptInput, match=rf"{stem}\.bin: .*truncated"):
        read_colmap_model(tmp_path)


def test_binary_file_with_trailing_garbage(tmp_path):
    write_colmap_model(make_scene(), tmp_path, binary=True)
    with open(tmp_path / "cameras.bin", "ab") as handle:
        handle.write(b"\0\0\0")
    with pytest.raises(CorruptInput, match=r"cameras\.bin: 3 unexpected bytes"):
        read_colmap_model(tmp_path)


def test_image_refers_to_missing_camera(tmp_path):
    _text_model(tmp_path)
    number = _replace_line(tmp_path / "images.txt", lambda s: s.startswith("11 "),
                           lambda s: " ".join(s.split(" ")[:8] + ["99"] + s.split(" ")[9:]))
    with pytest.raises(CorruptInput, match=rf"images\.txt: line {number}: image 11 .*camera 99"):
        read_colmap_model(tmp_path)


def test_track_refers_to_missing_image(tmp_path):
    _text_model(tmp_path)
    number = _replace_line(tmp_path / "points3D.txt", lambda s: len(s.split()) > 8,
                           lambda s: " ".join(s.split()[:8] + ["4242"] + s.split()[9:]) + "\n")
    with pytest.raises(CorruptInput, match=rf"points3D\.txt: line {number}: track refers to image 4242"):
        read_colmap_model(tmp_path)


def test_track_refers_to_out_of_range_keypoint(tmp_path):
    _text_model(tmp_path)
    number = _replace_line(tmp_path / "points3D.txt", lambda s: len(s.split()) > 8,
                           lambda s: " ".join(s.split()[:9] + ["100000"] + s.split()[10:]) + "\n")
    with pytest.raises(CorruptInput, match=rf"points3D\.txt: line {number}: track refers to keypoint 100000"):
        read_colmap_model(tmp_path)


def test_keypoint_refers_to_missing_point(tmp_path):
    _text_model(tmp_path)
    path = tmp_path / "images.txt"
    lines = path.read_text().splitlines(keepends=True)
    header = next(i for i, s in enumerate(lines) if s.startswith("10 "))
    tokens = lines[header + 1].split()
    tokens[2] = "77777777"
    lines[header + 1] = " ".join(tokens) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(CorruptInput, match=rf"images\.txt: line {header + 1}: keypoint 0 of image 10 refers to "
                                           "3D point 77777777"):
        read_colmap_model(tmp_path)


def test_wrong_number_of_camera_params(tmp_path):
    _text_model(tmp_path)
    number = _replace_line(tmp_path / "cameras.txt", lambda s: s.startswith("7 "), lambda s: s.rstrip() + " 0.5\n")
    with pytest.raises(CorruptInput, match=rf"cameras\.txt: line {number}: camera 7 model OPENCV takes 8 "
                                           "parameters, found 9"):
        read_colmap_model(tmp_path)


def test_unknown_camera_model_binary(tmp_path):
    write_colmap_model(make_scene(), tmp_path, binary=True)
    data = bytearray((tmp_path / "cameras.bin").read_bytes())
    struct.pack_into("<i", data, 8 + 4, 42)  # first camera's model id
    (tmp_path / "cameras.bin").write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match=r"cameras\.bin: camera #0 \(id 1\): unknown camera model id 42"):
        read_colmap_model(tmp_path)


def test_nan_in_pose_text(tmp_path):
    _text_model(tmp_path)
    (tmp_path / "frames.txt").unlink()
    (tmp_path / "rigs.txt").unlink()
    number = _replace_line(tmp_path / "images.txt", lambda s: s.startswith("12 "),
                           lambda s: " ".join(s.split(" ")[:5] + ["nan"] + s.split(" ")[6:]))
    with pytest.raises(CorruptInput, match=rf"images\.txt: line {number}: pose contains NaN"):
        read_colmap_model(tmp_path)


def test_nan_in_pose_binary_frames(tmp_path):
    write_colmap_model(make_scene(), tmp_path, binary=True)
    data = bytearray((tmp_path / "frames.bin").read_bytes())
    struct.pack_into("<d", data, 8 + 8 + 8, float("nan"))  # first frame's QX
    (tmp_path / "frames.bin").write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match=r"frames\.bin: frame #0 \(id 10\): pose contains NaN"):
        read_colmap_model(tmp_path)


def test_frames_without_rigs(tmp_path):
    _text_model(tmp_path)
    (tmp_path / "rigs.txt").unlink()
    with pytest.raises(CorruptInput, match=r"has frames\.txt but no rigs\.txt"):
        read_colmap_model(tmp_path)


def test_frame_refers_to_missing_image(tmp_path):
    _text_model(tmp_path)
    number = _replace_line(tmp_path / "frames.txt", lambda s: s.startswith("11 "),
                           lambda s: s.rsplit(" ", 1)[0] + " 999\n")
    with pytest.raises(CorruptInput, match=rf"frames\.txt: line {number}: refers to image 999"):
        read_colmap_model(tmp_path)


def test_legacy_model_without_rigs_and_frames_loads(tmp_path):
    scene = make_scene()
    _text_model(tmp_path)
    (tmp_path / "frames.txt").unlink()
    (tmp_path / "rigs.txt").unlink()
    assert_scenes_equal(scene, read_colmap_model(tmp_path))


def test_pose_comes_from_frame_when_present(tmp_path):
    """COLMAP takes an image's pose from its frame; Parallax must do the same."""
    _text_model(tmp_path)
    new_pose = [0.5, 0.5, -0.5, 0.5, 1.0, 2.0, 3.0]
    _replace_line(tmp_path / "frames.txt", lambda s: s.startswith("11 "),
                  lambda s: " ".join(s.split()[:2] + [repr(v) for v in new_pose] + s.split()[9:]) + "\n")
    loaded = read_colmap_model(tmp_path)
    assert loaded.images[11].cam_from_world == Rigid3d(new_pose[:4], new_pose[4:])


def test_inconsistent_scene_is_refused_on_write(tmp_path):
    scene = make_scene()
    scene.images[10].point3d_ids[:] = -1  # tracks still claim image 10's keypoints
    with pytest.raises(ValueError, match="inconsistent scene"):
        write_colmap_model(scene, tmp_path, binary=True)


def test_name_with_space_only_in_binary_models(tmp_path):
    scene = make_scene()
    scene.images[25].name = "sub dir/img 25.jpg"
    with pytest.raises(UnsupportedFormat, match="'sub dir/img 25.jpg' contains whitespace"):
        write_colmap_model(scene, tmp_path / "t", binary=False)
    assert not (tmp_path / "t" / "images.txt").exists()
    write_colmap_model(scene, tmp_path / "b", binary=True)
    assert read_colmap_model(tmp_path / "b").images[25].name == "sub dir/img 25.jpg"


def test_non_integer_track_entries_name_their_line(tmp_path):
    from scene.errors import CorruptInput
    from scene.io.colmap_text import _parse_track_tokens

    with pytest.raises(CorruptInput, match="line 2: track entry 'x' is not an integer"):
        _parse_track_tokens(tmp_path / "points3D.txt", ["1 2 3 4", "5 x"], [1, 2], [2, 1])
    with pytest.raises(CorruptInput, match="line 1: track entry '2.5' is not an integer"):
        _parse_track_tokens(tmp_path / "points3D.txt", ["1 2.5"], [1], [1])
    assert _parse_track_tokens(tmp_path / "points3D.txt", ["1 2 3 4", ""], [1, 2], [2, 0]).tolist() == [1, 2, 3, 4]


def test_duplicate_point_id_text(tmp_path):
    _text_model(tmp_path)
    first = next(line for line in (tmp_path / "points3D.txt").read_text().splitlines() if not line.startswith("#"))
    first_id = first.split()[0]
    _replace_line(tmp_path / "points3D.txt", lambda s: s.split()[0] != first_id,
                  lambda s: " ".join([first_id] + s.split()[1:]) + "\n")
    with pytest.raises(CorruptInput, match=rf"points3D\.txt: duplicate 3D point id {first_id}"):
        read_colmap_model(tmp_path)


def test_duplicate_point_id_binary(tmp_path):
    write_colmap_model(make_scene(), tmp_path, binary=True)
    path = tmp_path / "points3D.bin"
    data = bytearray(path.read_bytes())
    first_id, track_length = struct.unpack_from("<Q", data, 8)[0], struct.unpack_from("<Q", data, 8 + 43)[0]
    struct.pack_into("<Q", data, 8 + 51 + 8 * track_length, first_id)  # second record takes the first's id
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match=rf"points3D\.bin: duplicate 3D point id {first_id}"):
        read_colmap_model(tmp_path)
