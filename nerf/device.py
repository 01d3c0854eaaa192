"""Which torch device trains: auto picks cuda > mps > cpu; the user may name one. torch is imported lazily."""
from __future__ import annotations

from scene.errors import ParallaxError

DEVICES = ("auto", "cuda", "mps", "cpu")


def detect_devices() -> dict:
    """{"cuda": bool, "mps": bool, "cpu": True} as torch sees this machine."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {"cuda": bool(torch.cuda.is_available()), "mps": bool(mps is not None and mps.is_available()), "cpu": True}


def resolve_device(requested: str = "auto", available: dict | None = None) -> str:
    """The concrete device for ``requested``; ParallaxError when the named one is absent."""
    if requested not in DEVICES:
        raise ParallaxError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    available = detect_devices() if available is None else available
    if requested == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available.get(d))
    if not available.get(requested):
        raise ParallaxError(f"device {requested!r} was requested but torch finds no {requested.upper()} device "
                            "on this machine; use --device auto or cpu")
    return requested


def check_preset_device(preset: str, device: str) -> None:
    """splatfacto rasterises with gsplat's CUDA kernels: refuse it clearly anywhere else."""
    from nerf.presets import get_preset

    spec = get_preset(preset)
    if spec.requires_cuda and device != "cuda":
        raise ParallaxError(f"preset {preset!r} needs an NVIDIA GPU with CUDA (gsplat has no CPU/MPS kernels); "
                            f"this run would use {device!r}. Use the 'parallax-cpu' or 'nerfacto' preset instead")
