"""Decode one image file, refusing truncated files.

cv2.imdecode returns a partially decoded image (grey/black bottom rows) for many truncated
JPEGs and PNGs instead of failing, so the container structure is checked first:
a JPEG must reach its EOI marker, a PNG its IEND chunk, BMP/WebP must be as long as their
headers say. Other formats (TIFF) rely on the decoder.

file_problem() answers the same question for a file on disk without reading it whole (segment
headers and the tail), so a scan over thousands of frames stays cheap.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Inside entropy-coded JPEG data 0xFF is followed by 0x00 (stuffing) or RST0-7; anything else is a marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_JPEG_STANDALONE = {0x01} | set(range(0xD0, 0xD8))  # markers without a length field
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the fixed 12-byte last chunk


def _jpeg_problem(data: bytes) -> Optional[str]:
    """Walk the JPEG segments from SOI to EOI; None when complete."""
    pos, n = 2, len(data)
    while True:
        if pos + 2 > n:
            return "truncated JPEG (no end-of-image marker)"
        if data[pos] != 0xFF:
            return f"corrupt JPEG (expected a marker at byte {pos})"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            return "truncated JPEG (segment header cut off)"
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        pos += 2 + length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data up to the next marker
            match = _JPEG_MARKER.search(data, pos)
            if match is None:
                return "truncated JPEG (image data cut off before the end-of-image marker)"
            pos = match.start()


def _png_problem(data: bytes) -> Optional[str]:
    """Walk the PNG chunks to IEND; None when complete."""
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= n:
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            return f"truncated PNG ({kind.decode('latin-1')} chunk cut off)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated PNG (no IEND chunk)"


def container_problem(data: bytes) -> Optional[str]:
    """Why the encoded bytes are incomplete, or None when they look complete (or the format is not checked)."""
    if len(data) == 0:
        return "empty file"
    if data[:2] == b"\xff\xd8":
        return _jpeg_problem(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_problem(data)
    if data[:2] == b"BM" and len(data) >= 6:
        declared = struct.unpack("<I", data[2:6])[0]
        return f"truncated BMP ({len(data)} of {declared} bytes)" if len(data) < declared else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = struct.unpack("<I", data[4:8])[0] + 8
        return f"truncated WebP ({len(data)} of {declared} bytes)" if len(data) < declared else None
    return None


def _jpeg_headers_problem(f, size: int) -> Optional[str]:
    """Walk the JPEG segments before the first scan with seeks; None when they all fit in the file."""
    pos = 2
    while True:
        f.seek(pos)
        head = f.read(4)
        if len(head) < 2:
            return "truncated JPEG (no end-of-image marker)"
        if head[0] != 0xFF:
            return f"corrupt JPEG (expected a marker at byte {pos})"
        marker = head[1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if len(head) < 4:
            return "truncated JPEG (segment header cut off)"
        pos += 2 + struct.unpack(">H", head[2:4])[0]
        if pos > size:
            return "truncated JPEG (segment cut off)"
        if marker == 0xDA:
            return None


def file_problem(path: Path) -> Optional[str]:
    """Why the image file is incomplete, or None; like container_problem but reads headers and tail only.

    A JPEG is complete when its headers fit and it ends with EOI (entropy-coded data cannot hold
    that marker), a PNG when it ends with the IEND chunk; only files with bytes after their end
    (motion photos...) or without one are read whole.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16)
            if size == 0:
                return "empty file"
            if head[:2] == b"\xff\xd8":
                problem = _jpeg_headers_problem(f, size)
                if problem:
                    return problem
                f.seek(size - 2)
                if f.read(2) == b"\xff\xd9":
                    return None
                f.seek(0)
                return _jpeg_problem(f.read())
            if head[:8] == _PNG_SIGNATURE:
                f.seek(max(0, size - len(_PNG_IEND)))
                if f.read() == _PNG_IEND:
                    return None
                f.seek(0)
                return _png_problem(f.read())
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if head[:2] == b"BM" and len(head) >= 6:
        declared = struct.unpack("<I", head[2:6])[0]
        return f"truncated BMP ({size} of {declared} bytes)" if size < declared else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return f"truncated WebP ({size} of {declared} bytes)" if size < declared else None
    return None


def decode_image_file(path: Path) -> tuple[Optional[np.ndarray], str]:
    """(image, "") with a uint8 BGR or gray image, or (None, reason) for an unreadable file.

    EXIF orientation is applied, alpha is dropped, 16-bit images are reduced to 8 bits.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"
    problem = container_problem(data)
    if problem:
        return None, problem
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:
        return None, "OpenCV could not decode it"
    if image.dtype != np.uint8:  # IMREAD_ANYCOLOR already converts depth; keep the guarantee explicit
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image, ""
