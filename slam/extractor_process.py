"""ORB extraction in a process of its own, for Play mode (local mapping on its own thread).

Why: in one process, tracking's feature extraction and the local-mapping thread share the GIL. The extractor
hands the GIL back and forth about 90 times a frame (every OpenCV call and numba kernel releases it, and
every return waits for it); with the mapping thread running Python meanwhile, a 10 ms extraction took 13-14
ms. Measured on this 2-core machine: the same extraction next to another process costs nothing extra, next
to another thread 40 % more. Here the tracking thread waits once per frame on a pipe instead.

The features are bit-identical to ``OrbExtractor.extract`` in the caller's process (same code, same pixels);
Step mode keeps extracting in-process, with no pipe in the way.
"""
from __future__ import annotations

import logging
import multiprocessing

import numpy as np

from scene.camera import Camera
from slam.features import Features, OrbExtractor, OrbOptions, _as_gray

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a cold numba cache compiles the extractor's kernels in the new process


def _serve(conn, options: OrbOptions) -> None:
    extractor = OrbExtractor(options)
    _load_kernels(extractor)
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the owner is gone
            return
        if request is None:
            return
        gray, camera = request
        try:
            reply = ("ok", extractor.extract(gray, camera))
        except Exception as exc:  # noqa: BLE001 - raised again in the caller, as its own extractor would
            reply = ("error", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle: its message does
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}; ({exc})")))


def _load_kernels(extractor: OrbExtractor) -> None:
    """Extract once from a textured image, so the first real frame does not pay numba's kernel loading."""
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160)) * 255).astype(np.uint8)
    camera = Camera(1, "PINHOLE", 160, 120, np.array([150.0, 150.0, 80.0, 60.0]))
    extractor.extract(image, camera)


class ProcessExtractor:
    """``extract(image, camera) -> Features`` run by a spawned process; ``close()`` ends it.

    The process starts at construction without waiting for it (about 1-2 s of imports and kernel loading);
    ``wait_ready`` or the first ``extract`` waits. A process that cannot start or dies raises EOFError or
    OSError from them.
    """

    def __init__(self, options: OrbOptions | None = None):
        context = multiprocessing.get_context("spawn")  # the caller may run threads (and Qt): no fork
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, options or OrbOptions()), daemon=True,
                                        name="parallax-orb")
        self._process.start()
        child.close()
        self._ready = False

    def wait_ready(self) -> None:
        if self._ready:
            return
        if not self._conn.poll(START_TIMEOUT_S):
            raise OSError(f"the ORB extraction process did not start within {START_TIMEOUT_S:.0f} s")
        self._conn.recv()  # "ready", or EOFError when the process could not start
        self._ready = True

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def extract(self, image, camera: Camera) -> Features:
        self.wait_ready()
        # Gray here: a third of the bytes through the pipe, and the same conversion the extractor makes.
        self._conn.send((_as_gray(image), camera))
        kind, payload = self._conn.recv()
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        self._conn.close()
