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
import subprocess
import sys
import weakref
from dataclasses import asdict, fields

import cv2
import numpy as np

from scene.camera import Camera
from scene.errors import ParallaxError
from scene.messages import camera_fields, camera_from_fields, child_channel, start_child
from slam.features import Features, OrbExtractor, OrbOptions, PyramidPlan, _as_gray

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a cold numba cache compiles the extractor's kernels in the new process
# Errors the extractor raises for a bad frame, re-raised in the caller as the same type.
_ERRORS = {"ParallaxError": ParallaxError, "ValueError": ValueError, "TypeError": TypeError, "error": cv2.error}


def _features_fields(features: Features) -> dict:
    out = {f.name: getattr(features, f.name) for f in fields(features) if f.name != "plan"}
    out["plan"] = {f.name: getattr(features.plan, f.name) for f in fields(features.plan)}
    return out


def _features_from_fields(f: dict) -> Features:
    plan = dict(f["plan"])
    plan["image_size"] = tuple(plan["image_size"])
    return Features(**{**f, "plan": PyramidPlan(**plan)})


def _options_from_fields(f: dict) -> OrbOptions:
    return OrbOptions(**{**f, "reference_size": tuple(f["reference_size"])})


def main(argv: list[str]) -> None:
    """The extraction process (``python -m slam.extractor_process READ_FD WRITE_FD``)."""
    channel = child_channel(argv)
    kind, first = channel.recv()
    extractor = OrbExtractor(_options_from_fields(first["options"]))
    _load_kernels(extractor)
    channel.send("ready")
    while True:
        try:
            kind, request = channel.recv()
        except EOFError:  # the owner is gone
            return
        if kind == "quit":
            return
        try:
            features = extractor.extract(request["image"], camera_from_fields(request["camera"]))
        except Exception as exc:  # noqa: BLE001 - raised again in the caller, as its own extractor would
            channel.send("error", type=type(exc).__name__, message=str(exc))
            continue
        channel.send("features", **_features_fields(features))


def _load_kernels(extractor: OrbExtractor) -> None:
    """Extract once from a textured image, so the first real frame does not pay numba's kernel loading."""
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160)) * 255).astype(np.uint8)
    camera = Camera(1, "PINHOLE", 160, 120, np.array([150.0, 150.0, 80.0, 60.0]))
    extractor.extract(image, camera)


class ProcessExtractor:
    """``extract(image, camera) -> Features`` run by a spawned process; ``close()`` ends it. ``submit`` then
    ``collect`` split one extraction in two, so the caller can work while the process extracts.

    The process starts at construction without waiting for it (about 1-2 s of imports and kernel loading);
    ``wait_ready`` or the first ``extract`` waits. A process that cannot start or dies raises EOFError or
    OSError from them.
    """

    def __init__(self, options: OrbOptions | None = None):
        self._process, self._channel = start_child("slam.extractor_process")
        # A System dropped without close(): closing our ends lets the process read EOF and end.
        weakref.finalize(self, self._channel.close)
        self._channel.send("start", options=asdict(options or OrbOptions()))
        self._ready = False
        self._pending = False   # a request sent whose reply was not read yet

    def wait_ready(self) -> None:
        if self._ready:
            return
        if not self._channel.poll(START_TIMEOUT_S):
            raise OSError(f"the ORB extraction process did not start within {START_TIMEOUT_S:.0f} s")
        self._channel.recv()  # "ready", or EOFError when the process could not start
        self._ready = True

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def extract(self, image, camera: Camera) -> Features:
        self.submit(image, camera)
        return self.collect()

    def submit(self, image, camera: Camera) -> None:
        """Start extracting ``image``; ``collect`` returns its features. One request at a time: submit again
        only after collect."""
        self.wait_ready()
        if self._pending:
            raise RuntimeError("ProcessExtractor.submit: the last request was not collected")
        # Gray here: a third of the bytes through the pipe, and the same conversion the extractor makes.
        self._channel.send("extract", image=_as_gray(image), camera=camera_fields(camera))
        self._pending = True

    @property
    def pending(self) -> bool:
        return self._pending

    def collect(self) -> Features:
        """The features of the submitted image (waits for them); its error, raised here as the extractor
        in this process would have raised it."""
        if not self._pending:
            raise RuntimeError("ProcessExtractor.collect: nothing was submitted")
        self._pending = False
        kind, reply = self._channel.recv()
        if kind == "error":
            raise _ERRORS.get(reply["type"], RuntimeError)(reply["message"])
        return _features_from_fields(reply)

    def close(self) -> None:
        try:
            self._channel.send("quit")
        except OSError:  # already gone
            pass
        try:
            self._process.wait(5.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5.0)
        self._channel.close()


if __name__ == "__main__":
    # Run main from the module under its own name (loggers and classes named slam.extractor_process, not __main__).
    from slam.extractor_process import main as _main

    _main(sys.argv[1:])
