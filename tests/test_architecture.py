"""DESIGN §1: imports flow scene <- geometry <- {slam, sfm} <- nerf <- app; Qt only in app, torch only in nerf."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["scene", "geometry", "slam", "sfm", "nerf", "app", "assets", "bench"]
# Which first-party packages each package may import.
ALLOWED = {
    "scene": {"scene"},
    "geometry": {"scene", "geometry"},
    "slam": {"scene", "geometry", "slam"},
    "sfm": {"scene", "geometry", "sfm", "slam"},
    "nerf": {"scene", "geometry", "slam", "sfm", "nerf"},
    "assets": {"scene", "geometry", "assets"},
    "app": set(PACKAGES),
    "bench": set(PACKAGES) - {"app"},
}
QT = ("PyQt6", "PyQt5", "PySide6", "PySide2", "pyqtgraph", "OpenGL")
TORCH = ("torch", "torchvision", "nerfstudio", "nerfacc", "tinycudann", "gsplat")


def imports_of(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def rule_violations(root: Path) -> list[str]:
    violations = []
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            for name, line in imports_of(path):
                where = f"{path.relative_to(root)}:{line} imports {name}"
                if name in PACKAGES and name not in ALLOWED[package]:
                    violations.append(where)
                if name in QT and package != "app":
                    violations.append(where + " (Qt outside app/)")
                if name in TORCH and package != "nerf":
                    violations.append(where + " (torch/nerfstudio outside nerf/)")
    return violations


def test_import_rule():
    violations = rule_violations(ROOT)
    assert not violations, "\n".join(violations)


def test_the_rule_checker_reports_each_kind_of_violation(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "scene" / "bad.py").write_text("from geometry.lie import so3_exp\n")
    (tmp_path / "geometry" / "qt.py").write_text("import pyqtgraph as pg\n")
    (tmp_path / "sfm" / "gpu.py").write_text("import torch\n")
    (tmp_path / "app" / "fine.py").write_text("import PyQt6.QtCore\nfrom nerf import x\n")
    found = rule_violations(tmp_path)
    assert len(found) == 3
    assert any(v.startswith("scene/bad.py:1 imports geometry") for v in found)
    assert any("Qt outside app/" in v for v in found) and any("torch/nerfstudio outside nerf/" in v for v in found)


@pytest.mark.parametrize("package", ["scene", "scene.io", "scene.project", "geometry", "slam", "sfm"])
def test_core_packages_import_without_qt_or_torch(package):
    code = (f"import sys; import {package}; "
            "bad = [m for m in ('PyQt6', 'torch', 'nerfstudio', 'pyqtgraph') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_installed_cv2_is_the_contrib_build():
    import cv2

    assert hasattr(cv2, "xfeatures2d"), "cv2 lacks contrib modules: opencv-python-headless shadows the contrib build"
    assert cv2.__version__.startswith("4.10.0")
