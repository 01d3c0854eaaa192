"""Smoke test of the NeRF benchmark's code path (bench/nerf_bench.py) on a tiny synthetic set.

One parallax-cpu run on 12 views of a 24 px sphere, checkpointed at two wall-clock marks (the second segment
resumes the first), evaluated on the held-out view in a separate process, then the markdown section. The
ns-train comparison and the fox are too slow for a smoke test; their arithmetic is tested on made-up rows.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.nerf_bench import TITLE, Options, markdown_section, per_iteration, psnr, run_all
from scene.model import FrameRef, Image, Scene
from tests.nerf_fixtures import render_sphere, sphere_cameras, tiny_camera

MARKS_MIN = (0.03, 0.06)  # 1.8 s and 3.6 s of training


def sphere_scene(folder) -> Scene:
    import cv2

    camera = tiny_camera()
    scene = Scene()
    scene.add_camera(camera)
    images = []
    for k, pose in enumerate(sphere_cameras()):
        rgb, _ = render_sphere(camera, pose)
        path = folder / f"view{k:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(Image(k + 1, path.name, camera.camera_id, pose, source=FrameRef(str(path))))
    scene.add_images(images)
    return scene


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_nerf")
    options = Options(minutes=MARKS_MIN, methods=("parallax-cpu",), lego_size=24, fox_minutes=0,
                      overhead_iterations=0, gpu_iterations=0, threads=2, rays_per_batch=128,
                      lego_source=sphere_scene(folder))
    return run_all(folder / "work", options, log=lambda message: None)


def test_marks_are_trained_resumed_and_evaluated(bench_rows):
    marks = [r for r in bench_rows if r["kind"] == "mark"]
    assert [r["mark_min"] for r in marks] == list(MARKS_MIN), marks
    assert not any(r.get("note") for r in marks), marks
    first, second = marks
    assert 0 < first["steps"] < second["steps"]  # the second segment resumed the first run
    assert first["trained_min"] >= MARKS_MIN[0] and second["trained_min"] >= MARKS_MIN[1]
    assert second["trained_min"] < MARKS_MIN[1] + 0.1  # the overshoot is one step, not a whole segment
    for r in marks:
        assert r["views"] == 1  # 12 views: index 5 held out
        assert math.isfinite(r["psnr"]) and 5.0 < r["psnr"] < 60.0
        assert math.isfinite(r["s_per_iter"]) and r["s_per_iter"] > 0


def test_markdown_section_has_a_finite_row_per_mark(bench_rows):
    lines = markdown_section(bench_rows)
    assert lines[0] == TITLE
    table = [line for line in lines if line.startswith("| 0.0")]
    assert len(table) == 2
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(c != "—" for c in cells[:3]), line
        assert math.isfinite(float(cells[1]))


def test_psnr_matches_its_definition():
    truth = np.full((4, 4, 3), 0.5, np.float32)
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-4)   # mse 0.01
    assert psnr(truth + 2.0, truth) == pytest.approx(-10 * math.log10(0.25), abs=1e-4)  # clipped to 1
    assert psnr(truth, truth) == float("inf")


def test_per_iteration_uses_the_window_after_warm_up():
    marks = [(1, 100.0), (2, 110.0), (5, 113.0), (11, 119.0)]
    timing = per_iteration(marks, first=2)
    assert timing["iterations"] == 9 and timing["s_per_iter"] == pytest.approx(1.0)
    assert per_iteration(marks[:1], first=0)["s_per_iter"] is None


def test_markdown_reports_overhead_and_targets():
    rows = [{"kind": "settings", "scale": 1.0, "threads": 2, "lego_size": 100, "lego_train": 90, "lego_held_out": 10},
            {"kind": "mark", "method": "parallax-cpu", "mark_min": 10.0, "trained_min": 10.01, "steps": 700,
             "psnr": 25.5, "cpu_s_per_iter": 1.2},
            {"kind": "mark", "method": "nerfacto", "mark_min": 10.0, "trained_min": 10.02, "steps": 300,
             "psnr": 22.0, "cpu_s_per_iter": 2.7},
            {"kind": "overhead", "path": "plain ns-train parallax-cpu", "s_per_iter": 1.0, "iterations": 50,
             "overhead_pct": None},
            {"kind": "overhead", "path": "our runner", "s_per_iter": 1.03, "iterations": 50, "overhead_pct": 3.0}]
    text = "\n".join(markdown_section(rows))
    assert "| 10 | 25.50 | 700 (10.01 trained) | 1.20 | 22.00 | 300 (10.02 trained) | 2.70 | +3.50 |" in text
    assert "| our runner | 1.030 | — | 50 | +3.0 % |" in text
    assert "25.50 dB, met" in text and "+3.50 dB, met" in text and "+3.0 %, met" in text
