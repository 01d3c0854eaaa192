"""Faster CPU paths for two nerfstudio modules, with the same outputs and gradients.

- HashEncoding's torch fallback -> nerf.hash_grid's fused numba kernels (FusedHashEncoding).
- SceneContraction with the L-inf norm: ``torch.linalg.norm(ord=inf)`` is ~6x slower on CPU than the
  equal ``abs().amax()``; nerfacto calls it on every sample of every proposal pass.

``use_cpu_paths(model)`` swaps the classes in place: parameters, buffers, state-dict keys and checkpoints
stay as they are, so runs trained either way load either way.
"""
from __future__ import annotations

import math

import torch
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.spatial_distortions import SceneContraction

from nerf.hash_grid import FusedHashEncoding, warm_up


class FastSceneContraction(SceneContraction):
    def forward(self, positions):
        if not isinstance(positions, torch.Tensor) or self.order is None or not math.isinf(self.order):
            return super().forward(positions)
        mag = positions.abs().amax(dim=-1, keepdim=True)
        return torch.where(mag < 1, positions, (2 - (1 / mag)) * (positions / mag))


def use_cpu_paths(module: torch.nn.Module) -> int:
    """Switch every torch-path HashEncoding and SceneContraction inside ``module``; returns how many."""
    encodings = contractions = 0
    for child in module.modules():
        if type(child) is HashEncoding and child.tcnn_encoding is None:
            child.__class__ = FusedHashEncoding
            encodings += 1
        elif type(child) is SceneContraction:
            child.__class__ = FastSceneContraction
            contractions += 1
    if encodings:
        warm_up()  # during model setup, before any training clock starts
    return encodings + contractions
