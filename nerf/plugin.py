"""nerfstudio configs of our presets, our DataParser, and the plugin entry point (``ns-train parallax-cpu``).

pyproject.toml registers ``parallax_cpu`` under nerfstudio's ``nerfstudio.method_configs`` entry points.
Only the model and data classes nerfstudio needs are imported (not ``method_configs``: ~10 CPU-s).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import LoggingConfig, LocalWriterConfig, MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from nerf.layout import EXPERIMENT, TIMESTAMP
from nerf.offline import OfflineNerfactoModelConfig, OfflineSplatfactoModelConfig
from nerf.presets import Preset, get_preset


# --- the DataParser: nerfstudio's, centred and scaled by the sparse points when transforms.json says so -----

@dataclass
class ParallaxDataParserConfig(NerfstudioDataParserConfig):
    _target: Type = field(default_factory=lambda: ParallaxDataParser)
    downscale_factor: int | None = 1  # our dataset is already at the preset's size: never rescale or prompt


class ParallaxDataParser(Nerfstudio):
    """With ``parallax_bounds`` in transforms.json: world -> (world - centre) / radius, no rotation.

    Otherwise nerfstudio's own orientation/centring/scaling by the poses. Either way the transform lands in
    nerfstudio's dataparser_transforms.json, which renderers use to map scene cameras into the NeRF.
    """

    config: ParallaxDataParserConfig

    def _generate_dataparser_outputs(self, split="train", **kwargs):
        data = self.config.data
        meta_path = data if data.suffix == ".json" else data / "transforms.json"
        bounds = json.loads(meta_path.read_text(encoding="utf-8")).get("parallax_bounds")
        if not bounds:
            return super()._generate_dataparser_outputs(split, **kwargs)
        saved = self.config
        self.config = dataclasses.replace(saved, orientation_method="none", center_method="none",
                                          auto_scale_poses=False, scale_factor=1.0)
        try:
            outputs = super()._generate_dataparser_outputs(split, **kwargs)
        finally:
            self.config = saved
        center = torch.tensor(bounds["center"], dtype=torch.float32)
        scale = float(saved.scale_factor) / float(bounds["radius"])
        c2w = outputs.cameras.camera_to_worlds
        c2w[..., :3, 3] = (c2w[..., :3, 3] - center) * scale
        transform = torch.cat([torch.eye(3), -center[:, None]], dim=1)
        return dataclasses.replace(outputs, dataparser_transform=transform, dataparser_scale=scale)


# --- presets -> TrainerConfig ------------------------------------------------------------------------

def _nerfacto_optimizers() -> dict:
    def adam(lr, lr_final, max_steps):
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps)}

    return {"proposal_networks": adam(1e-2, 1e-4, 200000), "fields": adam(1e-2, 1e-4, 200000),
            "camera_opt": adam(1e-3, 1e-4, 5000)}


def _nerfacto_model(preset: Preset, background: str) -> OfflineNerfactoModelConfig:
    values = dict(preset.model)
    mode = values.pop("camera_optimizer", "SO3xR3")
    if background in ("white", "black"):
        values["background_color"] = background
    return OfflineNerfactoModelConfig(camera_optimizer=CameraOptimizerConfig(mode=mode), **values)


def _splatfacto_config(preset: Preset, background: str) -> TrainerConfig:
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig

    from nerfstudio.configs.method_configs import method_configs  # CUDA machines only: the cost is acceptable

    config = copy.deepcopy(method_configs["splatfacto"])
    model = OfflineSplatfactoModelConfig(**{f.name: getattr(config.pipeline.model, f.name)
                                            for f in dataclasses.fields(config.pipeline.model) if f.name != "_target"})
    if background in ("white", "black"):
        model.background_color = background
    config.pipeline.model = model
    config.pipeline.datamanager = FullImageDatamanagerConfig(dataparser=ParallaxDataParserConfig(load_3D_points=True))
    return config


def preset_config(name: str, background: str = "scene") -> TrainerConfig:
    """The nerfstudio TrainerConfig of a preset, with no data path or output folder yet."""
    preset = get_preset(name)
    if preset.method == "splatfacto":
        config = _splatfacto_config(preset, background)
    else:
        config = TrainerConfig(
            pipeline=VanillaPipelineConfig(
                datamanager=VanillaDataManagerConfig(
                    dataparser=ParallaxDataParserConfig(),
                    train_num_rays_per_batch=preset.train_rays_per_batch,
                    eval_num_rays_per_batch=preset.eval_rays_per_batch),
                model=_nerfacto_model(preset, background)),
            optimizers=_nerfacto_optimizers(),
            viewer=ViewerConfig(num_rays_per_chunk=1 << 15))
    config.method_name = name
    config.max_num_iterations = preset.iterations
    config.steps_per_save = preset.steps_per_save
    config.steps_per_eval_batch = preset.steps_per_eval_batch
    config.steps_per_eval_image = preset.steps_per_eval_image
    config.steps_per_eval_all_images = 10 ** 9  # a full held-out pass is the benchmark's job, not training's
    config.save_only_latest_checkpoint = True
    config.mixed_precision = False if name == "parallax-cpu" else config.mixed_precision
    config.vis = "viewer"  # what ns-train users expect; our child process never starts it
    return config


def build_config(name: str, dataset_dir: Path, run_dir: Path, device: str, max_iterations: int,
                 background: str = "scene", rays_per_batch: int | None = None) -> TrainerConfig:
    """The TrainerConfig our child trains with: outputs at RunLayout's paths, no viewer, no loggers."""
    config = preset_config(name, background)
    config.output_dir = Path(run_dir)
    config.experiment_name = EXPERIMENT
    config.timestamp = TIMESTAMP
    config.data = Path(dataset_dir)
    config.pipeline.datamanager.data = Path(dataset_dir)
    config.pipeline.datamanager.dataparser.data = Path(dataset_dir)
    config.machine = MachineConfig(device_type=device, num_devices=1)
    if device != "cuda":
        config.mixed_precision = False
    config.max_num_iterations = int(max_iterations)
    config.vis = "tensorboard"  # starts no web server; our loop writes no tensorboard events either
    config.viewer.quit_on_train_completion = True
    config.logging = LoggingConfig(local_writer=LocalWriterConfig(enable=False))
    if rays_per_batch:
        config.pipeline.datamanager.train_num_rays_per_batch = int(rays_per_batch)
        config.pipeline.datamanager.eval_num_rays_per_batch = int(rays_per_batch)
    return config


parallax_cpu = MethodSpecification(config=preset_config("parallax-cpu"),
                                   description="Parallax: nerfacto tuned for a few CPU cores, offline")
