"""The folder of one NeRF run: the contract between the trainer, the renderer, the CLI and the GUI.

```
RUN_DIR/
  run.json                         our record (schema, preset, device, status, steps, metrics, created)
  events.jsonl                     every JSON line the trainer streamed, appended
  dataset/transforms.json          the nerfstudio dataset we wrote (images under dataset/images/)
  ns/<method>/run/config.yml       nerfstudio's saved config
  ns/<method>/run/nerfstudio_models/step-000000100.ckpt
  renders/                         stills and videos
```
No torch or nerfstudio here: app/ reads run folders through this module without loading them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RUN_SCHEMA = 1
EXPERIMENT = "ns"     # nerfstudio's experiment_name
TIMESTAMP = "run"     # nerfstudio's timestamp: a fixed name so the config path is predictable


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def at(cls, root) -> "RunLayout":
        return cls(Path(root))

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def transforms(self) -> Path:
        return self.dataset_dir / "transforms.json"

    @property
    def ns_output_dir(self) -> Path:
        """nerfstudio's ``output_dir``; it appends ``EXPERIMENT/<method>/TIMESTAMP``."""
        return self.root

    def base_dir(self, method: str) -> Path:
        return self.root / EXPERIMENT / method / TIMESTAMP

    def config(self, method: str) -> Path:
        return self.base_dir(method) / "config.yml"

    def checkpoint_dir(self, method: str) -> Path:
        return self.base_dir(method) / "nerfstudio_models"

    @property
    def stop_request(self) -> Path:
        """Its presence asks the trainer to stop at the next step, keeping a checkpoint (as SIGTERM does)."""
        return self.root / "stop.request"

    @property
    def train_log(self) -> Path:
        """The trainer's stderr (nerfstudio's console output, tracebacks)."""
        return self.root / "train.log"

    @property
    def renders_dir(self) -> Path:
        return self.root / "renders"

    def find_config(self) -> Path | None:
        """The run's config.yml whatever the method, or None before training has started."""
        found = sorted((self.root / EXPERIMENT).glob(f"*/{TIMESTAMP}/config.yml"))
        return found[0] if found else None

    def checkpoints(self) -> list[Path]:
        """Checkpoints of the run, oldest step first."""
        config = self.find_config()
        if config is None:
            return []
        return sorted((config.parent / "nerfstudio_models").glob("step-*.ckpt"))

    def read_record(self) -> dict:
        return json.loads(self.record.read_text())
