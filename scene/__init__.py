"""Parallax's scene model: plain data over numpy, events, project files, import/export."""
from .camera import CAMERA_MODELS, Camera, guess_camera
from .model import FrameRef, Image, NerfRun, PointCloud, Points3D, Scene, SceneSnapshot, Trajectory
from .rigid import Rigid3d, matrix_to_quat_wxyz, quat_wxyz_to_matrix

__all__ = ["CAMERA_MODELS", "Camera", "guess_camera", "FrameRef", "Image", "NerfRun", "PointCloud", "Points3D",
           "Scene", "SceneSnapshot", "Trajectory", "Rigid3d", "matrix_to_quat_wxyz", "quat_wxyz_to_matrix"]
