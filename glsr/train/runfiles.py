"""The files of a ``glsr train`` run folder, by name: one place for the trainer that writes them and for everything
that reads them (resume, lineage, ``glsr ship``, the pipeline). Imports nothing of ours."""
from __future__ import annotations

import re

STATE_FILE = "last.pt"
"""The resumable state (weights, optimizer, RNG, position), rewritten every ``--save-every`` steps."""
MODEL_FILE = "model.pt"
"""The finished run's checkpoint: the stage that scored best on the held-out faces."""
GROWN_FILE = "grown.pt"
"""With ``--grow-passes``: the grown start, before the first stage (:mod:`glsr.train.grow`)."""
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
STAGE_FILE = re.compile(r"stage(\d+)-(\w+)\.pt$")
"""Stage checkpoints of a run: ``stage<k>-<name>.pt`` (``k`` = 1-based stage number of Section 4.1)."""
STAGE_GLOB = "stage*-*.pt"


def stage_file(number: int, name: str) -> str:
    """File name of stage ``number`` (1-based) called ``name``: ``stage2-global.pt``."""
    return f"stage{number}-{name}.pt"


def is_run_checkpoint(file_name: str) -> bool:
    """Whether ``file_name`` is one of the checkpoints a training run writes (state, kept model, grown start, stage)."""
    return file_name in (STATE_FILE, MODEL_FILE, GROWN_FILE) or STAGE_FILE.fullmatch(file_name) is not None
