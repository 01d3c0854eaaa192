"""Assets: the procedural demo scene (textured room, exact ground-truth cameras) and its renderer."""
from .demo_scene import (GENERATOR_VERSION, DemoScene, demo_camera, ensure_demo, generate_demo, load_demo,
                         raycast_depth, render_frame, room_point_cloud)
from .camera_paths import PATH_NAMES, camera_path

__all__ = ["GENERATOR_VERSION", "DemoScene", "demo_camera", "ensure_demo", "generate_demo", "load_demo",
           "raycast_depth", "render_frame", "room_point_cloud", "PATH_NAMES", "camera_path"]
