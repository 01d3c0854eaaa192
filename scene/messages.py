"""Messages between Parallax's own processes, without pickle (DESIGN §2: nothing is ever unpickled).

A message is a kind and fields: JSON values (str, numbers, bools, None, lists, dicts with str keys) and
numpy arrays of plain dtypes (numbers, bools, fixed-width strings; never object), nested anywhere. On the
wire: a 4-byte header length, a JSON header naming each array's dtype and shape, then the arrays' raw bytes.

The transport: two OS pipes to a ``python -m MODULE`` child, each message framed by an 8-byte length
(``start_child`` in the parent, ``child_channel`` in the child). A child whose parent dies reads EOF and ends.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np

from scene.camera import Camera
from scene.model import FrameRef, Trajectory

ROOT = Path(__file__).resolve().parents[1]
_ARRAY = "__array__"


class MessageError(ValueError):
    """A message that does not decode (truncated, or an array dtype that is not plain data)."""


def encode(kind: str, fields: dict) -> bytes:
    blobs: list[bytes] = []
    specs: list[list] = []

    def walk(value):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("object arrays cannot be sent (they would need pickle)")
            array = np.ascontiguousarray(value)
            specs.append([array.dtype.str, list(array.shape)])
            blobs.append(array.tobytes())
            return {_ARRAY: len(specs) - 1}
        if isinstance(value, dict):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    header = json.dumps({"kind": kind, "fields": walk(fields), "arrays": specs}).encode()
    return len(header).to_bytes(4, "little") + header + b"".join(blobs)


def decode(data: bytes) -> tuple[str, dict]:
    try:
        n = int.from_bytes(data[:4], "little")
        header = json.loads(data[4:4 + n])
        offset = 4 + n
        arrays = []
        for dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise MessageError(f"refusing an array of dtype {dtype}")
            count = int(np.prod(shape, dtype=np.int64))
            if offset + count * dt.itemsize > len(data):
                raise MessageError("message truncated")
            arrays.append(np.frombuffer(data, dt, count, offset).reshape(shape).copy())
            offset += count * dt.itemsize
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"cannot decode a message: {exc}") from exc

    def unwalk(value):
        if isinstance(value, dict):
            return arrays[value[_ARRAY]] if set(value) == {_ARRAY} else {k: unwalk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unwalk(v) for v in value]
        return value

    return header["kind"], unwalk(header["fields"])


class Channel:
    """Two one-way pipes to another process: ``send(kind, **fields)``, ``recv() -> (kind, fields)``.

    One thread reads; writers from several threads must take turns (a message is several writes)."""

    def __init__(self, read_fd: int, write_fd: int):
        self._read_fd, self._write_fd = read_fd, write_fd

    def send(self, kind: str, **fields) -> None:
        """Raises OSError (BrokenPipeError) once the other side has gone."""
        data = encode(kind, fields)
        view = memoryview(len(data).to_bytes(8, "little") + data)
        while len(view):
            view = view[os.write(self._write_fd, view):]

    def recv(self) -> tuple[str, dict]:
        """Raises EOFError once the other side has gone."""
        return decode(self._read_exactly(int.from_bytes(self._read_exactly(8), "little")))

    def _read_exactly(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining:
            chunk = os.read(self._read_fd, remaining)
            if not chunk:
                raise EOFError("the other process has gone")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True when a message (or EOF) is waiting; ``None`` waits for ever."""
        return bool(select.select([self._read_fd], [], [], timeout)[0])

    def close(self) -> None:
        # -1 afterwards: a late send or recv fails (EBADF) instead of reaching a descriptor reused since.
        fds, (self._read_fd, self._write_fd) = (self._read_fd, self._write_fd), (-1, -1)
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def start_child(module: str) -> tuple[subprocess.Popen, Channel]:
    """Start ``python -m module`` with a Channel to it (the child calls ``child_channel``)."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        process = subprocess.Popen([sys.executable, "-m", module, str(to_child_r), str(from_child_w)],
                                   pass_fds=(to_child_r, from_child_w), env=env)
    except BaseException:
        for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
            os.close(fd)
        raise
    os.close(to_child_r)  # the child holds its own copies
    os.close(from_child_w)
    return process, Channel(from_child_r, to_child_w)


def child_channel(argv: list[str]) -> Channel:
    """The child's end: ``argv`` are the two descriptors ``start_child`` passed."""
    return Channel(int(argv[0]), int(argv[1]))


# --- scene types as message fields --------------------------------------------------------------------

def camera_fields(camera: Camera) -> dict:
    return {"camera_id": camera.camera_id, "model": camera.model, "width": camera.width,
            "height": camera.height, "params": camera.params, "intrinsics_source": camera.intrinsics_source}


def camera_from_fields(f: dict) -> Camera:
    return Camera(f["camera_id"], f["model"], f["width"], f["height"], f["params"], f["intrinsics_source"])


def frame_ref_fields(ref: FrameRef | None) -> dict | None:
    return None if ref is None else {"path": ref.path, "frame_index": ref.frame_index, "timestamp": ref.timestamp}


def frame_ref_from_fields(f: dict | None) -> FrameRef | None:
    return None if f is None else FrameRef(f["path"], f["frame_index"], f["timestamp"])


def trajectory_fields(trajectory: Trajectory | None) -> dict | None:
    if trajectory is None:
        return None
    return {"timestamps": trajectory.timestamps, "quat_wxyz": trajectory.world_from_cam_quat_wxyz,
            "translation": trajectory.world_from_cam_translation}


def trajectory_from_fields(f: dict | None) -> Trajectory | None:
    return None if f is None else Trajectory(f["timestamps"], f["quat_wxyz"], f["translation"])
