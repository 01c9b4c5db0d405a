"""glsr's recorded results (``results/``), research record (``research/``) and one-off studies (``studies/``): the
lab beside the product. Not installed with glsr; it imports glsr, never the reverse.

The studies write their records into :data:`RESULTS_DIR` of this checkout; ``glsr`` itself never writes here
(``glsr bench -o benchmarks/results/<machine>`` records a run on purpose).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Recorded results, machine-independent ones at the top, speed per kind of machine in ``<machine_slug>/``."""


def machine_results_dir(cpu: Optional[Dict[str, Any]] = None) -> Path:
    """This kind of machine's folder of recorded results: ``results/<machine_slug>``."""
    from glsr.bench.machine import machine_slug

    return RESULTS_DIR / machine_slug(cpu)


def write_record(stem: str, record: Dict[str, Any], text: str, out: Optional[Union[str, Path]] = None) -> Path:
    """Write a study's record as ``<stem>.json`` and its Markdown ``text`` as ``<stem>.md``, each atomically, into
    ``out`` (default: :func:`machine_results_dir`), print the Markdown and return the folder."""
    import json

    from glsr import atomic

    folder = Path(out) if out else machine_results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    atomic.write_text(folder / f"{stem}.md", text)
    print(text)
    return folder
