"""Render the main window on the demo scene and save a PNG: ``python -m app.screenshot OUT.png``.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24"``). Settings go to a
temporary folder so the user's window layout and recent files are untouched.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def _settle(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def take_screenshot(out: Path, width: int = 1600, height: int = 1000, path: str | None = None,
                    frame_fraction: float = 0.35) -> Path:
    os.environ.setdefault("PARALLAX_SETTINGS_DIR", tempfile.mkdtemp(prefix="parallax-settings-"))
    from .gui import create_application
    from .main_window import MainWindow

    logging.getLogger().setLevel(logging.INFO)
    app = create_application([])
    window = MainWindow(confirm_discard=False)
    window.resize(width, height)
    window.show()
    _settle(app, 0.3)
    if path:
        window.open_path(path)
    else:
        window.open_demo()
    if not window.wait_for_task(600_000):
        raise SystemExit("screenshot: loading did not finish in 10 minutes")
    if window.last_message_box is not None:
        raise SystemExit(f"screenshot: loading failed: {window.last_message_box.text()}")
    frames = window.frames
    if frames.image_ids:
        frames.slider.setValue(int(frame_fraction * (len(frames.image_ids) - 1)))
    _settle(app, 0.5)
    window.view.reset_camera()
    _settle(app, 0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    from app.view3d import grab_with_view

    if not grab_with_view(window).save(str(out)):
        raise SystemExit(f"screenshot: cannot write {out}")
    window.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="assets/screenshot.png")
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    parser.add_argument("--path", help="open this path instead of the demo scene")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    written = take_screenshot(Path(args.out), width, height, args.path)
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
