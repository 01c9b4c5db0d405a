"""Where a checkpoint's weights came from: the chain of ``--init`` files behind it, in words.

A training run records the chain in its checkpoints (``extra["lineage"]``: the ``--init`` file's label first, then
that file's own chain), so the chain survives the run folders it names. Labels: ``shipped NAME`` (a file written by
``glsr ship``), ``run DIR`` (a run's checkpoint; DIR is the run folder's name), ``WFLW GSR`` (the authors' release
imported by ``glsr import-dpr``), else the file name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from glsr.models.checkpoint import read_checkpoint
from glsr.train.runfiles import is_run_checkpoint

DPR_SOURCE_MARK = "Face_Alignment_DPR"
"""Substring of ``extra["source"]`` that ``glsr import-dpr`` writes: the authors' released WFLW model."""
MAX_DEPTH = 16
"""Longest chain followed through files on disk (checkpoints from before ``lineage`` was recorded)."""


def init_label(path: str | os.PathLike, extra: Optional[Dict[str, Any]]) -> str:
    """One link: what the ``--init`` file at ``path`` (with checkpoint ``extra``, if read) is."""
    path, extra = Path(path), extra or {}
    if extra.get("shipped_as"):
        return f"shipped {extra['shipped_as']}"
    if DPR_SOURCE_MARK in str(extra.get("source", "")):
        return "WFLW GSR"
    if extra.get("train_config") or is_run_checkpoint(path.name):
        return f"run {path.parent.name}"
    return path.name


def checkpoint_lineage(extra: Optional[Dict[str, Any]], depth: int = 0) -> List[str]:
    """The ``--init`` chain of a checkpoint with ``extra``, nearest first (``[]``: trained from scratch or not a
    training run). Uses the recorded chain; for older checkpoints follows ``train_config.init`` through the files
    still on disk and ends the chain at the first one that is gone."""
    extra = extra or {}
    if isinstance(extra.get("lineage"), list):
        return [str(x) for x in extra["lineage"]]
    init = (extra.get("train_config") or {}).get("init")
    if not init:
        return []
    if not Path(init).is_file() or depth >= MAX_DEPTH:
        return [init_label(init, None)]
    try:
        parent = read_checkpoint(init).get("extra") or {}
    except ValueError:  # not a glsr checkpoint (a bare state dict): the chain ends here
        return [init_label(init, None)]
    return [init_label(init, parent)] + checkpoint_lineage(parent, depth + 1)


def init_lineage(path: str | os.PathLike, extra: Optional[Dict[str, Any]]) -> List[str]:
    """The chain a run started with ``--init path`` records: the file's label, then the file's own chain."""
    return [init_label(path, extra)] + checkpoint_lineage(extra)


def relabel(lineage: List[str], shipped_as: Optional[str] = None) -> List[str]:
    """The chain as seen from a file shipped as ``shipped_as``: links of that same name read ``earlier shipped``."""
    return [f"earlier {x}" if shipped_as and x == f"shipped {shipped_as}" else x for x in lineage]
