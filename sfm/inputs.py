"""A new Scene from a folder of photos or a video: one camera per kind of picture, unreadable files skipped.

A folder may mix pictures of different sizes or from different cameras. Every file's displayed size
(EXIF orientation applied, as the decoder applies it) and EXIF camera identity (make, model, focal length)
are read from its header, and each distinct (size, identity) gets its own camera:

- the group of the first readable picture gets what ``resolve_intrinsics`` gives the source (``--calib``,
  a calibration file beside the pictures, EXIF, or the documented guess);
- every other group gets its EXIF intrinsics or the guess (a calibration file describes one camera),
  with a warning naming the group.

Files that cannot be read are left out with a warning (never an exception): truncated files (dropped by
the source's scan) and files whose header cannot be parsed. Videos have one camera.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from scene.camera import guess_camera
from scene.errors import CorruptInput
from scene.io.calibration import camera_from_exif, resolve_intrinsics
from scene.io.sources import open_source
from scene.io.sources_decode import decode_image_file
from scene.model import Image, Scene

log = logging.getLogger(__name__)

_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF Orientation values that swap width and height when displayed


@dataclass
class SceneInput:
    scene: Scene
    image_ids: list
    warnings: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # "name: reason" of files left out


def _header(path: Path) -> Optional[tuple[tuple[int, int], tuple]]:
    """((width, height) as displayed, EXIF identity) from the file header, or None when PIL cannot parse it."""
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as image:
            width, height = image.size
            exif = image.getexif()
            details = exif.get_ifd(0x8769)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    if exif.get(0x0112) in _ROTATED_ORIENTATIONS:
        width, height = height, width
    identity = (str(exif.get(0x010F) or "").strip(), str(exif.get(0x0110) or "").strip(),
                str(details.get(0x920A) or ""), str(details.get(0xA405) or ""))
    return (width, height), identity


def _probe(path: Path) -> tuple[Optional[tuple[int, int]], tuple, str]:
    """(displayed size, identity, "") or (None, (), reason)."""
    header = _header(path)
    if header is not None:
        return header[0], header[1], ""
    image, reason = decode_image_file(path)  # formats PIL does not know but OpenCV does
    if image is None:
        return None, (), reason
    return (image.shape[1], image.shape[0]), ("", "", "", ""), ""


def scene_from_path(path, calib_path=None, progress=None) -> SceneInput:
    source = open_source(path)  # full resolution: keypoints are stored in full-resolution pixels
    names_before = list(source.frame_names())
    refs = source.frame_refs(progress=progress)
    names = list(source.frame_names())
    out = SceneInput(Scene(), [])
    dropped = sorted(set(names_before) - set(names))
    if dropped:
        out.skipped += [f"{n}: truncated or unreadable" for n in dropped]
        out.warnings.append(f"skipped {len(dropped)} truncated or unreadable image(s): {', '.join(dropped)}")
    first_camera = resolve_intrinsics(source, calib_path)
    if refs and refs[0].frame_index is not None:  # a video: every frame shares the one camera
        groups = {None: first_camera}
        keys = [None] * len(refs)
    else:
        keys, groups = [], {}
        for ref, name in zip(refs, names):
            size, identity, reason = _probe(Path(ref.path))
            if size is None:
                out.skipped.append(f"{name}: {reason}")
                out.warnings.append(f"skipped unreadable image {name}: {reason}")
                keys.append(None)
                continue
            key = (size, identity)
            if not groups and size == tuple(source.original_size):
                groups[key] = first_camera
            elif key not in groups:
                groups[key] = _other_camera(Path(ref.path), size, len(groups) + 1, out.warnings, name)
            keys.append(key)
        if not groups:
            raise CorruptInput(f"{source.path}: none of its {len(refs)} images could be read")
    scene = out.scene
    camera_ids = {}
    for key, camera in groups.items():
        camera_ids[key] = len(camera_ids) + 1
        scene.add_camera(replace(camera, camera_id=camera_ids[key]))
    images = []
    for ref, name, key in zip(refs, names, keys):
        if key is None and groups.get(None) is None:
            continue  # unreadable: left out
        images.append(Image(len(images) + 1, name, camera_ids[key], source=ref))
    scene.add_images(images)
    width, height = source.size
    scene.add_source({"path": str(source.path), "layout": source.layout, "frames": len(images),
                      "width": width, "height": height, "cameras": len(groups)})
    out.image_ids = [im.image_id for im in images]
    if len(groups) > 1:
        log.info("%s: %d kinds of picture (size / camera) -> %d cameras", source.path, len(groups), len(groups))
    for w in out.warnings:
        log.warning("%s: %s", source.path, w)
    return out


def _other_camera(path: Path, size: tuple[int, int], camera_id: int, warnings: list, name: str):
    camera = camera_from_exif(path, camera_id)
    if camera is not None and (camera.width, camera.height) == tuple(size):
        warnings.append(f"{name} and others like it ({size[0]} x {size[1]} px) come from another camera than the "
                        f"first picture: they get their own intrinsics from EXIF")
        return camera
    warnings.append(f"{name} and others like it ({size[0]} x {size[1]} px) come from another camera than the first "
                    f"picture and carry no usable EXIF: GUESSING their intrinsics (focal = 1.2 x max(w, h)), "
                    f"refined by bundle adjustment")
    return guess_camera(camera_id, *size)
