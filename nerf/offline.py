"""Offline always: nerfstudio's models build torchmetrics' LPIPS at init, which downloads AlexNet weights.

Our presets use the model subclasses below. When the AlexNet weights are not already in torch hub's cache
they get a stub instead of LPIPS, drop "lpips" from nerfstudio's metric dicts, and the run's metrics say
``LPIPS_SKIPPED``. Nothing here ever touches the network.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type
from urllib.parse import urlparse

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights
LPIPS_SKIPPED = "skipped: AlexNet weights not present (offline)"


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(ALEXNET_URL).path)


def lpips_available() -> bool:
    return alexnet_weights_path().is_file()


def lpips_status() -> str:
    """What the run's metrics say about LPIPS before any value exists."""
    return "computed" if lpips_available() else LPIPS_SKIPPED


class SkippedLPIPS(torch.nn.Module):
    """Stands in for LearnedPerceptualImagePatchSimilarity: no weights, returns NaN."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, *args, **kwargs):
        return torch.tensor(float("nan"))


@contextlib.contextmanager
def lpips_stubbed():
    """While active, building LPIPS (nerfacto/splatfacto import it inside populate_modules) builds SkippedLPIPS."""
    import torchmetrics.image.lpip as lpip_module

    saved = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = SkippedLPIPS
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = saved


class OfflineMixin:
    """populate_modules without downloads; image metrics without a fake LPIPS value."""

    def populate_modules(self):
        if lpips_available():
            super().populate_modules()
            return
        with lpips_stubbed():
            super().populate_modules()

    def get_image_metrics_and_images(self, outputs, batch):
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if isinstance(getattr(self, "lpips", None), SkippedLPIPS):
            metrics.pop("lpips", None)
            metrics.pop("cc_lpips", None)
        return metrics, images


class OfflineNerfactoModel(OfflineMixin, NerfactoModel):
    def populate_modules(self):
        super().populate_modules()
        if self.config.cpu_fast_paths:
            from nerf.cpu_paths import use_cpu_paths

            use_cpu_paths(self)


@dataclass
class OfflineNerfactoModelConfig(NerfactoModelConfig):
    _target: Type = field(default_factory=lambda: OfflineNerfactoModel)
    cpu_fast_paths: bool = False  # nerf.cpu_paths: fused hash grid and contraction (same outputs, faster on CPU)


class OfflineSplatfactoModel(OfflineMixin, SplatfactoModel):
    pass


@dataclass
class OfflineSplatfactoModelConfig(SplatfactoModelConfig):
    _target: Type = field(default_factory=lambda: OfflineSplatfactoModel)
