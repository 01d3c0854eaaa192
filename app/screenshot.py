"""Render the main window on the demo scene and save a PNG: ``python -m app.screenshot OUT.png``.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24"``). Settings go to a
temporary folder so the user's window layout and recent files are untouched.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def _settle(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def fallback_scene():
    """A scene built in code, used only while the demo generator is unavailable.

    Coloured points on a few boxes standing on a floor, twenty registered cameras circling
    them, a ground-truth circle and a slightly drifting estimate of it.
    """
    import numpy as np

    from scene.camera import Camera
    from scene.model import Image, Points3D, Scene, Trajectory
    from scene.rigid import Rigid3d

    rng = np.random.default_rng(3)
    parts = []
    for lo, hi, base in (((-3, -3, 0), (3, 3, 0.01), (120, 110, 95)), ((-1, -0.6, 0), (0.2, 0.6, 1.2), (190, 70, 60)),
                         ((0.6, -1.2, 0), (1.5, -0.3, 0.7), (70, 130, 200)), ((0.5, 0.4, 0), (1.1, 1.3, 1.6),
                                                                              (220, 190, 80))):
        lo, hi = np.array(lo, float), np.array(hi, float)
        n = int(4000 * np.prod(np.maximum(hi - lo, 0.3)))
        xyz = rng.uniform(lo, hi, (n, 3))
        axis = rng.integers(0, 3, n)  # snap each sample onto one face of its box
        side = rng.integers(0, 2, n)
        xyz[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
        shade = 0.75 + 0.25 * np.sin(xyz[:, 0] * 7) * np.cos(xyz[:, 1] * 5)
        parts.append((xyz, np.clip(np.array(base) * shade[:, None] + rng.normal(0, 8, (n, 3)), 0, 255)))
    xyz = np.vstack([p[0] for p in parts])
    rgb = np.vstack([p[1] for p in parts]).astype(np.uint8)
    scene = Scene()
    scene.add_camera(Camera(1, "PINHOLE", 640, 480, [520.0, 520.0, 320.0, 240.0], intrinsics_source="calib"))
    images, centers, quats = [], [], []
    for i, angle in enumerate(np.linspace(0, 2 * np.pi, 24, endpoint=False)):
        center = np.array([4.0 * np.cos(angle), 4.0 * np.sin(angle), 1.6])
        forward = -center + np.array([0, 0, 0.6])
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        world_from_cam_rot = np.column_stack([right, down, forward])
        cam_from_world = Rigid3d.from_rotation(world_from_cam_rot.T, -world_from_cam_rot.T @ center)
        images.append(Image(i + 1, f"frame_{i:04d}.png", 1, cam_from_world))
        centers.append(center)
        quats.append(cam_from_world.inverse().quat_wxyz)
    scene.add_images(images)
    ids = np.arange(len(xyz))
    scene.set_points(Points3D(ids, xyz, rgb, rng.uniform(0.2, 1.2, len(xyz)), np.zeros(len(xyz) + 1, np.int64)))
    t = np.arange(len(centers), dtype=float)
    centers, quats = np.array(centers), np.array(quats)
    scene.set_trajectory("ground_truth", Trajectory(t, quats, centers))
    drift = np.cumsum(rng.normal(0, 0.03, centers.shape), axis=0)
    scene.set_trajectory("slam", Trajectory(t, quats, centers * 1.02 + drift))
    return scene


def take_screenshot(out: Path, width: int = 1600, height: int = 1000, path: str | None = None,
                    frame_fraction: float = 0.35) -> Path:
    os.environ.setdefault("PARALLAX_SETTINGS_DIR", tempfile.mkdtemp(prefix="parallax-settings-"))
    from .gui import create_application
    from .main_window import MainWindow

    logging.getLogger().setLevel(logging.INFO)
    app = create_application([])
    window = MainWindow(confirm_discard=False)
    window.resize(width, height)
    window.show()
    _settle(app, 0.3)
    if path:
        window.open_path(path)
    else:
        try:
            import assets.demo_scene  # noqa: F401
        except ImportError:
            logging.getLogger(__name__).warning("the demo generator is not available; showing a scene built in code")
            window.load_scene(fallback_scene())
        else:
            window.open_demo()
    if not window.wait_for_task(600_000):
        raise SystemExit("screenshot: loading did not finish in 10 minutes")
    if window.last_message_box is not None:
        raise SystemExit(f"screenshot: loading failed: {window.last_message_box.text()}")
    frames = window.frames
    if frames.image_ids:
        frames.slider.setValue(int(frame_fraction * (len(frames.image_ids) - 1)))
    _settle(app, 0.5)
    window.view.reset_camera()
    _settle(app, 0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(out)):
        raise SystemExit(f"screenshot: cannot write {out}")
    window.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="assets/screenshot.png")
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    parser.add_argument("--path", help="open this path instead of the demo scene")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    written = take_screenshot(Path(args.out), width, height, args.path)
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
