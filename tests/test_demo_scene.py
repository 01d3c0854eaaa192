"""The built-in demo scene: determinism, exact pinhole geometry, features, files, cache and camera paths.

Image coordinates follow COLMAP: the top-left image corner is (0, 0), the centre of pixel (column i, row j) is
(i + 0.5, j + 0.5), and a projected point (u, v) falls in pixel (floor(u), floor(v)).
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from assets import (PATH_NAMES, camera_path, demo_camera, ensure_demo, generate_demo, load_demo, raycast_depth,
                    render_frame, room_point_cloud)
from assets.camera_paths import MIN_CLEARANCE, STOP_SECONDS
from assets.demo_scene import COMPLETE_MARKER, PIXEL_CONVENTION_COMMENT
from assets.room import build_room
from scene.camera import Camera
from scene.errors import InputNotFound, ParallaxError
from scene.io.calibration import load_calibration
from scene.progress import Cancelled, RecordingProgress
from scene.rigid import Rigid3d


@pytest.fixture(scope="session")
def room():
    return build_room(0)


@pytest.fixture(scope="session")
def vga():
    return demo_camera(640, 480)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return generate_demo(out, path="handheld", frames=6, fps=30, width=160, height=120, seed=3, video=True)


def _read_tum(path):
    rows = np.loadtxt(path, comments="#", ndmin=2)
    return rows[:, 0], rows[:, 1:4], rows[:, [7, 4, 5, 6]]  # timestamps, translation, quat_wxyz


def _backproject(pose: Rigid3d, camera: Camera, uv, depth):
    fx, fy, cx, cy = camera.params
    rays = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(len(uv))], axis=1)
    return pose.apply(rays * depth[:, None])


def _project(world_from_cam: Rigid3d, camera: Camera, xyz):
    cam = world_from_cam.inverse().apply(xyz)
    fx, fy, cx, cy = camera.params
    return np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], axis=1), cam[:, 2]


def _pixel_centres(cols, rows):
    """(N, 2) COLMAP coordinates of the centres of the pixels on the grid cols x rows."""
    us, vs = np.meshgrid(cols, rows)
    return np.stack([us.ravel(), vs.ravel()], axis=1).astype(np.float64) + 0.5


def _pixel_index(uv):
    """(column, row) of the pixel containing each COLMAP image point."""
    return np.floor(uv).astype(int)


def _bilinear(img, uv):
    """Image bilinearly sampled at COLMAP points (cv2.remap puts pixel centres at integers, hence -0.5)."""
    uv = uv - 0.5
    return cv2.remap(img, uv[:, 0].astype(np.float32).reshape(-1, 1), uv[:, 1].astype(np.float32).reshape(-1, 1),
                     cv2.INTER_LINEAR).reshape(len(uv), -1).astype(np.float64)


# -- determinism -----------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes(tmp_path, small_demo):
    again = generate_demo(tmp_path / "again", path="handheld", frames=6, fps=30, width=160, height=120, seed=3,
                          video=False)
    for a, b in zip(small_demo.images, again.images):
        assert a.read_bytes() == b.read_bytes()
    for name in ("groundtruth.txt", "calib.yaml"):
        assert (small_demo.root / name).read_bytes() == (again.root / name).read_bytes()
    # Regenerating into the same folder rewrites the same bytes (idempotent).
    before = [p.read_bytes() for p in again.images]
    generate_demo(tmp_path / "again", path="handheld", frames=6, fps=30, width=160, height=120, seed=3, video=False)
    assert [p.read_bytes() for p in again.images] == before


def test_different_seed_changes_path_and_texture(room, vga):
    _, poses_0 = camera_path("handheld", 10, 30, seed=0)
    _, poses_1 = camera_path("handheld", 10, 30, seed=1)
    assert not np.allclose(poses_0[5].translation, poses_1[5].translation, atol=1e-3)
    other = build_room(1)
    assert room.atlas.shape == other.atlas.shape and not np.array_equal(room.atlas, other.atlas)
    pose = camera_path("orbit", 10, 30, seed=0)[1][0]
    img_0, depth_0 = render_frame(pose, vga.scaled(160, 120), room)
    img_1, depth_1 = render_frame(pose, vga.scaled(160, 120), other)
    assert np.array_equal(depth_0, depth_1)  # same geometry
    assert np.abs(img_0.astype(int) - img_1.astype(int)).mean() > 5  # other textures


# -- exact geometry --------------------------------------------------------------------------------------------

def test_depth_is_exact_pinhole_geometry_across_views(room, vga):
    _, poses = camera_path("orbit", 60, 30, seed=0)
    pose_a, pose_b = poses[0], poses[4]
    img_a, depth_a32 = render_frame(pose_a, vga, room)
    img_b, _ = render_frame(pose_b, vga, room)
    uv = _pixel_centres(np.arange(4, 640, 9), np.arange(4, 480, 9))
    px = _pixel_index(uv)
    depth_a, _ = raycast_depth(pose_a, vga, uv, room)
    # The rendered depth map is the float32 copy of the exact depth at each pixel's centre ...
    assert np.array_equal(depth_a32[px[:, 1], px[:, 0]], depth_a.astype(np.float32))
    # ... and not of the depth half a pixel up-left (the OpenCV reading of the same indices).
    depth_corner, _ = raycast_depth(pose_a, vga, uv - 0.5, room)
    assert np.mean(depth_a32[px[:, 1], px[:, 0]] == depth_corner.astype(np.float32)) < 0.01
    xyz = _backproject(pose_a, vga, uv, depth_a)
    uv_again, _ = _project(pose_a, vga, xyz)
    assert np.abs(uv_again - uv).max() < 1e-6

    uv_b, z_b = _project(pose_b, vga, xyz)
    inside = (z_b > 0) & np.all((uv_b > 2.5) & (uv_b < [637.5, 477.5]), axis=1)
    depth_b, _ = raycast_depth(pose_b, vga, uv_b[inside], room)
    xyz_b = _backproject(pose_b, vga, uv_b[inside], depth_b)
    visible = np.linalg.norm(xyz_b - xyz[inside], axis=1) < 1e-6
    assert visible.sum() > 0.5 * inside.sum() > 1000
    # Where B sees the same surface, the two rays meet at one world point, to rounding.
    assert np.abs(xyz_b[visible] - xyz[inside][visible]).max() < 1e-9
    uv_back, _ = _project(pose_a, vga, xyz_b[visible])
    assert np.abs(uv_back - uv[inside][visible]).max() < 1e-6
    # ... and the rendered colours agree there.
    px_seen = px[inside][visible]
    colour_a = img_a[px_seen[:, 1], px_seen[:, 0]].astype(float)
    colour_b = _bilinear(img_b, uv_b[inside][visible])
    diff = np.abs(colour_a - colour_b).mean(axis=1)
    assert np.median(diff) < 8.0
    # Occluded samples really are behind something nearer to B.
    assert np.all(depth_b[~visible] < z_b[inside][~visible])


def test_floor_pixels_match_analytic_plane_intersection(room, vga):
    pose = camera_path("handheld", 30, 30, seed=0)[1][10]  # rolled: u and v both change the ray height
    uv = _pixel_centres(np.arange(0, 640, 7), np.arange(300, 480, 5))
    depth, box = raycast_depth(pose, vga, uv, room)
    xyz = _backproject(pose, vga, uv, depth)
    floor = (box == 0) & (np.abs(xyz[:, 2]) < 1e-9)
    assert floor.sum() > 100
    fx, fy, cx, cy = vga.params
    rays = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(len(uv))], axis=1) @ pose.rotation.T
    t_plane = -pose.translation[2] / rays[:, 2]
    assert np.allclose(depth[floor], t_plane[floor], rtol=1e-12, atol=0)
    # The rendered frame shows the same floor: its depth map holds these depths at the pixels (floor(u), floor(v)).
    _, depth_map = render_frame(pose, vga, room)
    px = _pixel_index(uv[floor])
    assert np.array_equal(depth_map[px[:, 1], px[:, 0]], depth[floor].astype(np.float32))


def test_rendered_depth_reprojects_only_through_pixel_centres(room, vga):
    """What a user of the demo does: pixel (i, j) of a depth frame + calib.yaml -> a world point.

    Back-projected through (i + 0.5, j + 0.5) the point lies on the surface another view sees and reprojects
    onto itself; back-projected through (i, j) (OpenCV's reading) it is off the surface by millimetres and
    reprojects at least 0.4 px from where it should: the test fails for a half-pixel-shifted renderer.
    """
    _, poses = camera_path("orbit", 60, 30, seed=0)
    pose_a, pose_b = poses[0], poses[4]
    _, depth_map = render_frame(pose_a, vga, room)
    centres = _pixel_centres(np.arange(3, 640, 7), np.arange(2, 480, 7))
    px = _pixel_index(centres)
    depth = depth_map[px[:, 1], px[:, 0]].astype(np.float64)
    # Samples whose surface B sees (exact geometry from the ray caster, independent of the rendered frame).
    exact = _backproject(pose_a, vga, centres, raycast_depth(pose_a, vga, centres, room)[0])
    uv_b, z_b = _project(pose_b, vga, exact)
    keep = (z_b > 0) & np.all((uv_b > 1) & (uv_b < [639, 479]), axis=1)
    keep[keep] &= np.linalg.norm(_backproject(pose_b, vga, uv_b[keep], raycast_depth(pose_b, vga, uv_b[keep], room)[0])
                                 - exact[keep], axis=1) < 1e-9
    assert keep.sum() > 2000

    def through(uv):
        xyz = _backproject(pose_a, vga, uv[keep], depth[keep])
        seen_uv, _ = _project(pose_b, vga, xyz)
        seen = _backproject(pose_b, vga, seen_uv, raycast_depth(pose_b, vga, seen_uv, room)[0])
        reprojected, _ = _project(pose_a, vga, seen)
        return np.linalg.norm(seen - xyz, axis=1), np.linalg.norm(reprojected - centres[keep], axis=1)

    off_surface, reprojection = through(centres)
    assert off_surface.max() < 1e-5  # float32 depth rounding only
    assert reprojection.max() < 1e-3
    off_surface, reprojection = through(centres - 0.5)
    assert np.mean(off_surface < 1e-5) < 0.01 and np.median(off_surface) > 1e-3
    assert reprojection.min() > 0.4


# -- features --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,index", [("orbit", 0), ("forward_walk", 30), ("handheld", 45), ("stop", 10)])
def test_orb_finds_many_well_spread_features(room, vga, path, index):
    pose = camera_path(path, 70, 30, seed=0)[1][index]
    img, _ = render_frame(pose, vga, room)
    # A cap high enough not to bind, so the count measures the texture, not ORB's ranking.
    keypoints = cv2.ORB_create(nfeatures=20000).detect(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), None)
    assert len(keypoints) >= 1000
    pts = np.array([k.pt for k in keypoints])
    cells = (pts[:, 1] // 120).astype(int) * 4 + (pts[:, 0] // 160).astype(int)
    assert np.bincount(cells, minlength=16).min() >= 50


# -- files -----------------------------------------------------------------------------------------------------

def test_groundtruth_parses_back_to_the_poses(small_demo):
    ts, t, q = _read_tum(small_demo.groundtruth)
    assert np.abs(ts - small_demo.timestamps).max() < 1e-9
    for i, pose in enumerate(small_demo.world_from_cam):
        assert np.abs(t[i] - pose.translation).max() < 1e-9
        assert np.abs(q[i] - pose.quat_wxyz).max() < 1e-9
    reloaded = load_demo(small_demo.root)
    assert reloaded.camera == small_demo.camera and reloaded.camera.intrinsics_source == "calib"
    assert len(reloaded.images) == 6 and all(p.is_file() for p in reloaded.images)
    assert reloaded.path == "handheld" and reloaded.seed == 3


def test_calib_yaml_holds_the_exact_pinhole_camera(small_demo):
    values = dict(line.split(": ") for line in small_demo.calib.read_text().splitlines() if not line.startswith("#"))
    assert values["model"] == "PINHOLE" and (int(values["width"]), int(values["height"])) == (160, 120)
    assert [float(values[k]) for k in ("fx", "fy", "cx", "cy")] == [131.25, 131.25, 80.0, 60.0]
    assert PIXEL_CONVENTION_COMMENT in small_demo.calib.read_text().splitlines()
    # The app's calibration loader reads the file (comment included) as the same camera.
    loaded = load_calibration(small_demo.calib)
    assert loaded.model == "PINHOLE" and (loaded.width, loaded.height) == (160, 120)
    assert np.array_equal(loaded.params, small_demo.camera.params)


@pytest.mark.parametrize("size,centre", [((640, 480), (320.0, 240.0)), ((161, 121), (80.5, 60.5))])
def test_principal_point_is_the_image_centre_in_colmap_coordinates(size, centre):
    camera = demo_camera(*size)
    assert tuple(camera.principal_point) == centre
    assert tuple(camera.focal_xy) == (525.0 * size[0] / 640, 525.0 * size[1] / 480)


def test_video_opens_and_has_every_frame(small_demo):
    cap = cv2.VideoCapture(str(small_demo.video))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (120, 160, 3)
    first = cv2.imread(str(small_demo.images[0]))
    assert np.abs(frames[0].astype(int) - first.astype(int)).mean() < 12  # lossy, but the same picture


def test_progress_reports_each_frame_and_stop_leaves_no_marker(tmp_path):
    progress = RecordingProgress()
    generate_demo(tmp_path / "a", path="orbit", frames=3, width=64, height=48, video=False, progress=progress)
    assert [r[:3] for r in progress.reports] == [("render", 1, 3), ("render", 2, 3), ("render", 3, 3)]
    stopping = RecordingProgress(stop_after=1)
    with pytest.raises(Cancelled):
        generate_demo(tmp_path / "b", path="orbit", frames=3, width=64, height=48, video=True, progress=stopping)
    assert not (tmp_path / "b" / COMPLETE_MARKER).exists()
    assert not list((tmp_path / "b").glob(".demo.mp4.tmp*"))


def test_ensure_demo_generates_once_and_redoes_interrupted(tmp_path):
    settings = dict(path="stop", frames=66, fps=30, width=48, height=32, video=False)
    folder = ensure_demo(cache_dir=tmp_path, **settings)
    assert folder.parent == tmp_path and folder.name.startswith("demo-") and (folder / COMPLETE_MARKER).is_file()
    start = time.perf_counter()
    assert ensure_demo(cache_dir=tmp_path, **settings) == folder
    assert time.perf_counter() - start < 0.5
    assert ensure_demo(cache_dir=tmp_path, **dict(settings, seed=1)) != folder  # other settings, other folder
    (folder / COMPLETE_MARKER).unlink()  # as if interrupted
    (folder / "images" / "000065.png").unlink()
    assert ensure_demo(cache_dir=tmp_path, **settings) == folder
    assert (folder / "images" / "000065.png").is_file() and (folder / COMPLETE_MARKER).is_file()


def test_ensure_demo_uses_parallax_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PARALLAX_CACHE", str(tmp_path))
    folder = ensure_demo(path="orbit", frames=2, width=32, height=24, video=False)
    assert folder.parent == tmp_path


# -- camera paths ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PATH_NAMES)
def test_paths_keep_the_camera_inside_the_room_and_clear_of_objects(room, name):
    for seed in (0, 1, 2):
        ts, poses = camera_path(name, 150, 30, seed)
        centres = np.array([p.translation for p in poses])
        assert room.free_space_distance(centres).min() >= MIN_CLEARANCE
        assert np.allclose(np.diff(ts), 1 / 30)
        for p in poses[::10]:  # proper rotations in the OpenCV convention, camera y pointing roughly down
            r = p.rotation
            assert np.allclose(r.T @ r, np.eye(3), atol=1e-12) and np.linalg.det(r) > 0
            assert r[2, 1] < 0


def test_orbit_returns_to_its_start_and_moves_smoothly():
    _, poses = camera_path("orbit", 90, 30, seed=4)
    assert poses[-1] == poses[0]
    centres = np.array([p.translation for p in poses])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.min() > 0.05 and steps.max() < 0.3


def test_stop_path_holds_still_for_two_seconds_between_moves():
    ts, poses = camera_path("stop", 120, 30, seed=0)
    same = np.array([poses[i] == poses[i + 1] for i in range(len(poses) - 1)])
    best, run, best_end = 0, 0, 0
    for i, s in enumerate(same):
        run = run + 1 if s else 0
        if run > best:
            best, best_end = run, i + 1
    assert ts[best_end] - ts[best_end - best] >= STOP_SECONDS - 1e-9
    assert not poses[0] == poses[best_end - best] and not poses[-1] == poses[best_end]


def test_fast_rotation_pans_quickly_in_place():
    _, poses = camera_path("fast_rotation", 90, 30, seed=0)
    centres = np.array([p.translation for p in poses])
    assert np.ptp(centres, axis=0).max() < 0.1
    angles = [np.degrees(np.arccos(np.clip((np.trace(a.rotation.T @ b.rotation) - 1) / 2, -1, 1)))
              for a, b in zip(poses[:-1], poses[1:])]
    assert max(angles) * 30 > 150  # degrees per second


# -- point cloud -----------------------------------------------------------------------------------------------

def test_room_point_cloud_lies_on_surfaces_with_rendered_colours(room, vga):
    xyz, rgb = room_point_cloud(20000, seed=0)
    assert xyz.shape == (20000, 3) and rgb.dtype == np.uint8
    xyz2, rgb2 = room_point_cloud(20000, seed=0)
    assert np.array_equal(xyz, xyz2) and np.array_equal(rgb, rgb2)
    # Every point lies on a face of some box.
    on_face = np.zeros(len(xyz), bool)
    for lo, hi in zip(room.boxes[:, :3], room.boxes[:, 3:]):
        inside = np.all((xyz >= lo - 1e-12) & (xyz <= hi + 1e-12), axis=1)
        on_plane = np.any((np.abs(xyz - lo) < 1e-12) | (np.abs(xyz - hi) < 1e-12), axis=1)
        on_face |= inside & on_plane
    assert on_face.all()
    # Points seen by a camera have the colour the renderer gives them there.
    pose = camera_path("orbit", 60, 30, seed=0)[1][10]
    img, depth = render_frame(pose, vga, room)
    uv, z = _project(pose, vga, xyz)
    px = _pixel_index(uv)
    ok = (z > 0) & np.all((px >= 1) & (px < [639, 479]), axis=1)
    ok[ok] &= np.abs(depth[px[ok, 1], px[ok, 0]] - z[ok]) < 0.01
    assert ok.sum() > 500
    rendered = _bilinear(img, uv[ok])[:, ::-1]
    assert np.median(np.abs(rendered - rgb[ok]).mean(axis=1)) < 12


# -- bad input -------------------------------------------------------------------------------------------------

def test_unknown_path_name_is_rejected():
    with pytest.raises(ParallaxError, match="unknown camera path 'spiral'"):
        camera_path("spiral", 10, 30)


@pytest.mark.parametrize("frames", [0, 1, -5, 2.5, True])
def test_bad_frame_count_is_rejected(frames):
    with pytest.raises(ParallaxError, match="frames"):
        camera_path("orbit", frames, 30)


@pytest.mark.parametrize("fps", [0, -30, float("nan"), float("inf")])
def test_bad_fps_is_rejected(fps):
    with pytest.raises(ParallaxError, match="fps"):
        camera_path("orbit", 10, fps)


def test_stop_path_too_short_is_rejected():
    with pytest.raises(ParallaxError, match="needs at least 65 frames"):
        camera_path("stop", 64, 30)


@pytest.mark.parametrize("size", [(8, 480), (640, 0), (640.0, 480)])
def test_bad_image_size_is_rejected(tmp_path, size):
    with pytest.raises(ParallaxError, match="image size"):
        generate_demo(tmp_path, frames=2, width=size[0], height=size[1], video=False)


def test_bad_intrinsics_are_rejected():
    with pytest.raises(ParallaxError, match="intrinsics"):
        demo_camera(640, 480, intrinsics=(-525, 525, 320, 240))


def test_negative_seed_is_rejected(tmp_path):
    with pytest.raises(ParallaxError, match="seed"):
        generate_demo(tmp_path, frames=2, width=32, height=24, seed=-1, video=False)


def test_distorted_camera_is_rejected(room):
    camera = Camera(1, "OPENCV", 64, 48, [50, 50, 32, 24, 0.1, 0, 0, 0])
    with pytest.raises(ParallaxError, match="OPENCV has distortion"):
        render_frame(camera_path("orbit", 2, 30)[1][0], camera, room)


def test_camera_outside_the_room_is_rejected(room):
    with pytest.raises(ParallaxError, match="not inside the room"):
        render_frame(Rigid3d(translation=[10.0, 0.0, 1.0]), demo_camera(64, 48), room)
    with pytest.raises(ParallaxError, match="not inside the room"):
        render_frame(Rigid3d(translation=[-0.2, 0.0, 0.9]), demo_camera(64, 48), room)  # inside the cube


def test_bad_point_count_is_rejected():
    with pytest.raises(ParallaxError, match="point count"):
        room_point_cloud(0)


def test_ensure_demo_rejects_unknown_settings(tmp_path):
    with pytest.raises(ParallaxError, match="unknown settings colour"):
        ensure_demo(cache_dir=tmp_path, colour="red")


def test_load_demo_of_incomplete_folder_is_rejected(tmp_path):
    with pytest.raises(InputNotFound, match="no complete demo scene"):
        load_demo(tmp_path)
