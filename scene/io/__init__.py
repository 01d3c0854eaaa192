"""Formats in and out. Import the specific modules; `open_path` and `export_scene` dispatch by path/format."""
from .dispatch import EXPORT_FORMATS, detect_kind, export_scene, open_path

__all__ = ["EXPORT_FORMATS", "detect_kind", "export_scene", "open_path"]
