"""The training presets as plain data (no torch here); nerf.plugin turns them into nerfstudio configs.

parallax-cpu was tuned by measurement on a 2-core CPU (shared/NERF-CPU-NOTES.md): nerfacto with a hash grid
of 8 levels x 2^16 entries up to resolution 512 (1.2 CPU-s/iter instead of 2.7, 25.4 dB vs 22.0 dB on lego at
100 px in the same CPU time), no appearance embedding and no camera optimizer (exact or SfM poses; both cost
time and PSNR on short runs), torch hash encoding (no tiny-cuda-nn on CPU) run through nerf.cpu_paths' fused
numba hash grid and contraction (same outputs; 2.3 -> 0.85 s/iter on lego at 100 px, 22.5 -> 28.2 dB after
10 min), images capped at 320 px (rays per batch, not pixels, set the cost of a step; more pixels than the
net can fit in minutes only slow evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from scene.errors import ParallaxError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    method: str                    # the nerfstudio model family: "nerfacto" | "splatfacto"
    max_size: int | None           # longest image side written to the dataset
    iterations: int                # default budget when neither minutes nor iterations are given
    steps_per_save: int            # checkpoint cadence
    steps_per_eval_batch: int      # a batch of held-out rays (cheap)
    steps_per_eval_image: int      # one full held-out image (costly on CPU: ~1 k rays/s per core)
    train_rays_per_batch: int
    eval_rays_per_batch: int
    requires_cuda: bool = False
    model: dict = field(default_factory=dict)  # NerfactoModelConfig / SplatfactoModelConfig overrides


PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        Preset("parallax-cpu", "nerfacto tuned for a few CPU cores (small hash grid, no appearance embedding, "
               "no camera optimizer)", "nerfacto", max_size=320, iterations=2000, steps_per_save=100,
               steps_per_eval_batch=100, steps_per_eval_image=1000, train_rays_per_batch=4096,
               eval_rays_per_batch=1024,
               model={"num_levels": 8, "log2_hashmap_size": 16, "max_res": 512, "use_appearance_embedding": False,
                      "camera_optimizer": "off", "implementation": "torch", "cpu_fast_paths": True,
                      "average_init_density": 0.01,
                      "eval_num_rays_per_chunk": 1 << 12}),
        Preset("nerfacto", "nerfstudio's default nerfacto (best on a GPU)", "nerfacto", max_size=1600,
               iterations=30000, steps_per_save=2000, steps_per_eval_batch=500, steps_per_eval_image=500,
               train_rays_per_batch=4096, eval_rays_per_batch=4096,
               model={"average_init_density": 0.01, "eval_num_rays_per_chunk": 1 << 15}),
        Preset("splatfacto", "nerfstudio's Gaussian splatting (needs CUDA)", "splatfacto", max_size=1600,
               iterations=30000, steps_per_save=2000, steps_per_eval_batch=100, steps_per_eval_image=100,
               train_rays_per_batch=4096, eval_rays_per_batch=4096, requires_cuda=True),
    )
}
DEFAULT_PRESET = "parallax-cpu"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParallaxError(f"unknown NeRF preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def available_presets(device: str = "auto") -> list[tuple[str, bool, str]]:
    """(name, enabled, reason) for each preset on ``device`` ("auto" asks torch, lazily)."""
    if device == "auto":
        from nerf.device import resolve_device

        device = resolve_device("auto")
    out = []
    for preset in PRESETS.values():
        if preset.requires_cuda and device != "cuda":
            out.append((preset.name, False, f"needs an NVIDIA GPU with CUDA (this run would use {device})"))
        else:
            out.append((preset.name, True, preset.description))
    return out
