"""Camera intrinsics with COLMAP's model names and parameter order."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# name -> (COLMAP model id, parameter names in COLMAP order)
CAMERA_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": (5, ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    "FOV": (7, ("fx", "fy", "cx", "cy", "omega")),
    "SIMPLE_RADIAL_FISHEYE": (8, ("f", "cx", "cy", "k")),
    "RADIAL_FISHEYE": (9, ("f", "cx", "cy", "k1", "k2")),
    "THIN_PRISM_FISHEYE": (10, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")),
}
MODEL_NAME_FROM_ID = {model_id: name for name, (model_id, _) in CAMERA_MODELS.items()}

# Where intrinsics came from; "guess" must be shown as such everywhere.
INTRINSICS_SOURCES = ("calib", "colmap", "sensor_yaml", "exif", "guess", "model", "transforms")


@dataclass(frozen=True)
class Camera:
    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intrinsics_source: str = "model"

    def __post_init__(self):
        if self.model not in CAMERA_MODELS:
            raise ValueError(f"unknown camera model {self.model!r}; known: {', '.join(CAMERA_MODELS)}")
        p = np.array(self.params, dtype=np.float64).reshape(-1)
        expected = len(CAMERA_MODELS[self.model][1])
        if p.size != expected:
            raise ValueError(f"camera model {self.model} takes {expected} parameters, got {p.size}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"camera {self.camera_id} has NaN or infinite parameters")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera {self.camera_id} has invalid size {self.width}x{self.height}")
        p.setflags(write=False)
        object.__setattr__(self, "params", p)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "camera_id", int(self.camera_id))

    @property
    def model_id(self) -> int:
        return CAMERA_MODELS[self.model][0]

    @property
    def param_names(self) -> tuple[str, ...]:
        return CAMERA_MODELS[self.model][1]

    @property
    def is_guess(self) -> bool:
        return self.intrinsics_source == "guess"

    def param(self, name: str) -> float:
        return float(self.params[self.param_names.index(name)])

    @property
    def focal_xy(self) -> tuple[float, float]:
        names = self.param_names
        if "f" in names:
            f = self.param("f")
            return f, f
        return self.param("fx"), self.param("fy")

    @property
    def principal_point(self) -> tuple[float, float]:
        return self.param("cx"), self.param("cy")

    def calibration_matrix(self) -> np.ndarray:
        fx, fy = self.focal_xy
        cx, cy = self.principal_point
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> "Camera":
        """Same camera for images resized to width x height (focal and principal point scale)."""
        sx, sy = width / self.width, height / self.height
        p = self.params.copy()
        for i, name in enumerate(self.param_names):
            if name in ("fx", "cx"):
                p[i] *= sx
            elif name in ("fy", "cy"):
                p[i] *= sy
            elif name == "f":
                p[i] *= (sx + sy) / 2.0
        return replace(self, width=int(width), height=int(height), params=p)

    def describe(self) -> str:
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, self.params))
        tag = " (GUESS: focal = 1.2 x max(w, h))" if self.is_guess else f" [from {self.intrinsics_source}]"
        return f"{self.model} {self.width}x{self.height} {values}{tag}"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Camera) and self.camera_id == other.camera_id and self.model == other.model
                and self.width == other.width and self.height == other.height
                and np.array_equal(self.params, other.params))

    def __hash__(self):
        return hash((self.camera_id, self.model, self.width, self.height, self.params.tobytes()))


def guess_camera(camera_id: int, width: int, height: int) -> Camera:
    """The documented fallback when nothing better is known: focal = 1.2 * max(w, h)."""
    f = 1.2 * max(width, height)
    return Camera(camera_id, "SIMPLE_RADIAL", width, height, np.array([f, width / 2.0, height / 2.0, 0.0]),
                  intrinsics_source="guess")
