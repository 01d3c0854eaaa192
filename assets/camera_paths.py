"""Camera paths through the demo room with exact ground truth (world_from_cam, OpenCV camera axes).

Camera axes are OpenCV's (x right, y down, z forward), which COLMAP shares; image coordinates (see render.py)
follow COLMAP's pixel convention; the poses do not depend on it.

Every path is a pure function of (frames, fps, seed): frame i is at time i / fps. Positions are chosen so the
camera stays at least ``MIN_CLEARANCE`` metres from every wall and object (checked by ``path_clearance``).
"""
from __future__ import annotations

import math

import numpy as np

from scene.errors import ParallaxError
from scene.rigid import Rigid3d

PATH_NAMES = ("orbit", "forward_walk", "fast_rotation", "stop", "handheld")
MIN_CLEARANCE = 0.3
STOP_SECONDS = 2.0
ROOM_CENTRE_TARGET = np.array([0.0, 0.0, 0.9])


def look_at(centre, target, roll: float = 0.0) -> Rigid3d:
    """world_from_cam with the camera at ``centre`` looking at ``target``, world z up; x right, y down, z forward."""
    centre = np.asarray(centre, np.float64)
    forward = np.asarray(target, np.float64) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return Rigid3d.from_rotation(np.stack([right, down, forward], axis=1), centre)


def look_dir(centre, yaw: float, pitch: float, roll: float = 0.0) -> Rigid3d:
    """Camera at ``centre`` looking along heading ``yaw`` (radians from +x towards +y), ``pitch`` up."""
    direction = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    return look_at(centre, np.asarray(centre, np.float64) + direction, roll)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _wiggle(rng: np.random.Generator, t: np.ndarray, amplitude: float, freqs=(0.07, 0.13, 0.23, 0.41)) -> np.ndarray:
    """Smooth bounded random signal: a sum of sines with random phases, |value| <= amplitude."""
    weights = rng.uniform(0.5, 1.0, len(freqs))
    weights /= weights.sum()
    phases = rng.uniform(0, 2 * np.pi, len(freqs))
    freq = np.asarray(freqs) * rng.uniform(0.8, 1.25, len(freqs))
    return amplitude * np.sum(weights[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None, :] + phases[:, None]),
                              axis=0)


def _orbit(t, frames, fps, rng):
    # theta runs over exactly one turn from the first to the last frame, so the last pose equals the first.
    theta = np.linspace(0.0, 2 * np.pi, frames) + rng.uniform(0, 2 * np.pi)
    rx, ry = 2.7 + rng.uniform(-0.1, 0.1), 1.85 + rng.uniform(-0.05, 0.05)
    h = 1.5 + rng.uniform(-0.1, 0.1)
    poses = [look_at([rx * math.cos(a), ry * math.sin(a), h + 0.1 * math.sin(2 * a)], ROOM_CENTRE_TARGET)
             for a in theta]
    poses[-1] = poses[0]
    return poses


def _walk_positions(s, y0, rng, t):
    """Points along the corridor y = y0 from x = -2.9 to x = 2.7 at fraction s, with a little sway and bob."""
    x = -2.9 + 5.6 * s
    y = y0 + 0.05 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 6.3))
    z = 1.55 + 0.02 * np.sin(2 * np.pi * 1.8 * t)
    return np.stack([x, y, z], axis=1)


def _forward_walk(t, frames, fps, rng):
    s = np.linspace(0.0, 1.0, frames)
    y0 = -1.35 + rng.uniform(-0.1, 0.1)
    pos = _walk_positions(s, y0, rng, t)
    yaw = 0.18 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3))
    pitch = -0.08 + 0.04 * np.sin(2 * np.pi * 0.5 * t)
    return [look_dir(p, a, b) for p, a, b in zip(pos, yaw, pitch)]


def _fast_rotation(t, frames, fps, rng):
    centre = np.array([0.8, 1.35, 1.5]) + rng.uniform(-0.05, 0.05, 3)
    yaw0 = rng.uniform(0, 2 * np.pi)
    yaw = yaw0 + math.radians(95) * np.sin(2 * np.pi * t / 2.4)  # peaks near 250 deg/s
    pitch = -0.1 + 0.08 * np.sin(2 * np.pi * t / 1.7)
    offset = 0.03 * np.stack([np.cos(2 * np.pi * t / 1.3), np.sin(2 * np.pi * t / 1.3), np.zeros_like(t)], axis=1)
    return [look_dir(centre + o, a, b) for o, a, b in zip(offset, yaw, pitch)]


def stop_frames(fps: float) -> int:
    """Frames of the stationary part: spans at least STOP_SECONDS between its first and last frame."""
    return int(math.ceil(STOP_SECONDS * fps - 1e-9)) + 1


def _stop(t, frames, fps, rng):
    n_stop = stop_frames(fps)
    n_move = frames - n_stop
    n_first = n_move // 2
    # Fraction along the corridor: ease 0 -> 0.45 during the first move, hold, ease 0.45 -> 1 after.
    s = np.empty(frames)
    s[:n_first] = 0.45 * _smoothstep(np.arange(n_first) / max(n_first, 1))
    s[n_first:n_first + n_stop] = 0.45
    n_last = frames - n_first - n_stop
    s[n_first + n_stop:] = 0.45 + 0.55 * _smoothstep(np.arange(1, n_last + 1) / n_last)
    y0 = -1.35 + rng.uniform(-0.1, 0.1)
    pos = np.stack([-2.9 + 5.6 * s, np.full(frames, y0), np.full(frames, 1.5)], axis=1)
    yaw = 0.3 * np.sin(np.pi * s) + rng.uniform(-0.1, 0.1)
    poses = [look_dir(p, a, -0.1) for p, a in zip(pos, yaw)]
    held = poses[n_first]
    return poses[:n_first] + [held] * n_stop + poses[n_first + n_stop:]


def _handheld(t, frames, fps, rng):
    base = np.array([-0.4, 1.35, 1.45])
    pos = base + np.stack([_wiggle(rng, t, 0.7), _wiggle(rng, t, 0.3), _wiggle(rng, t, 0.12)], axis=1)
    pos += np.stack([_wiggle(rng, t, 0.004, (4.1, 5.3, 7.7, 9.1)) for _ in range(3)], axis=1)  # hand tremor
    yaw = rng.uniform(0, 2 * np.pi) + _wiggle(rng, t, 0.9, (0.05, 0.11, 0.19, 0.31))
    pitch = -0.1 + _wiggle(rng, t, 0.15)
    roll = _wiggle(rng, t, 0.06)
    return [look_dir(p, a, b, r) for p, a, b, r in zip(pos, yaw, pitch, roll)]


_BUILDERS = {"orbit": _orbit, "forward_walk": _forward_walk, "fast_rotation": _fast_rotation, "stop": _stop,
             "handheld": _handheld}


def camera_path(name: str, frames: int, fps: float, seed: int = 0) -> tuple[np.ndarray, list[Rigid3d]]:
    """(timestamps (N,) seconds from 0, world_from_cam poses) for the named path."""
    if name not in _BUILDERS:
        raise ParallaxError(f"demo: unknown camera path {name!r}; choose one of {', '.join(PATH_NAMES)}")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 2:
        raise ParallaxError(f"demo: frames must be an integer >= 2, got {frames!r}")
    if not isinstance(fps, (int, float, np.number)) or not math.isfinite(fps) or fps <= 0:
        raise ParallaxError(f"demo: fps must be a positive number, got {fps!r}")
    if name == "stop" and frames < stop_frames(fps) + 4:
        raise ParallaxError(f"demo: the 'stop' path holds still for {STOP_SECONDS:g} s ({stop_frames(fps)} frames "
                            f"at {fps:g} fps) and needs at least {stop_frames(fps) + 4} frames, got {frames}")
    frames = int(frames)
    timestamps = np.arange(frames, dtype=np.float64) / float(fps)
    rng = np.random.default_rng([int(seed), PATH_NAMES.index(name)])
    poses = _BUILDERS[name](timestamps, frames, float(fps), rng)
    return timestamps, poses
