"""PLY through Open3D: exact round trips, uint8 colours kept, NaN points dropped, bad files refused."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from scene.errors import CorruptInput, InputNotFound
from scene.io.ply import points3d_to_cloud, read_ply, write_ply
from scene.model import PointCloud, Points3D


def _cloud(n=500, colours=True, normals=False, seed=0) -> PointCloud:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)) * 100
    xyz[0] = [1e-300, -0.0, 1 / 3]
    rgb = (np.arange(3 * n).reshape(n, 3) % 256).astype(np.uint8) if colours else None  # every value 0..255
    nrm = rng.normal(size=(n, 3)) if normals else None
    return PointCloud(xyz, rgb, nrm)


@pytest.mark.parametrize("colours, normals", [(True, False), (False, False), (True, True)],
                         ids=["rgb", "xyz-only", "rgb-normals"])
def test_round_trip_exact(tmp_path, colours, normals):
    cloud = _cloud(colours=colours, normals=normals)
    write_ply(tmp_path / "c.ply", cloud)
    assert (tmp_path / "c.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    back = read_ply(tmp_path / "c.ply")
    assert back.xyz.dtype == np.float64 and np.array_equal(back.xyz, cloud.xyz)
    if colours:
        assert back.rgb.dtype == np.uint8 and np.array_equal(back.rgb, cloud.rgb)
    else:
        assert back.rgb is None
    if normals:
        assert np.array_equal(back.normals, cloud.normals)
    else:
        assert back.normals is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.ply"]  # no temp file left


def test_every_uint8_colour_survives_open3d_float_conversion(tmp_path):
    rgb = np.stack([np.arange(256), 255 - np.arange(256), np.arange(256)[::-1]], axis=1).astype(np.uint8)
    cloud = PointCloud(np.arange(768, dtype=np.float64).reshape(256, 3), rgb)
    write_ply(tmp_path / "c.ply", cloud)
    assert np.array_equal(read_ply(tmp_path / "c.ply").rgb, rgb)


def test_empty_cloud_round_trip(tmp_path):
    write_ply(tmp_path / "e.ply", PointCloud(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)))
    back = read_ply(tmp_path / "e.ply")
    assert len(back) == 0


def test_overwrite_is_atomic_replacement(tmp_path):
    write_ply(tmp_path / "c.ply", _cloud(seed=1))
    cloud = _cloud(n=7, seed=2)
    write_ply(tmp_path / "c.ply", cloud)
    assert np.array_equal(read_ply(tmp_path / "c.ply").xyz, cloud.xyz)


def test_points3d_to_cloud():
    points = Points3D.from_tracks([5, 9], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[1, 2, 3], [250, 251, 252]],
                                  [0.1, 0.2], [[(1, 0)], [(1, 1), (2, 0)]])
    cloud = points3d_to_cloud(points)
    assert np.array_equal(cloud.xyz, points.xyz) and np.array_equal(cloud.rgb, points.rgb)
    cloud.xyz[0, 0] = 99.0
    assert points.xyz[0, 0] == 1.0  # a copy, not a view


# --- bad input -------------------------------------------------------------------------------

def test_nan_points_are_dropped_with_a_warning(tmp_path, caplog):
    cloud = _cloud(n=20)
    cloud.xyz[[3, 7], 1] = np.nan
    cloud.xyz[11, 2] = np.inf
    write_ply(tmp_path / "n.ply", cloud)
    with caplog.at_level(logging.WARNING, logger="scene.io.ply"):
        back = read_ply(tmp_path / "n.ply")
    keep = np.ones(20, bool)
    keep[[3, 7, 11]] = False
    assert np.array_equal(back.xyz, cloud.xyz[keep]) and np.array_equal(back.rgb, cloud.rgb[keep])
    assert "dropped 3 of 20 points with NaN or infinite coordinates" in caplog.text


def test_all_nan_points_is_corrupt(tmp_path):
    write_ply(tmp_path / "n.ply", PointCloud(np.full((4, 3), np.nan)))
    with pytest.raises(CorruptInput, match="all 4 points have NaN"):
        read_ply(tmp_path / "n.ply")


def test_non_ply_file_is_corrupt(tmp_path):
    (tmp_path / "x.ply").write_text("hello, this is not a point cloud\n")
    with pytest.raises(CorruptInput, match=r"x\.ply: not a PLY file"):
        read_ply(tmp_path / "x.ply")


def test_truncated_binary_ply_is_corrupt(tmp_path):
    write_ply(tmp_path / "c.ply", _cloud(n=1000))
    data = (tmp_path / "c.ply").read_bytes()
    (tmp_path / "c.ply").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptInput, match=r"c\.ply: PLY file is truncated: 1000 vertices need"):
        read_ply(tmp_path / "c.ply")


def test_truncated_header_is_corrupt(tmp_path):
    (tmp_path / "h.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty dou")
    with pytest.raises(CorruptInput, match="no 'end_header'"):
        read_ply(tmp_path / "h.ply")


def test_truncated_ascii_ply_is_corrupt(tmp_path):
    header = "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "a.ply").write_text(header + "0 0 0\n1 1 1\n")
    with pytest.raises(CorruptInput, match="header announces 5 vertices, the file holds 2 data lines"):
        read_ply(tmp_path / "a.ply")


def test_ascii_ply_with_float_vertices_reads(tmp_path):
    header = ("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    (tmp_path / "a.ply").write_text(header + "0.5 1 2 255 0 7\n-1 -2 -3.25 1 2 3\n")
    cloud = read_ply(tmp_path / "a.ply")
    assert cloud.xyz.tolist() == [[0.5, 1.0, 2.0], [-1.0, -2.0, -3.25]]
    assert cloud.rgb.tolist() == [[255, 0, 7], [1, 2, 3]]


def test_missing_file_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound):
        read_ply(tmp_path / "none.ply")
