"""The training CHILD: ``python -m nerf.train_process --run-dir D [--resume]``.

Reads run.json (written by nerf.runner), trains, and streams one JSON object per line on stdout, each also
appended to RunLayout.events:
  {"event": "start", "step", "target", "device", "preset", "threads", "lpips"}
  {"event": "step", "step", "loss", "psnr", "rays_per_s", "s_per_iter", "eta_s"}   step = iterations done
  {"event": "eval", "step", "eval_loss", "eval_psnr"}            a batch of held-out rays
  {"event": "eval_image", "step", "psnr", "ssim"[, "lpips"]}     one full held-out image
  {"event": "checkpoint", "step", "path"}
  {"event": "done" | "stopped" | "error", "step", "message"}
Stops at a step boundary on SIGTERM/SIGINT or when RunLayout.stop_request exists, saving a checkpoint.
Anything nerfstudio prints goes to stderr (the parent logs it to train.log), so stdout stays JSON only.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from nerf.layout import RunLayout
from scene.errors import ParallaxError, SaveFailed

STEP_EVENT_INTERVAL_S = 0.25  # fast GPUs do hundreds of steps a second: throttle the stream


class Emitter:
    """JSON lines to the private stdout copy and to events.jsonl."""

    def __init__(self, stream, events_path: Path):
        self.stream = stream
        self.events_path = events_path

    def __call__(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, allow_nan=False, default=float) + "\n"
        try:
            with open(self.events_path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass  # a full disk must not hide the event from the parent
        self.stream.write(line)
        self.stream.flush()
        return record


def _finite(value):
    value = float(value.detach()) if hasattr(value, "detach") else float(value)
    return value if value == value and abs(value) != float("inf") else None


# --- checkpoints -----------------------------------------------------------------------------------

def checkpoint_name(step_index: int) -> str:
    """nerfstudio's name: the index of the last iteration done (it resumes at index + 1)."""
    return f"step-{step_index:09d}.ckpt"


def write_checkpoint(state: dict, checkpoint_dir: Path, step_index: int, save=None) -> Path:
    """Write ``state`` as checkpoint_dir/step-N.ckpt atomically, then delete older checkpoints.

    A failed write (disk full...) removes its partial file, keeps every previous checkpoint, and raises
    SaveFailed naming the file and the newest checkpoint kept.
    """
    if save is None:
        import torch

        save = torch.save
    checkpoint_dir = Path(checkpoint_dir)
    previous = sorted(checkpoint_dir.glob("step-*.ckpt"))
    target = checkpoint_dir / checkpoint_name(step_index)
    partial = checkpoint_dir / f".{target.name}.partial"
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except OSError as exc:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        kept = f"the previous checkpoint {previous[-1]} is kept" if previous else "no earlier checkpoint exists"
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise SaveFailed(f"cannot write checkpoint {target}: {reason}; {kept}") from exc
    for old in previous:
        if old != target:
            old.unlink(missing_ok=True)
    return target


def _allow_nerfstudio_checkpoints() -> None:
    """torch >= 2.6 loads weights_only by default and refuses the numpy scalars nerfstudio stores."""
    import numpy as np
    import torch

    types = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import scalar
    torch.serialization.add_safe_globals([scalar, *types])


def load_checkpoint(trainer, path: Path) -> int:
    """Load pipeline/optimizers/schedulers/scaler from ``path``; the next iteration index."""
    import torch

    _allow_nerfstudio_checkpoints()
    state = torch.load(path, map_location="cpu", weights_only=True)
    trainer.pipeline.load_pipeline(state["pipeline"], state["step"])
    trainer.optimizers.load_optimizers(state["optimizers"])
    if "schedulers" in state and trainer.config.load_scheduler:
        trainer.optimizers.load_schedulers(state["schedulers"])
    trainer.grad_scaler.load_state_dict(state["scalers"])
    return int(state["step"]) + 1


def trainer_state(trainer, step_index: int) -> dict:
    pipeline = trainer.pipeline.module if hasattr(trainer.pipeline, "module") else trainer.pipeline
    return {"step": step_index, "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in trainer.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in trainer.optimizers.schedulers.items()},
            "scalers": trainer.grad_scaler.state_dict()}


# --- the run ---------------------------------------------------------------------------------------

class StopFlag:
    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.signalled = False

    def __call__(self) -> bool:
        return self.signalled or self.layout.stop_request.exists()

    def on_signal(self, signum, frame):
        self.signalled = True


def _setup_trainer(config):
    """Trainer.setup() without its writers, profiler or viewer: pipeline, optimizers, callbacks."""
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes

    trainer = config.setup(local_rank=0, world_size=1)
    trainer.pipeline = config.pipeline.setup(device=trainer.device, test_mode="val", world_size=1, local_rank=0,
                                             grad_scaler=trainer.grad_scaler)
    trainer.optimizers = trainer.setup_optimizers()
    return trainer, TrainingCallbackAttributes


def _seed(seed: int) -> None:
    """Same data order and initial weights for the same run (nerfstudio's ns-train seeds the same way)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", MemoryError)
    if isinstance(exc, (MemoryError, oom)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def train(layout: RunLayout, resume: bool, emit: Emitter, stop: StopFlag, status: dict) -> int:
    """Train until the target, the time budget or a stop request; ``status["step"]`` tracks iterations done."""
    from nerf import runner  # run.json helpers (no torch)

    record = runner.read_record(layout)
    status["step"] = int(record.get("steps", 0) or 0)

    def update(**fields):
        record.update(fields, updated=time.time())
        runner.write_record(layout, record)

    if stop():  # asked to stop before torch was even loaded
        update(status="stopped", message="stopped before training started")
        emit("stopped", step=status["step"], message="stopped before training started; nothing to keep")
        return 0

    import torch

    from nerf.device import check_preset_device, resolve_device
    from nerf.offline import lpips_status
    from nerf.plugin import build_config

    torch.set_num_threads(int(record.get("threads") or torch.get_num_threads()))
    _seed(42)
    device = resolve_device(record.get("device", "auto"))
    check_preset_device(record["preset"], device)
    target = int(record["target_iterations"])
    config = build_config(record["preset"], layout.dataset_dir, layout.root, device, target,
                          background=record.get("dataset", {}).get("background", "scene"),
                          rays_per_batch=record.get("rays_per_batch"))
    config.save_config()
    trainer, callback_attributes = _setup_trainer(config)
    pipeline = trainer.pipeline
    checkpoint_dir = config.get_checkpoint_dir()
    start = 0
    if resume:
        found = sorted(checkpoint_dir.glob("step-*.ckpt"))
        if not found:
            raise ParallaxError(f"{layout.root}: there is no checkpoint to resume from")
        start = load_checkpoint(trainer, found[-1])
    callbacks = pipeline.get_training_callbacks(callback_attributes(
        optimizers=trainer.optimizers, grad_scaler=trainer.grad_scaler, pipeline=pipeline, trainer=trainer))
    from nerfstudio.engine.callbacks import TrainingCallbackLocation
    from nerfstudio.utils import writer

    if hasattr(pipeline.datamanager, "train_dataparser_outputs"):
        pipeline.datamanager.train_dataparser_outputs.save_dataparser_transform(
            config.get_base_dir() / "dataparser_transforms.json")
    rays = int(pipeline.datamanager.get_train_rays_per_batch())
    lpips = lpips_status()
    status["step"] = start
    update(status="training", device=device, method=config.method_name, steps=start, message="",
           config=str(config.get_base_dir() / "config.yml"))
    emit("start", step=start, target=target, device=device, preset=record["preset"],
         threads=torch.get_num_threads(), lpips=lpips, resumed=bool(resume))

    minutes = record.get("session_minutes")
    budget_s = 60.0 * float(minutes) if minutes else None
    metrics = dict(record.get("metrics") or {})
    metrics["lpips"] = lpips if lpips != "computed" else metrics.get("lpips", "not measured yet")
    last_saved = start - 1
    avg_s = None
    last_emit = 0.0
    started = time.monotonic()
    reason = "done"

    def save(step_index: int):
        nonlocal last_saved
        path = write_checkpoint(trainer_state(trainer, step_index), checkpoint_dir, step_index)
        last_saved = step_index
        update(steps=step_index + 1, metrics=metrics, checkpoint=str(path.relative_to(layout.root)))
        emit("checkpoint", step=step_index + 1, path=str(path))

    try:
        step_index = start
        while step_index < target:
            if stop():
                reason = "stopped"
                break
            elapsed = time.monotonic() - started
            if budget_s is not None and elapsed >= budget_s:
                # the budget is checked and reported on one clock: train_seconds is never under it
                metrics["train_seconds"] = elapsed
                reason = "budget"
                break
            tic = time.perf_counter()
            pipeline.train()
            for callback in callbacks:
                callback.run_callback_at_location(step_index, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
            loss, loss_dict, metrics_dict = trainer.train_iteration(step_index)
            for callback in callbacks:
                callback.run_callback_at_location(step_index, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
            writer.EVENT_STORAGE.clear()  # callbacks may log; no writer drains it in our loop
            seconds = time.perf_counter() - tic
            avg_s = seconds if avg_s is None else 0.9 * avg_s + 0.1 * seconds
            done = step_index + 1
            status["step"] = done
            metrics.update(loss=_finite(loss), psnr=_finite(metrics_dict.get("psnr", float("nan"))),
                           rays_per_s=rays / max(seconds, 1e-9), s_per_iter=avg_s,
                           train_seconds=time.monotonic() - started)
            now = time.monotonic()
            if now - last_emit >= STEP_EVENT_INTERVAL_S or done == target or done == start + 1:
                last_emit = now
                emit("step", step=done, loss=metrics["loss"], psnr=metrics["psnr"],
                     rays_per_s=round(metrics["rays_per_s"], 1), s_per_iter=round(avg_s, 4),
                     eta_s=round(avg_s * (target - done), 1))
            if pipeline.datamanager.eval_dataset and done % config.steps_per_eval_batch == 0:
                pipeline.eval()
                _, eval_loss_dict, eval_metrics = pipeline.get_eval_loss_dict(step=step_index)
                eval_loss = float(sum(float(v) for v in eval_loss_dict.values()))
                metrics.update(eval_loss=_finite(eval_loss), eval_psnr=_finite(eval_metrics.get("psnr", float("nan"))))
                emit("eval", step=done, eval_loss=metrics["eval_loss"], eval_psnr=metrics["eval_psnr"])
            if pipeline.datamanager.eval_dataset and done % config.steps_per_eval_image == 0:
                pipeline.eval()
                image_metrics, _ = pipeline.get_eval_image_metrics_and_images(step=step_index)
                metrics.update({f"eval_image_{k}": _finite(v) for k, v in image_metrics.items()
                                if k in ("psnr", "ssim", "lpips")})
                if "lpips" in image_metrics:
                    metrics["lpips"] = _finite(image_metrics["lpips"])
                emit("eval_image", step=done, **{k: _finite(v) for k, v in image_metrics.items()
                                                if k in ("psnr", "ssim", "lpips")})
            if done % config.steps_per_save == 0:
                save(step_index)
            step_index = done
    except SaveFailed as exc:
        update(status="failed", message=str(exc), steps=status["step"], metrics=metrics)
        emit("error", step=status["step"], message=str(exc))
        return 1
    final_index = status["step"] - 1
    if final_index > last_saved:
        try:
            save(final_index)
        except SaveFailed as exc:
            update(status="failed", message=str(exc), steps=status["step"], metrics=metrics)
            emit("error", step=status["step"], message=str(exc))
            return 1
    if reason == "stopped":
        kept = "checkpoint kept" if final_index >= 0 else "no iteration finished, nothing to keep"
        message = f"stopped at step {status['step']} of {target} ({kept}); resume to continue"
        update(status="stopped", steps=status["step"], metrics=metrics, message=message)
        emit("stopped", step=status["step"], message=message)
    else:
        message = (f"time budget of {minutes:g} min reached at step {status['step']} of {target}"
                   if reason == "budget" else f"trained {target} iterations")
        update(status="finished", steps=status["step"], metrics=metrics, message=message)
        emit("done", step=status["step"], message=message)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nerf.train_process", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

    layout = RunLayout.at(Path(args.run_dir))
    json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints -> stderr
    emit = Emitter(json_out, layout.events)
    stop = StopFlag(layout)
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    step_box = {"step": 0}
    try:
        return train(layout, args.resume, emit, stop, step_box)
    except ParallaxError as exc:
        message = str(exc)
    except BaseException as exc:  # out of memory, nerfstudio errors: report, never crash silently
        traceback.print_exc()
        try:
            oom = _is_out_of_memory(exc)
        except Exception:
            oom = isinstance(exc, MemoryError)
        if oom:
            message = ("out of memory while training; lower the image size or rays per batch, or use the "
                       f"parallax-cpu preset ({type(exc).__name__}: {exc})")
        else:
            message = f"training failed: {type(exc).__name__}: {exc}"
    _record_failure(layout, message)
    emit("error", step=step_box["step"], message=message)
    return 1


def _record_failure(layout: RunLayout, message: str) -> None:
    from nerf import runner

    try:
        record = runner.read_record(layout)
        found = layout.checkpoints()
        if found:
            message += f" (last checkpoint kept: {found[-1].name})"
        record.update(status="failed", message=message, updated=time.time())
        runner.write_record(layout, record)
    except (OSError, ParallaxError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
