"""Load a trained run folder (nerf/layout.py) for inference on a chosen device.

nerfstudio's own ``eval_setup`` is not used: it resets the datamanager to the method default
(runs trained with ``VanillaDataManagerConfig`` then fail), picks the device itself, exits the
process when a checkpoint is missing and builds LPIPS, which downloads AlexNet weights. Here the
saved config is set up as trained, in ``inference`` mode (no image is read), and the newest
checkpoint is loaded with torch's safe unpickler.

Frames: nerfstudio trains in a normalised frame, ``x_ns = ns_scale * (R x_world + t)`` with
``ns_from_world = [R | t]`` the dataparser transform (auto-orient and centre) and ``ns_scale``
its scale. ``LoadedRun`` maps points and cameras between the scene's world and that frame.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scene.errors import CorruptInput, InputNotFound, ParallaxError
from scene.io.nerfstudio import opengl_world_from_cam
from scene.rigid import Rigid3d

from .device import resolve_device
from .layout import RunLayout
from .runner import read_record as runner_read_record

log = logging.getLogger(__name__)

_STEP = re.compile(r"step-(\d+)\.ckpt$")


@dataclass
class LoadedRun:
    """A run ready for rendering: the pipeline in eval mode and the world <-> nerfstudio mapping."""

    layout: RunLayout
    pipeline: object          # nerfstudio Pipeline, eval mode
    config: object            # nerfstudio TrainerConfig as saved (data path possibly re-pointed)
    checkpoint: Path
    step: int
    device: str
    ns_from_world: np.ndarray  # 3x4 rigid: the dataparser's orient-and-centre transform
    ns_scale: float
    record: dict = field(default_factory=dict)  # run.json ({} when absent)

    @property
    def model(self):
        return self.pipeline.model

    def world_to_ns(self, xyz_world) -> np.ndarray:
        """(N, 3) scene-world points -> nerfstudio's normalised frame."""
        p = np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3)
        return self.ns_scale * (p @ self.ns_from_world[:, :3].T + self.ns_from_world[:, 3])

    def ns_to_world(self, xyz_ns) -> np.ndarray:
        """(N, 3) points in nerfstudio's normalised frame -> the scene's world frame."""
        p = np.asarray(xyz_ns, dtype=np.float64).reshape(-1, 3)
        return (p / self.ns_scale - self.ns_from_world[:, 3]) @ self.ns_from_world[:, :3]

    def ns_camera_to_world(self, cam_from_world: Rigid3d) -> np.ndarray:
        """OpenCV ``cam_from_world`` in the scene -> nerfstudio's 3x4 OpenGL camera-to-world (normalised)."""
        gl_world_from_cam = opengl_world_from_cam(cam_from_world)
        out = np.empty((3, 4))
        out[:, :3] = self.ns_from_world[:, :3] @ gl_world_from_cam[:3, :3]
        out[:, 3] = self.world_to_ns(gl_world_from_cam[:3, 3])[0]
        return out


def read_record(layout: RunLayout) -> dict:
    """run.json checked by the runner's rules, or {} when the folder has none (a bare nerfstudio run)."""
    if not layout.record.is_file():
        return {}
    return runner_read_record(layout)


def checkpoint_step(path: Path) -> int:
    match = _STEP.search(Path(path).name)
    return int(match.group(1)) if match else -1


def find_run(run_dir) -> tuple[RunLayout, dict, Path, Path]:
    """(layout, record, config.yml, newest checkpoint) of a run folder, or a clear ParallaxError."""
    root = Path(run_dir).expanduser()
    if not root.exists():
        raise InputNotFound(f"NeRF run folder not found: {root}")
    if not root.is_dir():
        raise ParallaxError(f"{root} is a file, not a NeRF run folder")
    layout = RunLayout.at(root)
    record = read_record(layout)
    config_path = layout.find_config()
    if config_path is None:
        if not record:
            raise ParallaxError(f"{root} is not a NeRF run folder (no run.json and no nerfstudio config.yml)")
        raise ParallaxError(f"{root}: training has not started yet (no nerfstudio config.yml); "
                            "train it first with `parallax nerf train`")
    checkpoints = sorted(layout.checkpoints(), key=checkpoint_step)
    if not checkpoints:
        raise ParallaxError(f"{root}: the run has no checkpoint yet ({config_path.parent / 'nerfstudio_models'} "
                            "holds no step-*.ckpt); train longer or wait for the first save")
    return layout, record, config_path, checkpoints[-1]


def _safe_load(path: Path, device: str) -> dict:
    """torch.load with the weights-only unpickler, allowing the numpy scalars nerfstudio stores."""
    import torch

    allowed = [np.dtype, np.ndarray, type(np.dtype(np.float64)), type(np.dtype(np.int64)),
               type(np.dtype(np.float32)), type(np.dtype(np.int32)), type(np.dtype(np.bool_))]
    try:
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy >= 2 moved them
        from numpy._core.multiarray import _reconstruct, scalar
    allowed += [scalar, _reconstruct]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, RuntimeError) as exc:
        raise CorruptInput(f"{path}: checkpoint cannot be read ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # the unpickler names the global it refused
        raise CorruptInput(f"{path}: checkpoint cannot be read safely ({type(exc).__name__}: {exc})") from exc


def _load_config(config_path: Path):
    import yaml

    try:
        return yaml.load(config_path.read_text(encoding="utf-8"), Loader=yaml.Loader)
    except (ImportError, AttributeError) as exc:
        raise ParallaxError(f"{config_path}: the run needs code this installation lacks ({exc})") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CorruptInput(f"{config_path}: not a readable nerfstudio config ({exc})") from exc


def _repoint_data(config, layout: RunLayout) -> None:
    """A run folder that was moved or copied still finds its own dataset/ folder."""
    datamanager = config.pipeline.datamanager
    stored = getattr(datamanager, "data", None) or getattr(datamanager.dataparser, "data", None)
    if stored is not None and Path(stored).exists() and Path(stored) != Path():
        return
    if not layout.transforms.is_file():
        raise InputNotFound(f"{layout.root}: the run's dataset is missing (neither {stored} nor {layout.transforms} "
                            "exists)")
    target = layout.transforms if stored is not None and Path(stored).suffix == ".json" else layout.dataset_dir
    datamanager.data = target
    datamanager.dataparser.data = target


def _dataparser_frame(pipeline, base_dir: Path) -> tuple[np.ndarray, float]:
    outputs = getattr(pipeline.datamanager, "train_dataparser_outputs", None)
    if outputs is not None:
        transform = np.asarray(outputs.dataparser_transform.detach().cpu().numpy(), dtype=np.float64)[:3, :4]
        return transform, float(outputs.dataparser_scale)
    saved = base_dir / "dataparser_transforms.json"  # written by nerfstudio's trainer
    if not saved.is_file():
        raise CorruptInput(f"{base_dir}: the dataparser's transform is unknown (no dataparser_transforms.json)")
    doc = json.loads(saved.read_text(encoding="utf-8"))
    return np.asarray(doc["transform"], dtype=np.float64)[:3, :4], float(doc["scale"])


def load_pipeline(run_dir, device: str = "cpu", checkpoint=None) -> LoadedRun:
    """Load a trained run for inference. ``checkpoint`` picks a step-*.ckpt (default: the newest)."""
    layout, record, config_path, newest = find_run(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else newest
    if not ckpt.is_file():
        raise InputNotFound(f"checkpoint not found: {ckpt}")
    device = resolve_device(device)
    config = _load_config(config_path)
    if not hasattr(config, "pipeline"):
        raise CorruptInput(f"{config_path}: not a nerfstudio trainer config")
    _repoint_data(config, layout)
    state = _safe_load(ckpt, device)
    if not isinstance(state, dict) or "pipeline" not in state:
        raise CorruptInput(f"{ckpt}: not a nerfstudio checkpoint (no 'pipeline' state)")
    try:
        from .offline import lpips_stubbed  # imports nerfstudio models: only when loading

        with lpips_stubbed():
            pipeline = config.pipeline.setup(device=device, test_mode="inference")
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        raise CorruptInput(f"{layout.root}: the run's dataset or config cannot be set up "
                           f"({type(exc).__name__}: {exc})") from exc
    pipeline.eval()
    step = int(state.get("step", checkpoint_step(ckpt)))
    try:
        pipeline.load_pipeline(state["pipeline"], step)
    except RuntimeError as exc:  # shapes differ: the checkpoint is not this config's
        raise CorruptInput(f"{ckpt}: does not match {config_path} ({exc})") from exc
    ns_from_world, ns_scale = _dataparser_frame(pipeline, config_path.parent)
    return LoadedRun(layout, pipeline, config, ckpt, step, device, ns_from_world, ns_scale, record)
