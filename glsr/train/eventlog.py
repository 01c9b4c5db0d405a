"""A training run's event log: ``RUN/metrics.jsonl`` (one JSON object per line, written by rank 0), mirrored to
TensorBoard when the package is importable (:class:`MetricsLog`), and read back by :func:`read_events`."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List

from glsr.train.runfiles import METRICS_FILE


class MetricsLog:
    """Append-only JSONL log (rank 0 only), mirrored to TensorBoard when importable and enabled."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool):
        self.path = path
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tb = None
            else:
                self.tb = SummaryWriter(str(path.parent / "tb"))

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None and "global_step" in fields:
            for k, v in fields.items():
                if isinstance(v, (int, float)) and k not in ("global_step", "epoch", "batch"):
                    self.tb.add_scalar(f"{fields.get('stage', 'run')}/{event}/{k}", v, fields["global_step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_events(run: str | os.PathLike) -> List[Dict[str, Any]]:
    """The events a run's :class:`MetricsLog` wrote (``RUN/metrics.jsonl``, one dict per line, in order); ``[]``
    when the run has none."""
    path = Path(run) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
