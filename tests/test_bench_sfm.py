"""bench.sfm_bench's report: per-row run counts, time ratio against pycolmap in the same run."""
from __future__ import annotations

from bench.sfm_bench import TITLE, markdown_section


def _row(tool, total, runs, **extra):
    row = dict(set="kermit", tool=tool, images=11, intrinsics="unknown", note="", runs=runs, registered=11,
               models=1, points=900, track_length=3.0, reproj_px=0.4, extract_s=1.0, match_s=2.0, map_s=0.5,
               total_s=total, ate=float("nan"), ate_pct=float("nan"), rot_deg=float("nan"))
    row.update(extra)
    return row


def test_section_reports_runs_per_row_and_the_time_ratio():
    lines = markdown_section([_row("parallax", 3.0, 3), _row("pycolmap", 6.0, 3),
                              dict(set="lego", tool="pycolmap", images=100, intrinsics="known", runs=1,
                                   note="failed: RuntimeError: boom")], runs=3)
    assert lines[0] == TITLE
    table = [line for line in lines if line.startswith("| kermit") or line.startswith("| lego")]
    parallax, pycolmap, failed = table
    assert parallax.startswith("| kermit | parallax | 3 | unknown | 11 / 11 |") and "| 0.50× |" in parallax
    assert pycolmap.split(" | ")[2] == "3"
    assert failed.startswith("| lego | pycolmap | 1 |") and "failed: RuntimeError: boom" in failed
