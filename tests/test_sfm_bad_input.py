"""SfM on bad input (issue 4 section 5): each case its own test, on tiny renders of the demo room (320 x 240).

Every case either reconstructs what can be reconstructed (with a warning saying what was wrong) or raises
a ParallaxError whose message explains the problem; nothing crashes.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from assets.camera_paths import ROOM_CENTRE_TARGET, look_at, look_dir
from assets.demo_scene import demo_camera
from assets.render import render_frame
from assets.room import build_room
from scene.errors import ParallaxError
from sfm.features import FeatureOptions
from sfm.pipeline import SfmOptions, run

CAMERA = demo_camera(320, 240)  # PINHOLE fx = fy = 262.5, principal point at the centre


def arc_poses(n: int, deg_from: float, deg_to: float, radius: float = 2.6, height: float = 1.5) -> list:
    """world_from_cam on an elliptic arc around the room centre, looking at it."""
    return [look_at([radius * math.cos(a), 0.7 * radius * math.sin(a), height], ROOM_CENTRE_TARGET)
            for a in np.radians(np.linspace(deg_from, deg_to, n))]


def render_set(folder: Path, poses, camera=CAMERA, seed: int = 0, prefix: str = "", suffix: str = ".png",
               mirror: bool = False) -> list:
    """Render ``poses``; ``mirror`` flips every picture left-right (a mirror world: SIFT does not match it
    with the unflipped one, and it still reconstructs, since the camera's principal point is centred)."""
    folder.mkdir(parents=True, exist_ok=True)
    room = build_room(seed)
    paths = []
    for i, pose in enumerate(poses):
        bgr, _ = render_frame(pose, camera, room)
        if mirror:
            bgr = np.ascontiguousarray(bgr[:, ::-1])
        path = folder / f"{prefix}{i:03d}{suffix}"
        cv2.imwrite(str(path), bgr)
        paths.append(path)
    return paths


def write_calib(path: Path, camera=CAMERA) -> Path:
    fx, fy, cx, cy = camera.params
    path.write_text(f"model: PINHOLE\nwidth: {camera.width}\nheight: {camera.height}\n"
                    f"fx: {fx}\nfy: {fy}\ncx: {cx}\ncy: {cy}\n")
    return path


def options(calib: Path | None = None, **features) -> SfmOptions:
    return SfmOptions(features=FeatureOptions(max_num_features=1024, **features),
                      calib_path=str(calib) if calib else None)


def rotation_error_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(r_a.T @ r_b) - 1) / 2, -1, 1)))


def relative_rotation_errors(result, poses_by_name: dict) -> list:
    """Angle between estimated and true relative rotations of every registered image to the first one."""
    ims = [result.scene.images[i] for i in result.image_ids if result.scene.images[i].registered]
    ref = ims[0]
    gt_ref = poses_by_name[ref.name].rotation  # world_from_cam
    out = []
    for im in ims[1:]:
        est = im.cam_from_world.rotation @ ref.cam_from_world.rotation.T          # cam_from_ref
        gt = poses_by_name[im.name].rotation.T @ gt_ref
        out.append(rotation_error_deg(est, gt))
    return out


@pytest.fixture(scope="module")
def arc6(tmp_path_factory):
    """Six views over 35 degrees: the good set every case starts from (rendered once)."""
    folder = tmp_path_factory.mktemp("arc6")
    poses = arc_poses(6, 200, 235)
    paths = render_set(folder / "images", poses)
    return folder / "images", paths, poses, write_calib(folder / "calib.yaml")


def _copy_set(arc6, dest: Path) -> Path:
    src, paths, _, _ = arc6
    dest.mkdir()
    for p in paths:
        shutil.copy(p, dest / p.name)
    return dest


def test_duplicate_images_are_kept_and_named(arc6, tmp_path, caplog):
    folder = _copy_set(arc6, tmp_path / "dup")
    shutil.copy(folder / "002.png", folder / "002_copy.png")
    with caplog.at_level(logging.WARNING):
        r = run(folder, options(arc6[3]))
    assert r.registered == r.num_images == 7
    dup = [w for w in r.warnings if "duplicate" in w]
    assert len(dup) == 1 and "002_copy.png" in dup[0] and "002.png" in dup[0]
    assert any("duplicate" in rec.getMessage() for rec in caplog.records)
    by_name = {im.name: im for im in r.scene.images.values()}
    c1, c2 = by_name["002.png"].cam_from_world.center(), by_name["002_copy.png"].cam_from_world.center()
    spread = np.ptp([im.cam_from_world.center() for im in by_name.values()], axis=0).max()
    assert np.linalg.norm(c1 - c2) < 1e-3 * spread
    assert r.stats["duplicates"] == 1


def test_different_sizes_and_cameras_in_one_folder(arc6, tmp_path):
    folder = _copy_set(arc6, tmp_path / "mixed")
    other = demo_camera(400, 300, intrinsics=(440.0, 440.0, 200.0, 150.0))
    render_set(folder, arc_poses(6, 190, 250, radius=2.3, height=1.3), camera=other, prefix="b")
    r = run(folder, options(arc6[3]))
    assert r.registered == r.num_images == 12
    cams = {(c.width, c.height): c for c in r.scene.cameras.values()}
    assert sorted(cams) == [(320, 240), (400, 300)]
    assert cams[(400, 300)].intrinsics_source == "guess"  # no EXIF: the guess 480 px, refined by BA
    assert abs(cams[(400, 300)].params[0] - 440.0) < 0.02 * 440.0
    assert np.array_equal(cams[(320, 240)].params, CAMERA.params)  # calibrated: held fixed
    for im in r.scene.images.values():
        cam = r.scene.cameras[im.camera_id]
        assert (cam.width, cam.height) == ((400, 300) if im.name.startswith("b") else (320, 240))
        assert im.keypoints[:, 0].max() <= cam.width and im.keypoints[:, 1].max() <= cam.height
    assert any("another camera" in w for w in r.warnings)
    assert r.mean_reprojection_error_px < 1.0


def test_corrupt_and_truncated_images_are_skipped_with_a_warning(arc6, tmp_path):
    folder = _copy_set(arc6, tmp_path / "corrupt")
    (folder / "100_garbage.jpg").write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    data = (folder / "003.png").read_bytes()
    (folder / "101_truncated.png").write_bytes(data[: len(data) // 2])
    r = run(folder, options(arc6[3]))
    assert r.registered == 6 and r.num_images == 6
    joined = " ".join(r.warnings)
    assert "100_garbage.jpg" in joined and "101_truncated.png" in joined
    assert sorted(s.split(":")[0] for s in r.skipped) == ["100_garbage.jpg", "101_truncated.png"]


def test_corrupt_image_inside_a_scene_is_skipped_not_fatal(arc6, tmp_path):
    """A file that breaks after the scene was built (decode fails at extraction) leaves that image unregistered."""
    from scene.io.calibration import add_source_to_scene, load_calibration
    from scene.io.sources import open_source
    from scene.model import Scene

    folder = _copy_set(arc6, tmp_path / "late")
    scene = Scene()
    src = open_source(folder)
    add_source_to_scene(scene, src, load_calibration(arc6[3], image_size=src.original_size))
    (folder / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # broken after the scan
    r = run(scene, options())
    bad = next(i for i in r.image_ids if scene.images[i].name == "005.png")
    assert r.registered == 5 and r.reasons[bad].startswith("unreadable")
    assert any("005.png" in w for w in r.warnings)


def test_grayscale_and_16_bit_pngs(arc6, tmp_path):
    src, paths, _, calib = arc6
    folder = tmp_path / "gray16"
    folder.mkdir()
    for k, p in enumerate(paths):
        bgr = cv2.imread(str(p))
        if k % 3 == 0:
            cv2.imwrite(str(folder / p.name), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        elif k % 3 == 1:
            cv2.imwrite(str(folder / p.name), bgr.astype(np.uint16) * 257)  # 16-bit colour
        else:
            cv2.imwrite(str(folder / p.name), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    assert cv2.imread(str(folder / paths[1].name), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    r = run(folder, options(calib))
    assert r.registered == r.num_images == 6
    assert len(r.scene.cameras) == 1
    assert r.mean_reprojection_error_px < 1.0


def test_exif_rotation_is_applied(arc6, tmp_path):
    """Two JPEGs are stored turned by 90 degrees with EXIF Orientation 6 (display: rotate clockwise): decoded
    upright, they share the others' camera and register with the true relative rotations."""
    src, paths, poses, calib = arc6
    folder = tmp_path / "exif"
    folder.mkdir()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    for k, p in enumerate(paths):
        rgb = PILImage.open(p).convert("RGB")
        if k in (1, 4):
            rgb.transpose(PILImage.Transpose.ROTATE_90).save(folder / f"{p.stem}.jpg", quality=95, exif=exif.tobytes())
        else:
            rgb.save(folder / f"{p.stem}.jpg", quality=95)
    stored = PILImage.open(folder / "001.jpg")
    assert stored.size == (240, 320)  # stored sideways
    r = run(folder, options(calib))
    assert r.registered == r.num_images == 6
    assert len(r.scene.cameras) == 1 and next(iter(r.scene.cameras.values())).width == 320
    errors = relative_rotation_errors(r, {f"{p.stem}.jpg": pose for p, pose in zip(paths, poses)})
    assert max(errors) < 0.5


def test_no_overlap_raises_no_initial_pair_with_the_best_pair(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    for k in range(4):
        rng = np.random.default_rng(k)
        noise = rng.integers(0, 255, (240, 320, 3), np.uint8)
        cv2.imwrite(str(folder / f"{k}.png"), cv2.GaussianBlur(noise, (5, 5), 0))
    with pytest.raises(ParallaxError) as err:
        run(folder, options())
    message = str(err.value)
    assert message.startswith("no initial pair")
    assert "best pair" in message and "feature matches" in message
    assert sum(f"{k}.png" in message for k in range(4)) == 2


def test_two_disconnected_groups_give_two_models(tmp_path):
    folder = tmp_path / "groups"
    render_set(folder, arc_poses(4, 200, 225), prefix="a")
    render_set(folder, arc_poses(4, 20, 45), seed=1, prefix="b", mirror=True)  # another room, mirrored
    r = run(folder, options(write_calib(tmp_path / "calib.yaml")))
    assert r.models == 2 and r.registered == 8
    groups = [sorted(r.scene.images[i].name[0] for i in m.image_ids) for m in r.reconstructions]
    assert sorted(groups) == [["a"] * 4, ["b"] * 4]
    assert set(r.scene.clouds) >= {"sfm_sparse", "sfm_model_2"}
    assert len(r.scene.clouds["sfm_sparse"]) == r.reconstructions[0].num_points
    assert len(r.scene.clouds["sfm_model_2"]) == r.reconstructions[1].num_points
    all_ids = np.concatenate([m.point_ids for m in r.reconstructions])
    assert sorted(all_ids.tolist()) == sorted(r.scene.points.ids.tolist())
    assert {r.image_model[i] for i in r.reconstructions[1].image_ids} == {2}
    # The warning says what the view graph holds: the mirrored room's repeated textures verify a few pairs
    # across the groups, so the models are "linked" (by pairs the mapper could not use), not "disconnected".
    between = r.stats["verified_pairs_between_models"]
    expected = f"{between} verified image pairs link the models" if between else "the view graph is disconnected"
    assert any(w.startswith(expected) and "2 models (model 1: 4 images, model 2: 4 images)" in w for w in r.warnings)
    assert [m["index"] for m in r.scene.metadata["sfm"]["models"]] == [1, 2]


def test_pure_rotation_warns_and_explains(tmp_path, caplog):
    folder = tmp_path / "rotation"
    centre = [2.0, 0.5, 1.4]
    render_set(folder, [look_dir(centre, a, -0.1) for a in np.radians(np.linspace(180, 215, 6))])
    with caplog.at_level(logging.WARNING), pytest.raises(ParallaxError) as err:
        run(folder, options(write_calib(tmp_path / "calib.yaml")))
    message = str(err.value)
    assert message.startswith("no initial pair") and "homography" in message and "rotated" in message
    assert any("homography" in w and "rotated" in w for w in err.value.warnings)
    assert any("homography" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)


def test_mostly_rotation_reconstructs_with_a_warning(tmp_path):
    """Three views with parallax, then the camera turns on the spot: the model is built and the result says
    that most pairs have no parallax."""
    poses = arc_poses(3, 200, 225)
    centre = poses[-1].translation
    forward = poses[-1].rotation[:, 2]
    yaw0, pitch = math.atan2(forward[1], forward[0]), math.asin(forward[2])
    poses += [look_dir(centre, yaw0 + math.radians(d), pitch) for d in (4, 8, 12, 16, 20)]
    render_set(tmp_path / "turn", poses)
    r = run(tmp_path / "turn", options(write_calib(tmp_path / "calib.yaml")))
    assert r.registered == 8
    assert any("homography" in w and "rotated" in w for w in r.warnings)
