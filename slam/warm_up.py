"""Load every SLAM kernel before a live run.

numba loads a compiled kernel from its on-disk cache the first time the kernel is called in a process, and
holds the GIL while it does (tens of milliseconds per kernel, measured). During Play that would stall the
GUI thread at the first frames and again at the first loop closure. ``warm_up`` calls them all once, before:
a synchronous ``System`` over a few frames (features, initialisation, tracking, local mapping, place
recognition), then the loop-closing kernels on a tiny synthetic problem (Sim(3) RANSAC and refinement,
pose graph). The results are thrown away.
"""
from __future__ import annotations

import numpy as np

from geometry.pose_graph import optimize_pose_graph
from geometry.sim3 import estimate_sim3, refine_sim3
from scene.camera import Camera


def warm_up(camera: Camera, frames, options=None) -> None:
    """Run the SLAM kernels once: ``frames`` (a few consecutive images of the source; up to ~20 take the
    system through initialisation and several keyframes), then the loop-closing kernels."""
    from slam.system import System

    system = System(camera, options)
    for i, image in enumerate(frames):
        system.step(image, float(i))
    system.close()
    _loop_closing_kernels()


def _loop_closing_kernels() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 1.0, (12, 3)) + np.array([0.0, 0.0, 4.0])
    rays = points[:, :2] / points[:, 2:]
    sigma = np.full(len(points), 0.002)
    estimate_sim3(points, points, rays, rays, sigma, sigma, iterations=5)
    refine_sim3(np.eye(4), points, points, rays, rays, sigma, sigma)
    poses = np.stack([np.eye(4)] * 3)
    poses[1:, 0, 3] = [1.0, 2.0]
    step = np.eye(4)
    step[0, 3] = -1.0
    optimize_pose_graph(poses, np.array([0, 1]), np.array([1, 2]), np.stack([step, step]),
                        np.array([True, False, False]))
