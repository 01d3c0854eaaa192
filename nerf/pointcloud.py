"""A point cloud from a trained NeRF, as ``ns-export pointcloud`` makes it, in the scene's world frame.

Rays through random pixels of the training cameras are rendered; each ray whose accumulated
opacity exceeds 0.5 gives one point at its rendered depth, coloured by its rendered colour. Points
outside the bounding box are dropped, then statistical outliers. The box is in world
coordinates: by default from the scene's sparse points, else nerfstudio's scene box.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from scene.errors import ParallaxError
from scene.model import PointCloud
from scene.progress import Cancelled, NullProgress

from .load import LoadedRun, load_pipeline

log = logging.getLogger(__name__)

CLOUD_NAME = "nerf"
BATCH_RAYS = 4096
MIN_OPACITY = 0.5
MAX_RAYS_PER_POINT = 20  # give up when fewer than 1 ray in 20 lands inside the box with opacity


def scene_bounds(scene, low_pct: float = 1.0, high_pct: float = 99.0, pad: float = 0.1):
    """Robust world box (min, max) of the scene's sparse points (or its non-NeRF clouds), or None."""
    snap = scene.snapshot()
    xyz = snap.points.xyz
    if len(xyz) == 0:
        clouds = [c.xyz for name, c in snap.clouds.items() if name != CLOUD_NAME and len(c)]
        xyz = np.concatenate(clouds) if clouds else np.zeros((0, 3))
    xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
    if len(xyz) < 4:
        return None
    low, high = np.percentile(xyz, low_pct, axis=0), np.percentile(xyz, high_pct, axis=0)
    margin = pad * (high - low) + 1e-9
    return low - margin, high + margin


def _ns_scene_box_in_world(loaded: LoadedRun):
    """nerfstudio's scene box (the box ns-export crops to by default), as a world axis-aligned box."""
    aabb = loaded.pipeline.datamanager.train_dataset.scene_box.aabb.detach().cpu().numpy().astype(np.float64)
    corners = np.array([[aabb[i][0], aabb[j][1], aabb[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    world = loaded.ns_to_world(corners)
    return world.min(axis=0), world.max(axis=0)


def _sample_rays(loaded: LoadedRun, count: int, rng: np.random.Generator):
    """Rays through uniformly random pixels of uniformly random training cameras (normalised frame)."""
    import torch

    cameras = loaded.pipeline.datamanager.train_dataset.cameras
    index = rng.integers(0, len(cameras), size=count)
    heights = cameras.height.squeeze(-1).cpu().numpy()[index]
    widths = cameras.width.squeeze(-1).cpu().numpy()[index]
    coords = np.stack([rng.random(count) * heights, rng.random(count) * widths], axis=1)  # (y, x) as nerfstudio
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
        return cameras.to(loaded.device).generate_rays(
            camera_indices=torch.as_tensor(index[:, None], device=loaded.device),
            coords=torch.as_tensor(coords, dtype=torch.float32, device=loaded.device))


def _remove_outliers(xyz: np.ndarray, keep: np.ndarray, std_ratio: float) -> np.ndarray:
    import open3d as o3d

    if len(xyz) <= 20:
        return keep
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    _, index = pcd.remove_statistical_outlier(nb_neighbors=20, std_ratio=std_ratio)
    return keep[np.asarray(index, dtype=np.int64)]


def nerf_point_cloud(loaded: LoadedRun, num_points: int = 100_000, bounding_box=None, remove_outliers: bool = True,
                     std_ratio: float = 10.0, seed: int = 0, progress=None) -> PointCloud:
    """Sample ``num_points`` surface points (fewer after outlier removal) from a loaded run, in world units."""
    import torch

    if num_points <= 0:
        raise ParallaxError(f"the number of points must be positive, got {num_points}")
    progress = progress or NullProgress()
    box_min, box_max = bounding_box if bounding_box is not None else _ns_scene_box_in_world(loaded)
    box_min, box_max = np.asarray(box_min, dtype=np.float64), np.asarray(box_max, dtype=np.float64)
    if not (np.all(np.isfinite(box_min)) and np.all(np.isfinite(box_max)) and np.all(box_max > box_min)):
        raise ParallaxError(f"invalid bounding box {box_min.tolist()} .. {box_max.tolist()}")
    rng = np.random.default_rng(seed)
    points, colours, rays_cast = [], [], 0
    found = 0
    progress.report("point cloud", 0, num_points, "")
    while found < num_points:
        if progress.should_stop():
            raise Cancelled("point cloud export stopped")
        if rays_cast > MAX_RAYS_PER_POINT * num_points:
            if found == 0:
                raise ParallaxError(f"the NeRF gave no opaque surface inside the box {box_min.round(3).tolist()} .. "
                                    f"{box_max.round(3).tolist()} after {rays_cast} rays (trained too little?)")
            log.warning("point cloud: only %d of %d points after %d rays", found, num_points, rays_cast)
            break
        rays = _sample_rays(loaded, BATCH_RAYS, rng)
        rays_cast += BATCH_RAYS
        with torch.no_grad():
            out = loaded.model(ray_bundle=rays)
        opacity = out["accumulation"].squeeze(-1).cpu().numpy()
        depth = out["depth"].squeeze(-1).cpu().numpy()
        origins = rays.origins.cpu().numpy().astype(np.float64)
        directions = rays.directions.cpu().numpy().astype(np.float64)
        world = loaded.ns_to_world(origins + directions * depth[:, None])
        keep = (opacity > MIN_OPACITY) & np.all(world >= box_min, axis=1) & np.all(world <= box_max, axis=1)
        keep &= np.all(np.isfinite(world), axis=1)
        points.append(world[keep])
        colours.append(out["rgb"][..., :3].cpu().numpy()[keep])
        found += int(keep.sum())
        progress.report("point cloud", min(found, num_points), num_points, f"{rays_cast} rays")
    xyz = np.concatenate(points)[:num_points]
    rgb = np.round(np.clip(np.concatenate(colours)[:num_points], 0.0, 1.0) * 255.0).astype(np.uint8)
    keep = np.arange(len(xyz))
    if remove_outliers:
        keep = _remove_outliers(xyz, keep, std_ratio)
    return PointCloud(xyz[keep], rgb[keep])


def export_point_cloud(run_dir, num_points: int = 100_000, *, scene=None, output: Optional[Path] = None,
                       bounding_box=None, device: str = "cpu", loaded: Optional[LoadedRun] = None,
                       name: str = CLOUD_NAME, remove_outliers: bool = True, std_ratio: float = 10.0,
                       seed: int = 0, progress=None) -> PointCloud:
    """The NeRF's point cloud in the scene's world frame; added to ``scene`` as ``name`` and/or written as PLY.

    ``bounding_box`` (world min, max) defaults to the scene's sparse points when ``scene`` has them,
    else to nerfstudio's scene box. ``loaded`` reuses an already loaded run.
    """
    if output is not None:
        output = Path(output).expanduser()
        if output.suffix.lower() != ".ply":
            raise ParallaxError(f"point clouds are written as PLY: {output.name!r} should end in .ply")
        if not output.parent.is_dir():
            raise ParallaxError(f"the output folder {output.parent} does not exist")
    if bounding_box is None and scene is not None:
        bounding_box = scene_bounds(scene)
    loaded = loaded or load_pipeline(run_dir, device=device)
    cloud = nerf_point_cloud(loaded, num_points, bounding_box, remove_outliers, std_ratio, seed, progress)
    if output is not None:
        from scene.io.ply import write_ply

        write_ply(output, cloud)
    if scene is not None:
        scene.set_cloud(name, cloud)
    return cloud
