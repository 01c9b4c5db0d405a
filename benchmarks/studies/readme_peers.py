"""The README's results table: glsr's shipped models beside MediaPipe and dlib, rendered from a recorded
``glsr bench --peers`` run (``faces.json``), never typed by hand.

    python -m benchmarks.studies.readme_peers benchmarks/results/amd-epyc-avx512-2c/faces.json --readme README.md

One row per landmarker: each glsr model in its fastest recorded form (the host-warp mode when the run has it, else
the single graph; fp32), and each peer. Accuracy is over every face of the run's split; time is the median of the
user's call (image + box -> landmarks), one thread, with the load other processes put on the CPU meanwhile.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.studies.real_faces import update_readme

START, END = "<!-- peers-table:start -->", "<!-- peers-table:end -->"
DATA_NAMES = {"300w": "300-W", "wflw": "WFLW", "cofw": "COFW", "aflw": "AFLW"}
PEER_NAMES = {"mediapipe": "MediaPipe face landmarker", "dlib": "dlib 68-point shape predictor"}


def chosen_cases(record: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The glsr cases (per model: host-warp fp32 if present, else graph fp32, native input size) then the peers."""
    out, seen = [], set()
    glsr = [c for c in record["cases"] if c["kind"] == "glsr" and c.get("precision") == "fp32"
            and not c.get("recropped")]
    for c in sorted(glsr, key=lambda c: c.get("mode") != "hostwarp"):
        if c["model"] not in seen:
            seen.add(c["model"])
            out.append(c)
    order = {m: i for i, m in enumerate(record["config"]["models"])}
    out.sort(key=lambda c: order.get(c["model"], len(order)))
    return out + [c for c in record["cases"] if c["kind"] != "glsr"]


def command_of(record: Dict[str, Any]) -> str:
    """The recorded command as a user types it (``python -m glsr.cli`` / a script path -> ``glsr``)."""
    return re.sub(r"^\S*(glsr/cli\.py|glsr/__main__\.py|/glsr)\s", "glsr ", record["config"]["command"])


def table(record: Dict[str, Any], link: str) -> str:
    env = record["environment"]
    cpu = env["cpu"]
    cases = chosen_cases(record)
    kind = record["config"]["faces"].split(":")[0].lower()
    loads = [c.get("other_load_cores") or 0.0 for c in cases]
    lines = [START,
             f"{DATA_NAMES.get(kind, kind)} `{record['config']['split']}` split ({cases[0]['accuracy']['count']} "
             "faces glsr never trained on), the tight box of the 68 annotated points as every landmarker's box, NME = "
             f"mean point error / outer-eye-corner distance; one thread on a {cpu.get('cores')}-core {cpu.get('model')} "
             f"({env['date'][:10]}; other processes used {min(loads):.1f}-{max(loads):.1f} of its cores meanwhile, so "
             f"the times are upper bounds and the more loaded rows are slowed the most). `{command_of(record)}`, record: [{Path(link).name}]({link}).", "",
             "| landmarker | runtime | NME68 | NME51 (no jaw) | failures (NME68 > 10 %) | ms per face | other load "
             "(cores) | file MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        acc, lat = c["accuracy"], c["latency"]["e2e"]
        if c["kind"] == "glsr":
            name = f"glsr `{c['model']}`"
            runtime = f"{c['backend']} {c['precision']}" + (", host-warp" if c.get("mode") == "hostwarp" else "")
        else:
            name, runtime = PEER_NAMES.get(c["kind"], c["label"]), c["backend"]
        lines.append(f"| {name} | {runtime} | {100 * acc['nme68']:.2f} % | {100 * acc['nme51']:.2f} % | "
                     f"{acc['failures']} / {acc['count']} | {lat['median_ms']:.1f} | "
                     f"{c.get('other_load_cores') or 0.0:.1f} | {c['landmarker']['size_bytes'] / 1e6:.1f} |")
    return "\n".join(lines + [END])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="faces.json of a `glsr bench --peers` run")
    ap.add_argument("--readme", help="put the table into this README (between its markers)")
    args = ap.parse_args(argv)
    record = json.loads(Path(args.record).read_text())
    link = Path(args.record).with_suffix(".md").as_posix()
    block = table(record, link)
    if args.readme:
        update_readme(Path(args.readme), block, (START, END))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
