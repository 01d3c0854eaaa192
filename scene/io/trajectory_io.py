"""Trajectory files: TUM, KITTI and EuRoC (ASL csv). All poses are ``world_from_cam``.

- TUM: ``timestamp tx ty tz qx qy qz qw`` per line (seconds; quaternion w last); ``#`` comments.
- KITTI: 12 numbers per line, the row-major 3x4 ``[R | t]``; timestamps come from a
  ``times.txt`` (one value per line) or, without one, are the frame index 0, 1, 2...
- EuRoC: csv ``#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],
  q_RS_z []`` and possibly more columns (velocities, biases), which are ignored.

Numbers are written with ``repr`` (shortest text that reads back to the same float), so TUM
and EuRoC round trips are exact; EuRoC stores whole nanoseconds. KITTI stores a rotation
matrix, so its quaternions come back equal to rounding (~1e-16), not bit for bit.
Writes are atomic (temporary file, fsync, ``os.replace``).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import CorruptInput, InputNotFound, SaveFailed, UnsupportedFormat
from ..model import Trajectory
from ..rigid import matrix_to_quat_wxyz, quat_wxyz_to_matrix

TRAJECTORY_FORMATS = ("tum", "kitti", "euroc")
EUROC_HEADER = ("#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],"
                "q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z []")
NS_PER_S = 10 ** 9


def _fmt(value) -> str:
    return repr(float(value))


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every non-empty, non-comment line."""
    if not path.is_file():
        raise InputNotFound(f"trajectory file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorruptInput(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputNotFound(f"cannot read {path}: {exc.strerror or exc}") from exc
    rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    rows = [(n, line) for n, line in rows if line and not line.startswith("#")]
    if not rows:
        raise CorruptInput(f"{path}: the file holds no poses (it is empty or only comments)")
    return rows


def _parse_floats(path: Path, number: int, fields: list[str], what: str) -> list[float]:
    values = []
    for column, token in enumerate(fields, start=1):
        try:
            value = float(token)
        except ValueError:
            raise CorruptInput(f"{path}, line {number}: {what} column {column} is not a number: {token!r}") from None
        if not math.isfinite(value):
            raise CorruptInput(f"{path}, line {number}: {what} column {column} is {token!r} (must be finite)")
        values.append(value)
    return values


def _check_columns(path: Path, number: int, fields: list[str], expected: int, fmt: str, at_least=False) -> None:
    ok = len(fields) >= expected if at_least else len(fields) == expected
    if not ok:
        need = f"at least {expected}" if at_least else str(expected)
        raise CorruptInput(f"{path}, line {number}: expected {need} values per line for {fmt}, got {len(fields)}")


def _quat_or_fail(path: Path, number: int, quat_wxyz: list[float]) -> list[float]:
    if math.sqrt(sum(q * q for q in quat_wxyz)) < 1e-6:
        raise CorruptInput(f"{path}, line {number}: the quaternion is zero, not a rotation")
    return quat_wxyz


def _write_text(path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise SaveFailed(f"cannot write {path}: {exc.strerror or exc}") from exc


def _trajectory(path: Path, stamps, quats, positions) -> Trajectory:
    try:
        return Trajectory(np.array(stamps), np.array(quats).reshape(-1, 4), np.array(positions).reshape(-1, 3))
    except ValueError as exc:
        raise CorruptInput(f"{path}: {exc}") from exc


# --- TUM -----------------------------------------------------------------------------------

def read_tum(path) -> Trajectory:
    path = Path(path)
    stamps, quats, positions = [], [], []
    for number, line in _read_lines(path):
        fields = line.split()
        _check_columns(path, number, fields, 8, "TUM (timestamp tx ty tz qx qy qz qw)")
        t, tx, ty, tz, qx, qy, qz, qw = _parse_floats(path, number, fields, "TUM")
        stamps.append(t)
        positions.append((tx, ty, tz))
        quats.append(_quat_or_fail(path, number, [qw, qx, qy, qz]))
    return _trajectory(path, stamps, quats, positions)


def write_tum(path, trajectory: Trajectory) -> None:
    lines = ["# timestamp tx ty tz qx qy qz qw (world_from_cam)"]
    for t, (tx, ty, tz), (qw, qx, qy, qz) in zip(trajectory.timestamps, trajectory.world_from_cam_translation,
                                                 trajectory.world_from_cam_quat_wxyz):
        lines.append(" ".join(_fmt(v) for v in (t, tx, ty, tz, qx, qy, qz, qw)))
    _write_text(path, "\n".join(lines) + "\n")


# --- KITTI ---------------------------------------------------------------------------------

def read_kitti_times(path) -> np.ndarray:
    path = Path(path)
    stamps = []
    for number, line in _read_lines(path):
        fields = line.split()
        _check_columns(path, number, fields, 1, "KITTI times.txt (one timestamp)")
        stamps.extend(_parse_floats(path, number, fields, "times.txt"))
    return np.array(stamps)


def kitti_times_path_for(poses_path) -> Path:
    """Where Parallax writes the timestamps of a KITTI pose file (KITTI poses carry none)."""
    poses_path = Path(poses_path)
    return poses_path.with_name(poses_path.stem + "_times.txt")


def find_kitti_times(poses_path) -> Path | None:
    """Timestamps for a KITTI pose file: ``<stem>_times.txt`` (what Parallax writes) or ``times.txt`` beside it,
    one folder up, or ``../sequences/<stem>/times.txt``."""
    poses_path = Path(poses_path)
    for candidate in (kitti_times_path_for(poses_path), poses_path.parent / "times.txt", poses_path.parent.parent / "times.txt",
                      poses_path.parent.parent / "sequences" / poses_path.stem / "times.txt"):
        if candidate.is_file() and candidate.resolve() != poses_path.resolve():
            return candidate
    return None


def read_kitti(path, times_path=None) -> Trajectory:
    """KITTI poses; ``times_path`` (if given) must hold one timestamp per pose."""
    path = Path(path)
    stamps, quats, positions = [], [], []
    for number, line in _read_lines(path):
        fields = line.split()
        _check_columns(path, number, fields, 12, "KITTI (row-major 3x4 matrix)")
        m = np.array(_parse_floats(path, number, fields, "KITTI")).reshape(3, 4)
        if abs(np.linalg.det(m[:, :3]) - 1.0) > 1e-3:
            raise CorruptInput(f"{path}, line {number}: the 3x3 part is not a rotation (determinant "
                               f"{np.linalg.det(m[:, :3]):.6g})")
        stamps.append(float(len(stamps)))
        quats.append(matrix_to_quat_wxyz(m[:, :3]))
        positions.append(m[:, 3])
    if times_path is not None:
        times = read_kitti_times(times_path)
        if len(times) != len(stamps):
            raise CorruptInput(f"{times_path}: holds {len(times)} timestamps but {path} holds {len(stamps)} poses")
        stamps = times
    return _trajectory(path, stamps, quats, positions)


def write_kitti(path, trajectory: Trajectory, times_path=None) -> None:
    """KITTI poses; also ``times_path`` with the timestamps when given."""
    lines = []
    for q, t in zip(trajectory.world_from_cam_quat_wxyz, trajectory.world_from_cam_translation):
        m = np.column_stack((quat_wxyz_to_matrix(q), t))
        lines.append(" ".join(_fmt(v) for v in m.reshape(-1)))
    text = "\n".join(lines) + "\n" if lines else ""
    _write_text(path, text)
    if times_path is not None:
        _write_text(times_path, "".join(_fmt(t) + "\n" for t in trajectory.timestamps))


# --- EuRoC ---------------------------------------------------------------------------------

def _parse_nanoseconds(path: Path, number: int, token: str) -> Fraction:
    try:
        return Fraction(token)  # exact: a float would round 19-digit nanosecond stamps
    except (ValueError, ZeroDivisionError):
        raise CorruptInput(f"{path}, line {number}: the timestamp is not a number of nanoseconds: {token!r}") from None


def read_euroc(path) -> Trajectory:
    path = Path(path)
    stamps, quats, positions = [], [], []
    for number, line in _read_lines(path):
        fields = [f.strip() for f in line.split(",")]
        _check_columns(path, number, fields, 8, "EuRoC csv (timestamp [ns], p x y z, q w x y z)", at_least=True)
        stamps.append(float(_parse_nanoseconds(path, number, fields[0]) / NS_PER_S))
        px, py, pz, qw, qx, qy, qz = _parse_floats(path, number, fields[1:8], "EuRoC")
        positions.append((px, py, pz))
        quats.append(_quat_or_fail(path, number, [qw, qx, qy, qz]))
    return _trajectory(path, stamps, quats, positions)


def write_euroc(path, trajectory: Trajectory) -> None:
    lines = [EUROC_HEADER]
    for t, p, q in zip(trajectory.timestamps, trajectory.world_from_cam_translation,
                       trajectory.world_from_cam_quat_wxyz):
        ns = round(Fraction(float(t)) * NS_PER_S)  # exact rounding to the nearest nanosecond
        lines.append(",".join([str(ns)] + [_fmt(v) for v in (*p, *q)]))
    _write_text(path, "\n".join(lines) + "\n")


# --- dispatch ------------------------------------------------------------------------------

def detect_trajectory_format(path) -> str:
    """'tum', 'kitti' or 'euroc' from the first data line (comma separated -> EuRoC; 8 values -> TUM;
    12 -> KITTI)."""
    path = Path(path)
    number, line = _read_lines(path)[0]
    if "," in line:
        if len(line.split(",")) >= 8:
            return "euroc"
    else:
        count = len(line.split())
        if count == 8:
            return "tum"
        if count == 12:
            return "kitti"
    raise UnsupportedFormat(f"{path}, line {number}: not a TUM (8 values), KITTI (12 values) or EuRoC csv "
                            f"(at least 8 comma-separated values) trajectory: {line[:80]!r}")


def _check_format(fmt: str) -> str:
    name = str(fmt).lower()
    if name not in TRAJECTORY_FORMATS:
        raise UnsupportedFormat(f"unknown trajectory format {fmt!r}; choose one of {', '.join(TRAJECTORY_FORMATS)}")
    return name


def read_trajectory(path, fmt: str | None = None, times_path=None, find_times: bool = True) -> Trajectory:
    """Read a trajectory, detecting the format when ``fmt`` is None.

    For KITTI without ``times_path``, a ``times.txt`` found by ``find_kitti_times`` is used when
    ``find_times`` is set and it has one line per pose; otherwise timestamps are frame indices.
    """
    path = Path(path)
    fmt = _check_format(fmt) if fmt is not None else detect_trajectory_format(path)
    if fmt == "tum":
        return read_tum(path)
    if fmt == "euroc":
        return read_euroc(path)
    trajectory = read_kitti(path, times_path)
    if times_path is None and find_times:
        found = find_kitti_times(path)
        if found is not None:
            try:
                times = read_kitti_times(found)
            except CorruptInput:
                times = None
            if times is not None and len(times) == len(trajectory):
                trajectory = Trajectory(times, trajectory.world_from_cam_quat_wxyz,
                                        trajectory.world_from_cam_translation)
    return trajectory


def write_trajectory(path, trajectory: Trajectory, fmt: str, times_path=None) -> None:
    """Write ``trajectory`` as 'tum', 'kitti' (plus ``times_path`` if given) or 'euroc'."""
    fmt = _check_format(fmt)
    if fmt == "tum":
        write_tum(path, trajectory)
    elif fmt == "kitti":
        write_kitti(path, trajectory, times_path)
    else:
        write_euroc(path, trajectory)
