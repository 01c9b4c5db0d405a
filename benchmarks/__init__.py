"""glsr's recorded results (``results/``), research record (``research/``) and one-off studies (``studies/``): the
lab beside the product. Not installed with glsr; it imports glsr, never the reverse.

The studies write their records into :data:`RESULTS_DIR` of this checkout; ``glsr`` itself never writes here
(``glsr bench -o benchmarks/results/<machine>`` records a run on purpose).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

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


def write_portable(out: str, record: Dict[str, Any], text: str) -> None:
    """Write ``record`` as ``OUT.json`` and the Markdown ``text`` as ``OUT.md`` (``out``: a path without suffix),
    each atomically and without the folders of this machine (:func:`glsr.paths.portable_text`); print the Markdown."""
    import json

    from glsr import atomic
    from glsr.paths import portable_text

    atomic.write_text(out + ".json", portable_text(json.dumps(record, indent=1)) + "\n")
    atomic.write_text(out + ".md", portable_text(text))
    print(portable_text(text))


def loadavg() -> List[float]:
    """The 1, 5 and 15 minute load averages, rounded, as study records keep them."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def study_record(study: str, argv: Optional[Sequence[str]], loadavg_before: List[float],
                 **fields: Any) -> Dict[str, Any]:
    """A timing study's record: the machine (:func:`glsr.bench.machine.environment`), ``fields``, the load average
    before and after the timing, and the command that reproduces it (``python -m benchmarks.studies.<study> ...``)."""
    import shlex
    import sys

    from glsr.bench.machine import environment

    args = list(argv) if argv is not None else sys.argv[1:]
    return {"environment": environment(), **fields, "loadavg": [loadavg_before, loadavg()],
            "command": f"python -m benchmarks.studies.{study} " + shlex.join(args)}


def timing_line(r: Dict[str, Any], setting: str) -> str:
    """The first line of a timing study's Markdown from its :func:`study_record` ``r``: date, CPU, ``setting``,
    load average before -> after, rounds and the command."""
    env = r["environment"]
    return (f"{env['date']} - {env['cpu']['model']}, {setting}; load average {r['loadavg'][0]} -> {r['loadavg'][1]}; "
            f"{r['rounds']} interleaved rounds, min of the per-round medians. Command: `{r['command']}`")


def missing_300w() -> bool:
    """True (with one line on stderr) when the 300-W faces the timing studies run on are not in ``../shared``."""
    import sys

    from glsr.paths import SHARED

    data = SHARED / "data" / "300w"
    if data.is_dir():
        return False
    print(f"300-W faces not found at {data} (../shared is only on CI and dev machines)", file=sys.stderr)
    return True
