"""PLY point clouds in and out through Open3D, with the checks Open3D does not make.

Open3D returns an empty (or silently partial) cloud for a non-PLY or truncated file, so the
header is parsed here first and the file size / vertex count are checked against it.

Colours: Open3D holds them as float64 c/255; a uint8 value survives c/255*255 -> round exactly,
so colours round-trip bit-exact. Files are written binary little endian (x y z as double).

Non-finite coordinates: points with NaN or infinite x/y/z are dropped, and the number dropped
is logged as a warning; a file whose points are ALL non-finite raises CorruptInput.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import fsync_dir
from ..errors import CorruptInput, InputNotFound, SaveFailed
from ..model import PointCloud, Points3D

log = logging.getLogger(__name__)

_SCALAR_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
                 "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8,
                 "float64": 8}
_MAX_HEADER = 1 << 20


def _parse_header(path: Path) -> tuple[str, int, list[tuple[str, int, int | None]]]:
    """(format, header length in bytes, [(element name, count, fixed record size or None)])."""
    with open(path, "rb") as handle:
        head = handle.read(_MAX_HEADER)
    if not head.startswith(b"ply\n") and not head.startswith(b"ply\r\n"):
        raise CorruptInput(f"{path}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise CorruptInput(f"{path}: PLY header has no 'end_header' (file truncated?)")
    newline = head.find(b"\n", end)
    if newline < 0:
        raise CorruptInput(f"{path}: PLY header is truncated after 'end_header'")
    fmt, elements = None, []
    for raw in head[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tokens = raw.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        try:
            if tokens[0] == "format":
                fmt = tokens[1]
            elif tokens[0] == "element":
                elements.append([tokens[1], int(tokens[2]), 0])
            elif tokens[0] == "property" and elements:
                if tokens[1] == "list" or tokens[1] not in _SCALAR_SIZES:
                    elements[-1][2] = None  # variable-size records: size unknown from the header
                elif elements[-1][2] is not None:
                    elements[-1][2] += _SCALAR_SIZES[tokens[1]]
        except (IndexError, ValueError):
            raise CorruptInput(f"{path}: malformed PLY header line {raw!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise CorruptInput(f"{path}: unknown PLY format {fmt!r}")
    return fmt, newline + 1, [tuple(e) for e in elements]


def _check_size(path: Path, fmt: str, header_len: int, elements) -> int:
    """The vertex count, after checking the file is long enough to hold the vertices."""
    names = [name for name, _, _ in elements]
    if "vertex" not in names:
        raise CorruptInput(f"{path}: PLY file has no 'vertex' element")
    vertex_count = elements[names.index("vertex")][1]
    if fmt == "ascii":
        if names[0] == "vertex":
            with open(path, "rb") as handle:
                handle.seek(header_len)
                lines = sum(1 for line in handle if line.strip())
            if lines < vertex_count:
                raise CorruptInput(f"{path}: PLY file is truncated: header announces {vertex_count} vertices, "
                                   f"the file holds {lines} data lines")
        return vertex_count
    needed = header_len
    for name, count, record in elements:
        if record is None:
            break  # cannot know the size past a list property
        needed += count * record
        if name == "vertex":
            size = path.stat().st_size
            if size < needed:
                raise CorruptInput(f"{path}: PLY file is truncated: {vertex_count} vertices need {needed} bytes, "
                                   f"the file has {size}")
            break
    return vertex_count


def read_ply(path) -> PointCloud:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFound(f"PLY file not found: {path}")
    fmt, header_len, elements = _parse_header(path)
    vertex_count = _check_size(path, fmt, header_len, elements)
    if vertex_count == 0:
        return PointCloud(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8))

    import open3d as o3d

    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        pcd = o3d.io.read_point_cloud(str(path), format="ply", remove_nan_points=False,
                                      remove_infinite_points=False)
    xyz = np.asarray(pcd.points, dtype=np.float64)
    if len(xyz) != vertex_count:
        raise CorruptInput(f"{path}: Open3D read {len(xyz)} of the {vertex_count} vertices the header announces "
                           "(corrupt or truncated PLY)")
    rgb = np.round(np.clip(np.asarray(pcd.colors), 0.0, 1.0) * 255.0).astype(np.uint8) if pcd.has_colors() else None
    normals = np.asarray(pcd.normals, dtype=np.float64).copy() if pcd.has_normals() else None
    finite = np.all(np.isfinite(xyz), axis=1)
    if not finite.all():
        dropped = int((~finite).sum())
        if dropped == len(xyz):
            raise CorruptInput(f"{path}: all {dropped} points have NaN or infinite coordinates")
        log.warning("%s: dropped %d of %d points with NaN or infinite coordinates", path, dropped, len(xyz))
        xyz = xyz[finite]
        rgb = None if rgb is None else rgb[finite]
        normals = None if normals is None else normals[finite]
    return PointCloud(xyz.copy(), rgb, normals)


def _empty_ply(cloud: PointCloud) -> bytes:
    props = ["x", "y", "z"] + (["nx", "ny", "nz"] if cloud.normals is not None else [])
    lines = ["ply", "format binary_little_endian 1.0", "comment Created by Parallax", "element vertex 0"]
    lines += [f"property double {p}" for p in props]
    if cloud.rgb is not None:
        lines += [f"property uchar {c}" for c in ("red", "green", "blue")]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def write_ply(path, cloud: PointCloud) -> Path:
    """Write ``cloud`` as a binary PLY at ``path``, atomically (temp file in the folder, fsync, replace)."""
    path = Path(path).expanduser()
    folder = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.ply", dir=folder)
    except OSError as exc:
        raise SaveFailed(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if len(cloud) == 0:  # Open3D refuses to write an empty cloud
            tmp.write_bytes(_empty_ply(cloud))
        else:
            import open3d as o3d

            pcd = o3d.geometry.PointCloud()
            pcd.points = o3d.utility.Vector3dVector(np.ascontiguousarray(cloud.xyz, dtype=np.float64))
            if cloud.rgb is not None:
                pcd.colors = o3d.utility.Vector3dVector(cloud.rgb.astype(np.float64) / 255.0)
            if cloud.normals is not None:
                pcd.normals = o3d.utility.Vector3dVector(np.ascontiguousarray(cloud.normals, dtype=np.float64))
            with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
                ok = o3d.io.write_point_cloud(str(tmp), pcd, write_ascii=False, compressed=False)
            if not ok:
                raise SaveFailed(f"Open3D could not write {path}")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except OSError as exc:  # e.g. the target is a folder
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SaveFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def points3d_to_cloud(points: Points3D) -> PointCloud:
    """The xyz and colours of packed 3D points as a PointCloud (copies)."""
    return PointCloud(points.xyz.copy(), points.rgb.copy())
