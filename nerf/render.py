"""Render a loaded run (nerf/load.py) at scene cameras or at cameras from a transforms.json.

A view is a ``Camera`` (its intrinsics and resolution are used as they are, distortion included)
and an OpenCV ``cam_from_world`` in the scene's world frame. Images come back as uint8 HxWx3.
Rays are evaluated in chunks; ``progress.should_stop()`` is checked between chunks.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from scene.camera import Camera
from scene.errors import ParallaxError, SaveFailed, UnsupportedFormat
from scene.progress import Cancelled, NullProgress
from scene.rigid import Rigid3d

from .load import LoadedRun

log = logging.getLogger(__name__)

CHUNK_RAYS = 4096  # ~4 s on one CPU core: often enough to honour a Stop quickly


@dataclass(frozen=True)
class View:
    """One image to render: ``name`` is the frame's image file (its stem names the still)."""

    name: str
    camera: Camera
    cam_from_world: Rigid3d


def _distortion(camera: Camera) -> tuple[str, dict]:
    """nerfstudio camera type and distortion coefficients (k1 k2 k3 k4 p1 p2) of a COLMAP model."""
    p = dict(zip(camera.param_names, camera.params.tolist()))
    if camera.model in ("PINHOLE", "SIMPLE_PINHOLE"):
        return "perspective", {}
    if camera.model == "SIMPLE_RADIAL":
        return "perspective", {"k1": p["k"]}
    if camera.model in ("RADIAL", "OPENCV"):
        return "perspective", {k: p.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")}
    if camera.model == "FULL_OPENCV" and p["k4"] == p["k5"] == p["k6"] == 0.0:
        return "perspective", {k: p[k] for k in ("k1", "k2", "k3", "p1", "p2")}
    if camera.model == "OPENCV_FISHEYE":
        return "fisheye", {k: p[k] for k in ("k1", "k2", "k3", "k4")}
    raise UnsupportedFormat(f"camera {camera.camera_id} ({camera.model}) cannot be rendered by nerfstudio; "
                            "use a PINHOLE, OPENCV or OPENCV_FISHEYE camera")


def ns_cameras(loaded: LoadedRun, camera: Camera, cams_from_world: Sequence[Rigid3d]):
    """nerfstudio ``Cameras`` (normalised frame, OpenGL axes) for poses sharing one scene Camera."""
    import torch
    from nerfstudio.cameras.camera_utils import get_distortion_params
    from nerfstudio.cameras.cameras import Cameras, CameraType

    kind, coeffs = _distortion(camera)
    c2w = np.stack([loaded.ns_camera_to_world(pose) for pose in cams_from_world])
    fx, fy = camera.focal_xy
    cx, cy = camera.principal_point
    n = len(cams_from_world)

    def column(value):
        return torch.full((n, 1), float(value), dtype=torch.float32)

    distortion = None
    if coeffs:
        distortion = get_distortion_params(**coeffs).to(torch.float32).expand(n, 6).clone()
    return Cameras(camera_to_worlds=torch.as_tensor(c2w, dtype=torch.float32), fx=column(fx), fy=column(fy),
                   cx=column(cx), cy=column(cy), width=torch.full((n, 1), camera.width, dtype=torch.int64),
                   height=torch.full((n, 1), camera.height, dtype=torch.int64), distortion_params=distortion,
                   camera_type=CameraType.FISHEYE if kind == "fisheye" else CameraType.PERSPECTIVE)


def render_outputs(loaded: LoadedRun, camera: Camera, cam_from_world: Rigid3d, outputs=("rgb",),
                   progress=None) -> dict[str, np.ndarray]:
    """Named model outputs (float32 HxWxC) for one view, chunk by chunk. Raises Cancelled on Stop."""
    import torch

    progress = progress or NullProgress()
    cameras = ns_cameras(loaded, camera, [cam_from_world]).to(loaded.device)
    model = loaded.model
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # inside nerfstudio, harmless
        bundle = cameras.generate_rays(camera_indices=0, keep_shape=True)
        total = camera.width * camera.height
        chunk = max(1, min(CHUNK_RAYS, int(getattr(model.config, "eval_num_rays_per_chunk", CHUNK_RAYS))))
        parts: dict[str, list] = {name: [] for name in outputs}
        for start in range(0, total, chunk):
            if progress.should_stop():
                raise Cancelled("render stopped")
            rays = bundle.get_row_major_sliced_ray_bundle(start, start + chunk).to(loaded.device)
            result = model(ray_bundle=rays)
            for name in outputs:
                if name not in result:
                    raise ParallaxError(f"the model ({type(model).__name__}) has no {name!r} output; it has "
                                        f"{', '.join(k for k in result if isinstance(result[k], torch.Tensor))}")
                parts[name].append(result[name].detach().float().cpu())
    return {name: torch.cat(values).reshape(camera.height, camera.width, -1).numpy()
            for name, values in parts.items()}


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_image(loaded: LoadedRun, camera: Camera, cam_from_world: Rigid3d, progress=None) -> np.ndarray:
    """uint8 HxWx3 colour image of the NeRF seen from ``cam_from_world`` with ``camera``."""
    return to_uint8(render_outputs(loaded, camera, cam_from_world, ("rgb",), progress)["rgb"][..., :3])


def render_views(loaded: LoadedRun, views: Sequence[View], progress=None,
                 stage: str = "render") -> Iterator[np.ndarray]:
    """Render each view in turn (a generator: a video writer can consume frames as they come)."""
    progress = progress or NullProgress()
    progress.report(stage, 0, len(views), "")
    for index, view in enumerate(views):
        image = render_image(loaded, view.camera, view.cam_from_world, progress)
        progress.report(stage, index + 1, len(views), view.name)
        yield image


# --- where views come from --------------------------------------------------------------------

def scene_views(scene, image_ids: Optional[Iterable[int]] = None) -> list[View]:
    """Views at the scene's registered images (all of them, ordered by name, or ``image_ids``)."""
    snap = scene.snapshot()
    if image_ids is None:
        images = sorted((im for im in snap.images.values() if im.registered), key=lambda im: (im.name, im.image_id))
    else:
        images = []
        for image_id in image_ids:
            image = snap.images.get(int(image_id))
            if image is None:
                raise ParallaxError(f"the scene has no image {image_id}")
            if not image.registered:
                raise ParallaxError(f"image {image_id} ({image.name}) has no camera pose to render from")
            images.append(image)
    if not images:
        raise ParallaxError("the scene has no registered cameras to render from")
    return [View(im.name, snap.cameras[im.camera_id], im.cam_from_world) for im in images]


def transforms_views(path) -> list[View]:
    """Views at every frame of a transforms.json, at the json's intrinsics and resolution.

    The frames' images need not exist (the json's ``w``/``h`` win); they are measured only where
    the json gives no size.
    """
    from scene.io.nerfstudio import read_transforms

    return scene_views(read_transforms(path))


def still_names(views: Sequence[View]) -> list[str]:
    """PNG file names after each frame's image file; refuses two frames that would share one."""
    names = [f"{Path(view.name).stem}.png" for view in views]
    seen: dict[str, str] = {}
    for view, name in zip(views, names):
        if name in seen:
            raise ParallaxError(f"frames {seen[name]!r} and {view.name!r} would both be written as {name}; "
                                "give the frames distinct image file names")
        seen[name] = view.name
    return names


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG atomically."""
    import cv2

    from scene.atomic import atomic_write_bytes

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SaveFailed(f"cannot encode {path} as PNG")
    try:
        atomic_write_bytes(path, data.tobytes())
    except OSError as exc:
        raise SaveFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def render_stills(loaded: LoadedRun, views: Sequence[View], out_dir, progress=None) -> list[Path]:
    """Render ``views`` as PNG stills into ``out_dir``, one per frame, named after its image file."""
    if not views:
        raise ParallaxError("no cameras to render (the camera set is empty)")
    names = still_names(views)
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SaveFailed(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from exc
    written = []
    for name, image in zip(names, render_views(loaded, views, progress)):
        written.append(write_png(out_dir / name, image))
    return written
