"""Subprocess isolation: every benchmark case, glue measurement and profile can run in a fresh interpreter
(:mod:`glsr.bench.worker`), so thread pools of one runtime never spin beside another's; the record comes back as
JSON with the other processes' load during the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict

from glsr.bench.machine import OtherLoad
from glsr.paths import CHECKOUT


def run_isolated(task: str, spec: Dict[str, Any], label: str, timeout_s: float = 1800) -> Dict[str, Any]:
    """Run a worker task (``case``, ``glue``, ``profile``) in a fresh interpreter; its JSON result, with the other
    processes' load during the run as ``other_load_cores``."""
    env = dict(os.environ)
    root = str(CHECKOUT)  # the glsr that runs here, also when it is not installed
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with OtherLoad() as ol:
        r = subprocess.run([sys.executable, "-m", "glsr.bench.worker", "--task", task, "--spec", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout_s, env=env, cwd=root)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"benchmark {task} {label} failed (exit {r.returncode}):\n{tail}")
    rec = json.loads(lines[-1])
    rec["other_load_cores"] = ol.cores
    return rec
