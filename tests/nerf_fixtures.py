"""TEST-ONLY helper: a tiny trained nerfacto run in the RunLayout, built without the trainer modules.

The scene is a sphere with a smooth colour pattern on a black background (exact geometry known),
seen from 12 cameras around it; it sits off the world origin so that the dataparser's
orient/centre/scale transform is not the identity. The run folder matches
nerf/layout.py (run.json, dataset/transforms.json, ns/nerfacto/run/config.yml, checkpoints) and
its run.json names a saved project (``source``) holding the same cameras, a "slam" trajectory and
sparse points on the sphere, so the CLI's slam/sfm paths can be exercised.

Building takes tens of CPU seconds, so a finished run is reused from the same folder (the session's
pytest base temp) by every test module that asks for it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene.camera import Camera
from scene.model import FrameRef, Image, Points3D, Scene, Trajectory
from scene.rigid import Rigid3d

SPHERE_CENTRE = np.array([2.0, -1.0, 1.5])
SPHERE_RADIUS = 1.0
SCENE_SIZE = 2.0 * SPHERE_RADIUS
CAMERA_DISTANCE = 3.2
SIZE = 24          # training images are SIZE x SIZE
FOCAL = 24.0       # ~53 degree field of view: the sphere fills about half the width
VIEWS = 12
ITERATIONS = 60
DONE_MARKER = ".tiny-run-complete"


@dataclass(frozen=True)
class TinyRun:
    root: Path          # the run folder
    project: Path       # the project it was "trained from" (run.json's source)
    scene: Scene        # cameras and registered images of the training set
    images: dict        # file name -> uint8 HxWx3 training image


def look_at(centre, target, up=(0.0, 0.0, 1.0)) -> Rigid3d:
    """OpenCV cam_from_world for a camera at ``centre`` looking at ``target`` (image up ~ ``up``)."""
    z = np.asarray(target, float) - np.asarray(centre, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation_cw = np.stack([x, y, z])  # rows: camera axes in world
    return Rigid3d.from_rotation(rotation_cw, -rotation_cw @ np.asarray(centre, float))


def sphere_cameras(count: int = VIEWS) -> list[Rigid3d]:
    """Cameras around the sphere at two elevations, all looking at its centre."""
    poses = []
    for k in range(count):
        azimuth = 2.0 * np.pi * k / count
        elevation = np.radians(10.0 if k % 2 else 45.0)
        direction = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                              np.sin(elevation)])
        poses.append(look_at(SPHERE_CENTRE + CAMERA_DISTANCE * direction, SPHERE_CENTRE))
    return poses


def sphere_colour(points: np.ndarray) -> np.ndarray:
    """Smooth, view-independent pattern over the sphere (a 24 px view resolves it)."""
    n = (points - SPHERE_CENTRE) / SPHERE_RADIUS
    longitude, latitude = np.arctan2(n[:, 1], n[:, 0]), np.arcsin(np.clip(n[:, 2], -1.0, 1.0))
    red = 0.5 + 0.4 * np.sin(2.0 * longitude)
    green = 0.5 + 0.4 * np.cos(3.0 * latitude + longitude)
    blue = 0.5 + 0.4 * np.sin(2.5 * latitude)
    return np.stack([red, green, blue], axis=1)


def render_sphere(camera: Camera, cam_from_world: Rigid3d) -> tuple[np.ndarray, np.ndarray]:
    """Exact ray cast on a black background: (uint8 HxWx3 colours, HxW distance along each unit ray, inf on a miss)."""
    fx, fy = camera.focal_xy
    cx, cy = camera.principal_point
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    rays_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rays = rays_cam @ cam_from_world.rotation  # camera -> world directions
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    to_centre = SPHERE_CENTRE - cam_from_world.center()
    along = rays @ to_centre
    discriminant = along ** 2 - (to_centre @ to_centre - SPHERE_RADIUS ** 2)
    hit = discriminant > 0
    t = np.where(hit, along - np.sqrt(np.maximum(discriminant, 0.0)), np.inf)
    rgb = np.zeros((len(rays), 3))
    rgb[hit] = sphere_colour(cam_from_world.center() + t[hit, None] * rays[hit])
    shape = (camera.height, camera.width)
    return np.round(rgb * 255).astype(np.uint8).reshape(*shape, 3), t.reshape(shape)


def distance_to_surface(xyz) -> np.ndarray:
    """Distance of world points to the sphere's surface."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return np.abs(np.linalg.norm(p - SPHERE_CENTRE, axis=1) - SPHERE_RADIUS)


def scene_box(pad: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    return SPHERE_CENTRE - SPHERE_RADIUS - pad, SPHERE_CENTRE + SPHERE_RADIUS + pad


def tiny_camera(size: int = SIZE) -> Camera:
    focal = FOCAL * size / SIZE
    return Camera(1, "PINHOLE", size, size, np.array([focal, focal, size / 2.0, size / 2.0]))


def _scene_and_images(image_dir: Path) -> tuple[Scene, dict]:
    import cv2

    camera = tiny_camera()
    scene = Scene()
    scene.add_camera(camera)
    images, records = {}, []
    image_dir.mkdir(parents=True, exist_ok=True)
    for k, pose in enumerate(sphere_cameras()):
        name = f"frame_{k:04d}.png"
        rgb, depth = render_sphere(camera, pose)
        # RGBA (background transparent): with a random training background, empty space must stay empty
        alpha = np.where(np.isfinite(depth), 255, 0).astype(np.uint8)
        cv2.imwrite(str(image_dir / name), np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha]))
        images[name] = rgb
        records.append(Image(k + 1, name, camera.camera_id, pose, source=FrameRef(str(image_dir / name))))
    scene.add_images(records)
    return scene, images


def _source_project(scene: Scene, folder: Path) -> Path:
    """The project the run is recorded as trained from: the same cameras, a slam trajectory, sparse points."""
    from scene.project import save_project

    poses = [scene.images[i].cam_from_world for i in sorted(scene.images)]
    scene.set_trajectory("slam", Trajectory.from_poses(np.arange(len(poses), dtype=float),
                                                       [p.inverse() for p in poses]))
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(200, 3))
    surface = SPHERE_CENTRE + SPHERE_RADIUS * normals / np.linalg.norm(normals, axis=1, keepdims=True)
    scene.set_points(Points3D(np.arange(1, 201), surface, np.full((200, 3), 128, np.uint8), np.zeros(200),
                              np.zeros(201, dtype=np.int64)))
    return save_project(scene, folder)


def _trainer_config(layout, iterations: int):
    """A tiny nerfacto on CPU, assembled here (not from nerf/presets.py) so tests stand alone."""
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
    from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.models.nerfacto import NerfactoModelConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    from nerf.layout import EXPERIMENT, TIMESTAMP

    def adam(lr):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr / 10, max_steps=10 * iterations)}

    model = NerfactoModelConfig(
        implementation="torch", num_levels=8, log2_hashmap_size=14, max_res=128, hidden_dim=32,
        hidden_dim_color=32, num_proposal_iterations=1, num_proposal_samples_per_ray=(48,),
        num_nerf_samples_per_ray=24, proposal_net_args_list=[
            {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 64, "use_linear": False}],
        use_appearance_embedding=False, camera_optimizer=CameraOptimizerConfig(mode="off"),
        average_init_density=0.01, eval_num_rays_per_chunk=1 << 12, background_color="random")
    datamanager = VanillaDataManagerConfig(
        dataparser=NerfstudioDataParserConfig(eval_mode="all"), data=layout.dataset_dir,
        train_num_rays_per_batch=1024, eval_num_rays_per_batch=1024)
    return TrainerConfig(
        method_name="nerfacto", experiment_name=EXPERIMENT, timestamp=TIMESTAMP, output_dir=layout.ns_output_dir,
        max_num_iterations=iterations, steps_per_save=iterations, steps_per_eval_batch=10 ** 9,
        steps_per_eval_image=10 ** 9, steps_per_eval_all_images=10 ** 9, mixed_precision=False, vis="tensorboard",
        machine=MachineConfig(device_type="cpu"),
        pipeline=VanillaPipelineConfig(datamanager=datamanager, model=model),
        optimizers={"proposal_networks": adam(3e-2), "fields": adam(3e-2), "camera_opt": adam(1e-3)},
        viewer=ViewerConfig(quit_on_train_completion=True))


def _train(config) -> None:
    import torch
    from nerfstudio.utils import writer

    from nerf.offline import lpips_stubbed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning OpenMP threads collapse on a shared 2-core machine
    try:
        config.save_config()
        with lpips_stubbed():
            trainer = config.setup(local_rank=0, world_size=1)
            trainer.setup()
        trainer.train()
    finally:
        torch.set_num_threads(threads)
        writer.EVENT_WRITERS.clear()
        writer.EVENT_STORAGE.clear()


def build_tiny_run(root, iterations: int = ITERATIONS) -> TinyRun:
    """Build (or reuse, when already complete) the tiny trained run under ``root``."""
    from nerf.layout import RUN_SCHEMA, RunLayout
    from scene.io.nerfstudio import write_transforms

    root = Path(root)
    layout = RunLayout.at(root / "run")
    project = root / "source.parallax"
    scene, images = _scene_and_images(layout.dataset_dir / "images")
    if not (root / DONE_MARKER).is_file():
        file_paths = {i: f"images/{scene.images[i].name}" for i in scene.images}
        write_transforms(scene, layout.transforms, file_paths=file_paths)
        _source_project(_copy_scene(scene), project)
        layout.record.write_text(json.dumps({"schema": RUN_SCHEMA, "preset": "test-tiny", "device": "cpu",
                                             "status": "finished", "steps": iterations,
                                             "source": str(project)}) + "\n")
        _train(_trainer_config(layout, iterations))
        (root / DONE_MARKER).write_text("ok\n")
    return TinyRun(layout.root, project, scene, images)


def _copy_scene(scene: Scene) -> Scene:
    snap = scene.snapshot()
    out = Scene()
    for camera in snap.cameras.values():
        out.add_camera(camera)
    out.add_images(list(snap.images.values()))
    return out


def shared_tiny_run(tmp_path_factory) -> TinyRun:
    """The session's tiny run: trained by the first module that asks, reused by the others."""
    return build_tiny_run(tmp_path_factory.getbasetemp() / "nerf_tiny_run")


def copy_run(run: TinyRun, target: Path, checkpoints: bool = True, record: dict | None = None) -> Path:
    """A copy of the run folder (optionally without checkpoints, optionally with another run.json)."""
    import shutil

    ignore = shutil.ignore_patterns("*.ckpt") if not checkpoints else None
    shutil.copytree(run.root, target, ignore=ignore)
    if record is not None:
        (target / "run.json").write_text(json.dumps(record) + "\n")
    return target
