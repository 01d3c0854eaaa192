"""The built-in demo scene: a rendered textured room with exact ground-truth cameras.

``generate_demo`` writes a folder::

    images/000000.png ...   rendered frames (BGR PNG)
    groundtruth.txt         TUM: timestamp tx ty tz qx qy qz qw (world_from_cam)
    calib.yaml              model: PINHOLE, fx fy cx cy width height
    demo.mp4                the same frames as an mp4v video (optional)
    scene_info.json         generator version, seed, path, frames, fps, camera
    reference_cloud.ply     points sampled on the room's surfaces with their colours (exact geometry)
    .complete               written last; its absence means an interrupted generation

    rgb.txt                 TUM frame list (timestamp images/NNNNNN.png), so frames and ground truth share
                            timestamps; the folder opens as a TUM sequence with calib.yaml beside it.

Pixel convention: COLMAP's, as in the rest of Parallax. The image's top-left corner is (0, 0) and the centre
of pixel (column i, row j) is (i + 0.5, j + 0.5), so the ideal principal point of a W x H image is (W/2, H/2)
(OpenCV would say ((W-1)/2, (H-1)/2)). calib.yaml and scene_info.json state it; a world point projected with
the camera lands in pixel (floor(u), floor(v)).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from scene.camera import Camera
from scene.errors import CorruptInput, InputNotFound, ParallaxError, SaveFailed
from scene.io.ply import write_ply
from scene.model import PointCloud, Trajectory
from scene.progress import Cancelled
from scene.rigid import Rigid3d

from .camera_paths import MIN_CLEARANCE, camera_path
from .render import raycast_depth, render_frame, surface_colours
from .room import Room, build_room

GENERATOR_VERSION = "1.3.0"  # 1.3: COLMAP pixel convention (cx = W/2); same images
REFERENCE_CLOUD_POINTS = 150_000
COMPLETE_MARKER = ".complete"
PIXEL_CONVENTION_COMMENT = "# pixel convention: COLMAP (top-left corner at 0,0; pixel centres at +0.5)"
DEFAULT_FOCAL_640 = 525.0

__all__ = ["GENERATOR_VERSION", "DemoScene", "demo_camera", "generate_demo", "ensure_demo", "load_demo",
           "render_frame", "raycast_depth", "room_point_cloud", "build_room"]


@dataclass(frozen=True)
class DemoScene:
    root: Path
    images: list                 # list[Path], one per frame
    groundtruth: Path
    calib: Path
    info: Path
    video: Optional[Path]
    camera: Camera
    timestamps: np.ndarray       # (N,) seconds
    world_from_cam: list         # list[Rigid3d]
    path: str
    seed: int
    fps: float

    def trajectory(self) -> Trajectory:
        return Trajectory.from_poses(self.timestamps, self.world_from_cam)


def demo_camera(width: int = 640, height: int = 480, intrinsics=None) -> Camera:
    """PINHOLE camera; default fx = fy = 525 at 640 x 480 (scaled with the size), principal point at the centre.

    COLMAP pixel convention: the centre is (width / 2, height / 2) (320, 240 at 640 x 480). ``intrinsics``
    (fx, fy, cx, cy) are taken in the same convention.
    """
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, (int, np.integer)) \
            or not isinstance(height, (int, np.integer)) or width < 16 or height < 16:
        raise ParallaxError(f"demo: image size must be integers >= 16, got {width!r} x {height!r}")
    if intrinsics is None:
        fx, fy = DEFAULT_FOCAL_640 * width / 640.0, DEFAULT_FOCAL_640 * height / 480.0
        cx, cy = width / 2.0, height / 2.0  # image centre with the top-left corner at (0, 0)
    else:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise ParallaxError(f"demo: intrinsics must be finite with positive focal lengths, got {intrinsics!r}")
    return Camera(1, "PINHOLE", int(width), int(height), np.array([fx, fy, cx, cy]), intrinsics_source="calib")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SaveFailed(f"demo: cannot write {path}: {exc}") from exc


def _tum_text(timestamps, poses) -> str:
    lines = ["# demo scene ground truth, world_from_cam: timestamp tx ty tz qx qy qz qw"]
    for ts, pose in zip(timestamps, poses):
        w, x, y, z = pose.quat_wxyz
        tx, ty, tz = pose.translation
        lines.append(" ".join("%.9f" % v for v in (ts, tx, ty, tz, x, y, z, w)))
    return "\n".join(lines) + "\n"


def _frame_list_text(timestamps, image_paths) -> str:
    lines = ["# demo scene frames: timestamp filename"]
    lines += ["%.9f images/%s" % (ts, Path(p).name) for ts, p in zip(timestamps, image_paths)]
    return "\n".join(lines) + "\n"


def _calib_text(camera: Camera) -> str:
    fx, fy, cx, cy = camera.params
    return ("# demo scene camera (exact, no distortion)\n"
            f"{PIXEL_CONVENTION_COMMENT}\n"
            f"model: PINHOLE\nwidth: {camera.width}\nheight: {camera.height}\n"
            f"fx: {fx!r}\nfy: {fy!r}\ncx: {cx!r}\ncy: {cy!r}\n")


def _settings(path, frames, fps, width, height, seed, video, intrinsics) -> dict:
    camera = demo_camera(width, height, intrinsics)
    return {"generator_version": GENERATOR_VERSION, "path": str(path), "frames": int(frames), "fps": float(fps),
            "width": int(width), "height": int(height), "seed": int(seed), "video": bool(video),
            "camera": {"model": camera.model, "params": [float(v) for v in camera.params]}}


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def generate_demo(out_dir, path: str = "orbit", frames: int = 120, fps: float = 30, width: int = 640,
                  height: int = 480, seed: int = 0, video: bool = True, progress=None,
                  intrinsics=None) -> DemoScene:
    """Render the demo room along ``path`` into ``out_dir`` (see the module docstring for the layout).

    Deterministic: the same arguments give byte-identical images and text files. ``progress`` receives
    report("render", i, frames); should_stop() aborts with ``Cancelled`` and leaves no completion marker.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParallaxError(f"demo: seed must be a non-negative integer, got {seed!r}")
    camera = demo_camera(width, height, intrinsics)
    timestamps, poses = camera_path(path, frames, fps, seed)
    room = build_room(int(seed))
    clearance = room.free_space_distance(np.array([p.translation for p in poses])).min()
    if clearance < MIN_CLEARANCE:  # a layout/path bug, not user input
        raise AssertionError(f"demo path {path!r} comes {clearance:.3f} m from a surface")
    settings = _settings(path, frames, fps, width, height, seed, video, intrinsics)

    root = Path(out_dir).expanduser()
    images_dir = root / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaveFailed(f"demo: cannot create {images_dir}: {exc}") from exc
    (root / COMPLETE_MARKER).unlink(missing_ok=True)

    video_path = root / "demo.mp4" if video else None
    writer = None
    video_tmp = root / f".demo.mp4.tmp{os.getpid()}.mp4"
    if video:
        writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise SaveFailed(f"demo: OpenCV cannot write an mp4v video at {video_tmp}")
    image_paths = []
    try:
        for i, pose in enumerate(poses):
            if progress is not None and progress.should_stop():
                raise Cancelled("demo generation stopped")
            bgr, _ = render_frame(pose, camera, room)
            ok, png = cv2.imencode(".png", bgr)
            if not ok:
                raise SaveFailed(f"demo: PNG encoding failed for frame {i}")
            image_path = images_dir / f"{i:06d}.png"
            _atomic_write(image_path, png.tobytes())
            image_paths.append(image_path)
            if writer is not None:
                writer.write(bgr)
            if progress is not None:
                progress.report("render", i + 1, len(poses), f"frame {i + 1}/{len(poses)}")
    except BaseException:
        if writer is not None:
            writer.release()
            writer = None
        video_tmp.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.release()
    if video:
        os.replace(video_tmp, video_path)
    for stale in sorted(images_dir.glob("*.png"))[len(poses):]:  # a previous, longer run into the same folder
        if stale.name >= f"{len(poses):06d}.png":
            stale.unlink()
    if not video and (root / "demo.mp4").exists():
        (root / "demo.mp4").unlink()
    _atomic_write(root / "groundtruth.txt", _tum_text(timestamps, poses).encode())
    _atomic_write(root / "rgb.txt", _frame_list_text(timestamps, image_paths).encode())
    _atomic_write(root / "calib.yaml", _calib_text(camera).encode())
    # The true surfaces, so reconstructions of the demo can be compared with what was rendered.
    xyz, rgb = room_point_cloud(REFERENCE_CLOUD_POINTS, seed=seed, include_ceiling=False)
    write_ply(root / "reference_cloud.ply", PointCloud(xyz, rgb))
    info = dict(settings, files={"images": "images/%06d.png", "groundtruth": "groundtruth.txt",
                                 "calib": "calib.yaml", "video": "demo.mp4" if video else None, "frames": "rgb.txt",
                                 "reference_cloud": "reference_cloud.ply"},
                conventions="world z up, metres; poses are world_from_cam; camera x right, y down, z forward; "
                            "pixels: COLMAP (top-left corner at 0,0; pixel centres at +0.5)")
    _atomic_write(root / "scene_info.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    _atomic_write(root / COMPLETE_MARKER, (_key(settings) + "\n").encode())
    return DemoScene(root=root, images=image_paths, groundtruth=root / "groundtruth.txt", calib=root / "calib.yaml",
                     info=root / "scene_info.json", video=video_path, camera=camera, timestamps=timestamps,
                     world_from_cam=list(poses), path=str(path), seed=int(seed), fps=float(fps))


def default_cache_root() -> Path:
    env = os.environ.get("PARALLAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "parallax"


def ensure_demo(cache_dir=None, progress=None, **kwargs) -> Path:
    """Generate the demo once into ``<cache root>/demo-<hash>`` and return that folder.

    The cache root is ``cache_dir``, else $PARALLAX_CACHE, else ~/.cache/parallax. The hash covers the
    generator version and every setting, so a new version or other arguments never reuse stale frames.
    """
    names = ("path", "frames", "fps", "width", "height", "seed", "video", "intrinsics")
    unknown = set(kwargs) - set(names)
    if unknown:
        raise ParallaxError(f"demo: unknown settings {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    defaults = {"path": "orbit", "frames": 120, "fps": 30, "width": 640, "height": 480, "seed": 0, "video": True,
                "intrinsics": None}
    args = dict(defaults, **kwargs)
    settings = _settings(args["path"], args["frames"], args["fps"], args["width"], args["height"], args["seed"],
                         args["video"], args["intrinsics"])
    key = _key(settings)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    folder = root / f"demo-{key}"
    marker = folder / COMPLETE_MARKER
    if marker.is_file() and marker.read_text().strip() == key:
        return folder
    generate_demo(folder, progress=progress, **args)
    return folder


def _parse_calib(path: Path) -> Camera:
    values = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if ":" in line:
            k, v = line.split(":", 1)
            values[k.strip()] = v.strip()
    try:
        if values.get("model") != "PINHOLE":
            raise ValueError(f"model {values.get('model')!r} is not PINHOLE")
        return Camera(1, "PINHOLE", int(values["width"]), int(values["height"]),
                      np.array([float(values[k]) for k in ("fx", "fy", "cx", "cy")]), intrinsics_source="calib")
    except (KeyError, ValueError) as exc:
        raise CorruptInput(f"{path}: not a demo calibration file ({exc})") from exc


def read_tum(path: Path) -> tuple[np.ndarray, list[Rigid3d]]:
    timestamps, poses = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            ts, tx, ty, tz, qx, qy, qz, qw = (float(v) for v in parts)
        except ValueError as exc:
            raise CorruptInput(f"{path}:{n}: expected 'timestamp tx ty tz qx qy qz qw', got {line!r}") from exc
        timestamps.append(ts)
        poses.append(Rigid3d([qw, qx, qy, qz], [tx, ty, tz]))
    return np.array(timestamps), poses


def load_demo(root) -> DemoScene:
    """Re-open a generated demo folder (for example the one ``ensure_demo`` returned)."""
    root = Path(root).expanduser()
    if not (root / COMPLETE_MARKER).is_file():
        raise InputNotFound(f"{root}: no complete demo scene here (missing {COMPLETE_MARKER}); generate it first")
    try:
        info = json.loads((root / "scene_info.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptInput(f"{root / 'scene_info.json'}: unreadable demo description ({exc})") from exc
    timestamps, poses = read_tum(root / "groundtruth.txt")
    images = [root / "images" / f"{i:06d}.png" for i in range(len(poses))]
    video = root / "demo.mp4"
    return DemoScene(root=root, images=images, groundtruth=root / "groundtruth.txt", calib=root / "calib.yaml",
                     info=root / "scene_info.json", video=video if video.is_file() else None,
                     camera=_parse_calib(root / "calib.yaml"), timestamps=timestamps, world_from_cam=poses,
                     path=info["path"], seed=int(info["seed"]), fps=float(info["fps"]))


def room_point_cloud(n: int, seed: int = 0, room: Room | None = None,
                     include_ceiling: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points sampled uniformly by area over the visible surfaces of the seed's room.

    Without the ceiling, a view from above looks into the room (the reference cloud the demo ships).

    Returns (xyz float64 (n, 3), rgb uint8 (n, 3)); colours are the lit texture colours a camera would see.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParallaxError(f"demo: point count must be a positive integer, got {n!r}")
    room = build_room(int(seed)) if room is None else room
    rng = np.random.default_rng([int(seed), 7919])
    boxes = room.boxes
    faces, areas = [], []
    for b in range(len(boxes)):
        ext = boxes[b, 3:] - boxes[b, :3]
        for f in range(6):
            if room.tex_levels[room.face_tex[b, f], 0, 1:].prod() <= 1:  # hidden faces got a 1x1 texture
                continue
            if not include_ceiling and b == 0 and f // 2 == 2 and room.face_origin[b, f, 2] >= boxes[0, 5]:
                continue
            others = [k for k in range(3) if k != f // 2]
            faces.append((b, f))
            areas.append(ext[others[0]] * ext[others[1]])
    areas = np.array(areas)
    xyz = np.empty((0, 3))
    rgb = np.empty((0, 3))
    while len(xyz) < n:
        m = 2 * (n - len(xyz)) + 64
        pick = rng.choice(len(faces), m, p=areas / areas.sum())
        b = np.array([faces[i][0] for i in pick])
        f = np.array([faces[i][1] for i in pick])
        lo, hi = boxes[b, :3], boxes[b, 3:]
        pts = lo + rng.random((m, 3)) * (hi - lo)
        axis = f // 2
        pts[np.arange(m), axis] = room.face_origin[b, f, axis]
        normal = room.face_normal[b, f]
        probe = pts + 1e-4 * normal
        ok = np.all((probe > boxes[0, :3]) & (probe < boxes[0, 3:]), axis=1)
        for j in range(1, len(boxes)):
            ok &= ~np.all((probe > boxes[j, :3]) & (probe < boxes[j, 3:]), axis=1)
        colour, face_id = surface_colours(room, pts + 0.01 * normal, -normal)
        ok &= face_id == 6 * b + f
        xyz = np.concatenate([xyz, pts[ok]])
        rgb = np.concatenate([rgb, colour[ok]])
    return xyz[:n], np.round(np.clip(rgb[:n], 0, 1) * 255).astype(np.uint8)
