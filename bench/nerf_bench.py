"""NeRF benchmark (issue 5 §4): held-out PSNR against training minutes, the adapter's overhead, the fox.

- lego (NeRF-synthetic, exact poses) downscaled to 100x100 on white; every tenth view from index 5 held out
  (nerf.dataset's split: 90 train, 10 held out). ``parallax-cpu`` and nerfstudio's default nerfacto (our
  ``nerfacto`` preset: method_configs["nerfacto"] with only the device/offline fixes: CPU, no mixed precision,
  in-process data manager, LPIPS stubbed when its weights are absent) each train ONE run through our runner,
  paused at every wall-clock mark: the child trains for the minutes up to the next mark (its own clock starts
  after setup), saves a checkpoint, and the next segment resumes from it. The checkpoints are evaluated after
  all training, in a separate process, on all held-out views at full resolution (mean of per-view PSNR).
- adapter overhead: wall seconds per iteration of parallax-cpu through our child process against plain
  ``ns-train parallax-cpu`` (same config, same data folder, same thread settings), timed over the same
  iteration window, back to back.
- instant_ngp_fox (its transforms.json) at reduced resolution, parallax-cpu for N minutes, held-out PSNR.
- with CUDA present: nerfacto through the same runner on the GPU, seconds per iteration.

No torch here: training and evaluation run in child processes (``python -m bench.nerf_bench --evaluate``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]
LEGO = DATA / "nerf_synthetic_lego_train" / "transforms_train.json"
FOX = DATA / "instant_ngp_fox" / "transforms.json"
TITLE = "## NeRF (issue 5 §4)"
MINUTES = (1.0, 2.0, 5.0, 10.0)
TARGET_PSNR_DB = 25.0
TARGET_MARGIN_DB = 3.0
TARGET_OVERHEAD_PCT = 5.0
TIMEOUT_S = 3600.0  # a segment's child that reports nothing for this long is killed


@dataclass
class Options:
    minutes: tuple = MINUTES            # wall-clock marks for the PSNR curve
    scale: float = 1.0                  # multiplies every duration (smoke runs: 0.01)
    methods: tuple = ("parallax-cpu", "nerfacto")
    lego_size: int = 100
    fox_minutes: float = 10.0           # 0 skips the fox
    fox_size: int = 160                 # longest side of the fox images
    overhead_iterations: int = 60       # 0 skips the ns-train comparison
    overhead_skip: int = 10             # iterations excluded from the timing window (warm-up)
    threads: Optional[int] = None       # torch threads in every child (None: nerf.runner's default)
    rays_per_batch: Optional[int] = None  # override the presets (smoke runs only)
    gpu_iterations: int = 300           # nerfacto on CUDA when present; 0 skips
    lego_source: object = LEGO          # a transforms.json, project or Scene (nerf.dataset.load_source)
    fox_source: object = FOX


# --- small helpers ---------------------------------------------------------------------------

def psnr(rendered: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of float images in [0, 1] (rendered is clipped, as nerfstudio's metric sees it)."""
    mse = float(np.mean((np.clip(rendered, 0.0, 1.0).astype(np.float64) - truth.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else -10.0 * math.log10(mse)


# glibc keeps freed memory in the heap: rendering otherwise maps and faults in fresh pages for every chunk
KEEP_HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def _child_env(threads: int, extra: Optional[dict] = None) -> dict:
    """The thread settings our runner gives its child, plus ``extra`` (ns-train gets the runner's allocator
    settings too, so the overhead column is the adapter alone)."""
    env = dict(os.environ)
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.update(extra or {})
    return env


def _threads(options: Options) -> int:
    from nerf.runner import default_threads

    return int(options.threads or default_threads())


class CpuSampler:
    """Samples a process's user+sys CPU seconds (all threads, from /proc) with wall times, to interpolate later."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.path = Path(f"/proc/{pid}/stat")
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> Optional[float]:
        try:
            fields = self.path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick

    def _run(self) -> None:
        while not self._done.is_set():
            value = self._read()
            if value is not None:
                self.samples.append((time.time(), value))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def at(self, wall: float) -> Optional[float]:
        """CPU seconds used up to ``wall`` (linear between samples); None outside the sampled span."""
        if len(self.samples) < 2 or not self.samples[0][0] <= wall <= self.samples[-1][0]:
            return None
        times, values = zip(*self.samples)
        return float(np.interp(wall, times, values))


def per_iteration(marks: list[tuple[int, float]], first: int, sampler: Optional[CpuSampler] = None,
                  last: Optional[int] = None) -> dict:
    """Wall (and CPU) seconds per iteration between the first mark at or after step ``first`` and the last one
    at or before ``last`` (default: the last mark). ``marks`` are (iterations done, wall time when done).
    """
    usable = sorted(m for m in marks if m[0] >= first and (last is None or m[0] <= last))
    if len(usable) < 2 or usable[-1][0] == usable[0][0]:
        return {"s_per_iter": None, "cpu_s_per_iter": None, "iterations": 0}
    (s0, t0), (s1, t1) = usable[0], usable[-1]
    out = {"s_per_iter": (t1 - t0) / (s1 - s0), "cpu_s_per_iter": None, "iterations": s1 - s0}
    if sampler is not None:
        c0, c1 = sampler.at(t0), sampler.at(t1)
        if c0 is not None and c1 is not None:
            out["cpu_s_per_iter"] = (c1 - c0) / (s1 - s0)
    return out


# --- training through the runner -----------------------------------------------------------------

def _drain(handle, log: Callable, on_event: Optional[Callable] = None) -> dict:
    """Hand every event to ``on_event`` until the child exits; the final event (error raises)."""
    for event in handle.events(timeout=TIMEOUT_S):
        if on_event is not None:
            on_event(event)
        if event["event"] in ("done", "stopped", "error"):
            log(f"      {event['event']}: {event.get('message', '')}")
    if handle.running:
        handle.kill()
        raise RuntimeError(f"the training child reported nothing for {TIMEOUT_S:.0f} s and was killed")
    handle.wait(60)
    final = handle.final or {}
    if final.get("event") != "done":
        raise RuntimeError(f"training failed: {final.get('message', 'no final report')}")
    return final


def train_with_marks(source, run_dir: Path, preset: str, marks_min: list[float], options: Options,
                     max_size: Optional[int], background: str, log: Callable = print,
                     device: str = "cpu") -> list[dict]:
    """One run of ``preset``, checkpointed at each wall-clock mark (minutes of training, setup excluded).

    Each segment trains until the next mark minus the training time already done (the overshoot of the
    last step is carried over), then its checkpoint is copied to run_dir/marks/. Returns one dict per mark.
    """
    from nerf.layout import RunLayout
    from nerf.runner import read_record, start_training

    layout = RunLayout.at(run_dir)
    marks_dir = run_dir.parent / f"{run_dir.name}-marks"
    marks_dir.mkdir(parents=True, exist_ok=True)
    trained_s, rows = 0.0, []
    for index, mark in enumerate(marks_min):
        remaining_min = max(mark - trained_s / 60.0, 1e-3)
        log(f"    {preset}: training to {mark:g} min ({remaining_min:.3f} min more)")
        steps: list[tuple[int, float]] = []
        handle = start_training(source if index == 0 else None, run_dir, preset=preset if index == 0 else None,
                                minutes=remaining_min, device=device, resume=index > 0,
                                threads=_threads(options), max_size=max_size, background=background,
                                rays_per_batch=options.rays_per_batch)
        sampler = CpuSampler(handle.process.pid)
        try:
            _drain(handle, log, lambda e: steps.append((e["step"], e["time"])) if e["event"] == "step" else None)
        finally:
            sampler.stop()
        record = read_record(layout)
        metrics = record.get("metrics") or {}
        trained_s += float(metrics.get("train_seconds") or 0.0)
        checkpoint = layout.checkpoints()[-1]
        kept = marks_dir / f"{index:02d}-{mark:g}min-{checkpoint.name}"
        shutil.copy2(checkpoint, kept)
        first_step = steps[0][0] if steps else 0
        timing = per_iteration(steps, first_step + 1, sampler)  # the segment's first step pays warm-up
        rows.append({"kind": "mark", "method": preset, "mark_min": mark, "trained_min": trained_s / 60.0,
                     "steps": int(record.get("steps", 0)), "checkpoint": str(kept), "run_dir": str(run_dir),
                     **timing})
        log(f"      {rows[-1]['steps']} iterations in {trained_s / 60.0:.2f} min; "
            f"{_fmt(timing['s_per_iter'], '.3f')} s/iter, {_fmt(timing['cpu_s_per_iter'], '.3f')} CPU-s/iter")
    return rows


# --- evaluation (a separate process: it loads torch and nerfstudio) ---------------------------------

def held_out_views(run_dir: Path):
    """The run's evaluation views (the dataset's val_filenames) with their ground-truth images in [0, 1]."""
    import cv2

    from nerf.layout import RunLayout
    from nerf.render import transforms_views

    transforms = RunLayout.at(run_dir).transforms
    doc = json.loads(transforms.read_text(encoding="utf-8"))
    held = list(doc.get("val_filenames") or [])
    views = [v for v in transforms_views(transforms) if v.name in held]
    if not views:
        raise RuntimeError(f"{transforms}: no held-out views (val_filenames) to evaluate")
    truths = []
    for view in views:
        bgr = cv2.imread(str(transforms.parent / view.name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"cannot read the held-out image {transforms.parent / view.name}")
        truths.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
    return views, truths


def evaluate_checkpoints(run_dir: Path, checkpoints: list[str]) -> dict:
    """{checkpoint: {"psnr": mean per-view dB, "per_view": [...], "views": n, "render_s": s}} (in this process)."""
    from nerf.load import load_pipeline
    from nerf.render import render_outputs

    views, truths = held_out_views(run_dir)
    results = {}
    for checkpoint in checkpoints:
        loaded = load_pipeline(run_dir, device="cpu", checkpoint=checkpoint)
        tic = time.perf_counter()
        per_view = [psnr(render_outputs(loaded, v.camera, v.cam_from_world, ("rgb",))["rgb"][..., :3], truth)
                    for v, truth in zip(views, truths)]
        results[checkpoint] = {"psnr": float(np.mean(per_view)), "per_view": per_view, "views": len(views),
                               "render_s": time.perf_counter() - tic}
    return results


def evaluate_in_child(run_dir: Path, checkpoints: list[str], threads: int) -> dict:
    command = [sys.executable, "-m", "bench.nerf_bench", "--evaluate", str(run_dir), "--checkpoints", *checkpoints]
    done = subprocess.run(command, cwd=str(ROOT), env=_child_env(threads, KEEP_HEAP_ENV), capture_output=True,
                          text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"evaluation of {run_dir} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def add_psnr(rows: list[dict], threads: int, log: Callable = print) -> None:
    """Fill "psnr"/"views" of every row that has a checkpoint, one evaluation process per run folder."""
    by_run: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("checkpoint"):
            by_run.setdefault(row["run_dir"], []).append(row)
    for run_dir, run_rows in by_run.items():
        log(f"    evaluating {len(run_rows)} checkpoint(s) of {Path(run_dir).name} on the held-out views ...")
        try:
            results = evaluate_in_child(Path(run_dir), [r["checkpoint"] for r in run_rows], threads)
        except RuntimeError as exc:
            for row in run_rows:
                row["note"] = f"evaluation failed: {exc}"[:300]
            log(f"      {exc}")
            continue
        for row in run_rows:
            result = results[row["checkpoint"]]
            row.update(psnr=result["psnr"], views=result["views"], render_s=result["render_s"])
            log(f"      {row['method']} at {row['mark_min']:g} min: {row['psnr']:.2f} dB ({row['views']} views)")


# --- adapter overhead: our child vs plain ns-train ---------------------------------------------------

def _tensorboard_steps(base: Path) -> list[tuple[int, float]]:
    """(iterations done, wall time) of every "Train Loss" scalar ns-train logged (every steps_per_log)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    marks = []
    for events_file in sorted(base.rglob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(events_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "Train Loss" in accumulator.Tags().get("scalars", []):
            marks += [(int(e.step) + 1, float(e.wall_time)) for e in accumulator.Scalars("Train Loss")]
    return marks


def time_ours(dataset: Path, work: Path, options: Options, log: Callable = print) -> dict:
    from nerf.runner import start_training

    run_dir = work / "overhead-ours"
    shutil.rmtree(run_dir, ignore_errors=True)
    handle = start_training(dataset, run_dir, preset="parallax-cpu", iterations=options.overhead_iterations,
                            device="cpu", threads=_threads(options), max_size=options.lego_size,
                            background="white", rays_per_batch=options.rays_per_batch)
    sampler = CpuSampler(handle.process.pid)
    steps: list[tuple[int, float]] = []
    try:
        _drain(handle, log, lambda e: steps.append((e["step"], e["time"])) if e["event"] == "step" else None)
    finally:
        sampler.stop()
    return {"path": "our runner (python -m nerf.train_process)", "marks": steps, "sampler": sampler,
            "dataset": run_dir / "dataset"}


def time_ns_train(dataset_dir: Path, work: Path, options: Options, log: Callable = print) -> dict:
    """Plain ``ns-train parallax-cpu`` on the folder our runner wrote (the same images and transforms.json)."""
    out = work / "overhead-ns-train"
    shutil.rmtree(out, ignore_errors=True)
    ns_train = Path(sys.executable).parent / "ns-train"
    command = [str(ns_train), "parallax-cpu", "--data", str(dataset_dir), "--output-dir", str(out),
               "--max-num-iterations", str(options.overhead_iterations), "--machine.device-type", "cpu",
               "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True"]
    if options.rays_per_batch:
        command += ["--pipeline.datamanager.train-num-rays-per-batch", str(options.rays_per_batch)]
    log(f"    {' '.join(command[1:])}")
    with open(work / "ns-train.log", "wb") as log_file:
        process = subprocess.Popen(command, cwd=str(work), env=_child_env(_threads(options), KEEP_HEAP_ENV), stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler = CpuSampler(process.pid)
        try:
            code = process.wait(TIMEOUT_S)
        finally:
            sampler.stop()
    if code != 0:
        tail = (work / "ns-train.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"ns-train exited with {code}: {tail}")
    return {"path": "plain ns-train parallax-cpu", "marks": _tensorboard_steps(out), "sampler": sampler}


def measure_overhead(dataset: Path, work: Path, options: Options, log: Callable = print) -> list[dict]:
    """Both paths timed over the same iterations: from overhead_skip + 1 to the last one ns-train logged."""
    log(f"  adapter overhead: {options.overhead_iterations} iterations each ...")
    ours = time_ours(dataset, work, options, log)
    theirs = time_ns_train(ours["dataset"], work, options, log)
    logged = [step for step, _ in theirs["marks"]]
    first, last = options.overhead_skip + 1, max(logged, default=None)
    for timed in (ours, theirs):
        timed.update(per_iteration(timed.pop("marks"), first, timed.pop("sampler"), last))
        timed.pop("dataset", None)
        log(f"    {timed}")
    overhead = None
    if ours["s_per_iter"] and theirs["s_per_iter"]:
        overhead = 100.0 * (ours["s_per_iter"] / theirs["s_per_iter"] - 1.0)
    return [{"kind": "overhead", **theirs, "overhead_pct": None},
            {"kind": "overhead", **ours, "overhead_pct": overhead}]


# --- GPU (only where CUDA is present) ------------------------------------------------------------------

def cuda_present() -> bool:
    done = subprocess.run([sys.executable, "-c", "from nerf.device import detect_devices; "
                           "print(detect_devices()['cuda'])"], cwd=str(ROOT), capture_output=True, text=True,
                          env=_child_env(1))
    return done.stdout.strip().endswith("True")


def gpu_speed(dataset: Path, work: Path, options: Options, log: Callable = print) -> dict:
    from nerf.runner import start_training

    handle = start_training(dataset, work / "gpu-nerfacto", preset="nerfacto", iterations=options.gpu_iterations,
                            device="cuda", max_size=options.lego_size, background="white")
    steps: list[tuple[int, float]] = []
    _drain(handle, log, lambda e: steps.append((e["step"], e["time"])) if e["event"] == "step" else None)
    return {"kind": "gpu", "method": "nerfacto", **per_iteration(steps, options.overhead_skip)}


# --- the whole benchmark -----------------------------------------------------------------------------

def run_all(work: Path, options: Options | None = None, log: Callable = print) -> list[dict]:
    """Every row of the NeRF section (failures become rows with a note, not a crash of the report)."""
    from nerf.dataset import prepare_dataset

    options = options or Options()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    marks = [m * options.scale for m in options.minutes]
    rows: list[dict] = [{"kind": "settings", "scale": options.scale, "threads": _threads(options),
                         "lego_size": options.lego_size, "fox_size": options.fox_size,
                         "rays_per_batch": options.rays_per_batch}]
    log(f"  preparing lego at {options.lego_size} px on white ...")
    lego = prepare_dataset(options.lego_source, work / "lego-dataset", max_size=options.lego_size,
                           background="white")
    rows[0].update(lego_train=lego.num_images - len(lego.held_out), lego_held_out=len(lego.held_out))
    for method in options.methods:
        try:
            rows += train_with_marks(lego.transforms, work / f"lego-{method}", method, marks, options,
                                     options.lego_size, "white", log)
        except Exception as exc:  # a failing method is a result worth reporting
            rows.append({"kind": "mark", "method": method, "mark_min": None, "note": f"failed: {exc}"[:300]})
            log(f"    {method} failed: {exc}")
    if options.fox_minutes > 0:
        try:
            rows += [dict(r, kind="fox") for r in train_with_marks(
                options.fox_source, work / "fox-parallax-cpu", "parallax-cpu", [options.fox_minutes * options.scale],
                options, options.fox_size, "auto", log)]
        except Exception as exc:
            rows.append({"kind": "fox", "method": "parallax-cpu", "note": f"failed: {exc}"[:300]})
    add_psnr(rows, _threads(options), log)
    if options.overhead_iterations > 0:
        try:
            rows += measure_overhead(lego.transforms, work, options, log)
        except Exception as exc:
            rows.append({"kind": "overhead", "path": "—", "note": f"failed: {exc}"[:300]})
    if options.gpu_iterations > 0 and cuda_present():
        try:
            rows.append(gpu_speed(lego.transforms, work, options, log))
        except Exception as exc:
            rows.append({"kind": "gpu", "method": "nerfacto", "note": f"failed: {exc}"[:300]})
    return rows


# --- markdown ----------------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return format(value, spec)


def _verdict(ok: Optional[bool]) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def markdown_section(rows: list[dict], runs: int = 1) -> list[str]:
    """The section (title first) for BENCHMARKS.md. ``runs`` is accepted for bench/run.py's signature: one run."""
    settings = next((r for r in rows if r["kind"] == "settings"), {})
    marks = [r for r in rows if r["kind"] == "mark"]
    methods = list(dict.fromkeys(r["method"] for r in marks))
    scale = settings.get("scale", 1.0)
    lines = [TITLE, "",
             f"lego (NeRF-synthetic, exact poses) at {settings.get('lego_size', '?')}x{settings.get('lego_size', '?')} "
             f"on white: {settings.get('lego_train', '?')} views train, {settings.get('lego_held_out', '?')} held out "
             "(indices 5, 15, ..., 95), PSNR over the full held-out images (mean of per-view dB). One run per method "
             "through our runner on CPU with "
             f"{settings.get('threads', '?')} torch threads, checkpointed at each wall-clock mark of training "
             "(setup excluded) and evaluated afterwards in a separate process. `nerfacto` = nerfstudio's default "
             "method_configs[\"nerfacto\"] with only the CPU/offline fixes (no mixed precision, in-process data "
             "manager, LPIPS skipped without its weights). A shared 2-core machine: timings are noisy."
             + (f" **Durations scaled by {scale:g}** (smoke run, not the benchmark)." if scale != 1.0 else "")
             + (f" Rays per batch overridden: {settings['rays_per_batch']}." if settings.get("rays_per_batch") else ""),
             ""]
    header = "| training minutes |" + "".join(f" {m} PSNR (dB) | {m} iterations | {m} CPU-s/iter |" for m in methods)
    if len(methods) >= 2:
        header += f" {methods[0]} − {methods[1]} (dB) |"
    lines += [header, "|---" * (1 + 3 * len(methods) + (len(methods) >= 2)) + "|"]
    by_mark: dict = {}
    for r in marks:
        by_mark.setdefault(r.get("mark_min"), {})[r["method"]] = r
    for mark in sorted(k for k in by_mark if k is not None):
        cells = by_mark[mark]
        line = f"| {mark:g} |"
        for m in methods:
            r = cells.get(m, {})
            trained = f" ({r['trained_min']:.2f} trained)" if r.get("trained_min") is not None else ""
            line += (f" {_fmt(r.get('psnr'), '.2f')} | {_fmt(r.get('steps'), 'd')}{trained} | "
                     f"{_fmt(r.get('cpu_s_per_iter'), '.2f')} |")
        if len(methods) >= 2:
            a, b = cells.get(methods[0], {}).get("psnr"), cells.get(methods[1], {}).get("psnr")
            line += f" {_fmt(a - b if a is not None and b is not None else None, '+.2f')} |"
        lines.append(line)
    lines += [f"- {r['method']}: {r['note']}" for r in marks if r.get("note")]
    lines.append("")

    overhead = [r for r in rows if r["kind"] == "overhead"]
    if overhead:
        lines += ["Adapter overhead (parallax-cpu, same config and data, back to back; wall and CPU seconds per "
                  "iteration over the same window):", "",
                  "| path | s/iter | CPU-s/iter | iterations timed | overhead |", "|---|---|---|---|---|"]
        for r in overhead:
            lines.append(f"| {r.get('path', '—')} | {_fmt(r.get('s_per_iter'), '.3f')} | "
                         f"{_fmt(r.get('cpu_s_per_iter'), '.3f')} | {r.get('iterations', '—')} | "
                         f"{_fmt(r.get('overhead_pct'), '+.1f')}{' %' if r.get('overhead_pct') is not None else ''} |"
                         + (f" {r['note']}" if r.get("note") else ""))
        lines.append("")

    fox = [r for r in rows if r["kind"] == "fox"]
    if fox:
        lines += [f"instant_ngp_fox (its transforms.json, undistorted, longest side {settings.get('fox_size', '?')} "
                  "px, every tenth view from index 5 held out), parallax-cpu:", "",
                  "| minutes | iterations | held-out views | held-out PSNR (dB) |", "|---|---|---|---|"]
        for r in fox:
            note = f" {r['note']}" if r.get("note") else ""
            lines.append(f"| {_fmt(r.get('trained_min'), '.2f')} | {_fmt(r.get('steps'), 'd')} | "
                         f"{r.get('views', '—')} | {_fmt(r.get('psnr'), '.2f')} |{note}")
        lines.append("")

    for r in (r for r in rows if r["kind"] == "gpu"):
        lines += [f"GPU: nerfacto through the same runner: {_fmt(r.get('s_per_iter'), '.4f')} s/iter "
                  f"over {r.get('iterations', '—')} iterations." + (f" {r['note']}" if r.get("note") else ""), ""]

    lines += _targets(marks, overhead, methods) + [""]
    return lines


def _targets(marks: list[dict], overhead: list[dict], methods: list[str]) -> list[str]:
    last = max((r["mark_min"] for r in marks if r.get("mark_min") is not None), default=None)
    ours = next((r for r in marks if r["method"] == "parallax-cpu" and r.get("mark_min") == last), {})
    theirs = next((r for r in marks if r["method"] == "nerfacto" and r.get("mark_min") == last), {})
    ours_psnr, theirs_psnr = ours.get("psnr"), theirs.get("psnr")
    pct = next((r.get("overhead_pct") for r in overhead if r.get("overhead_pct") is not None), None)
    margin = ours_psnr - theirs_psnr if ours_psnr is not None and theirs_psnr is not None else None
    at = f"{last:g} min" if last is not None else "—"
    return [f"Targets: parallax-cpu ≥ {TARGET_PSNR_DB:g} dB at {at}: {_fmt(ours_psnr, '.2f')} dB, "
            f"{_verdict(None if ours_psnr is None else ours_psnr >= TARGET_PSNR_DB)}; "
            f"≥ {TARGET_MARGIN_DB:g} dB above nerfacto: {_fmt(margin, '+.2f')} dB, "
            f"{_verdict(None if margin is None else margin >= TARGET_MARGIN_DB)}; "
            f"adapter overhead ≤ {TARGET_OVERHEAD_PCT:g} %: {_fmt(pct, '+.1f')} %, "
            f"{_verdict(None if pct is None else pct <= TARGET_OVERHEAD_PCT)}."]


# --- command line ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for datasets and runs (default: a temporary one)")
    parser.add_argument("--minutes-list", type=float, nargs="+", default=list(MINUTES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration (smoke runs: 0.01)")
    parser.add_argument("--methods", nargs="+", default=["parallax-cpu", "nerfacto"])
    parser.add_argument("--fox-minutes", type=float, default=10.0, help="0 skips the fox")
    parser.add_argument("--fox-size", type=int, default=160)
    parser.add_argument("--overhead-iterations", type=int, default=60, help="0 skips the ns-train comparison")
    parser.add_argument("--overhead-skip", type=int, default=10, help="warm-up iterations left out of the timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rays-per-batch", type=int, default=None)
    parser.add_argument("--gpu-iterations", type=int, default=300, help="0 skips the CUDA run")
    parser.add_argument("--out", default=None, help="also write the section to this markdown file")
    parser.add_argument("--evaluate", default=None, help=argparse.SUPPRESS)     # internal: evaluation child
    parser.add_argument("--checkpoints", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:
        print(json.dumps(evaluate_checkpoints(Path(args.evaluate), args.checkpoints)))
        return 0
    options = Options(minutes=tuple(args.minutes_list), scale=args.scale, methods=tuple(args.methods),
                      fox_minutes=args.fox_minutes, fox_size=args.fox_size,
                      overhead_iterations=args.overhead_iterations, overhead_skip=args.overhead_skip,
                      threads=args.threads,
                      rays_per_batch=args.rays_per_batch, gpu_iterations=args.gpu_iterations)
    if args.work:
        rows = run_all(Path(args.work), options)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="parallax-nerf-bench-") as tmp:
            rows = run_all(Path(tmp), options)
    text = "\n".join(markdown_section(rows)) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
