"""Statistical outlier removal on a point cloud (Open3D), offered as an option and always reported.

A point is an outlier when its mean distance to its ``nb_neighbors`` nearest neighbours exceeds the
cloud's mean of that distance by more than ``std_ratio`` standard deviations (Open3D's
remove_statistical_outlier). Only the named cloud is filtered: the scene's 3D points and tracks keep
every point, so a COLMAP export still holds the full reconstruction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutlierRemovalOptions:
    nb_neighbors: int = 20
    std_ratio: float = 2.0


def statistical_inliers(xyz: np.ndarray, options: OutlierRemovalOptions) -> np.ndarray:
    """(M,) bool: the points kept."""
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    keep = np.zeros(len(xyz), bool)
    if len(xyz) <= options.nb_neighbors:  # too few points for the statistic: keep them all
        keep[:] = True
        return keep
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    _, kept = cloud.remove_statistical_outlier(nb_neighbors=int(options.nb_neighbors),
                                               std_ratio=float(options.std_ratio))
    keep[np.asarray(kept, np.int64)] = True
    return keep
