"""The README's results table: glsr's shipped models beside MediaPipe and dlib, rendered from a recorded
``benchmarks.studies.peer_speed`` run (accuracy on every face of the split, times interleaved in one process so that
their ratios hold on a shared machine), never typed by hand.

    python -m benchmarks.studies.readme_peers benchmarks/results/amd-epyc-avx512-2c/peer_speed.json --readme README.md
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from benchmarks.studies.real_faces import update_readme

START, END = "<!-- peers-table:start -->", "<!-- peers-table:end -->"
DATA_NAMES = {"300w": "300-W", "wflw": "WFLW", "cofw": "COFW", "aflw": "AFLW"}
PEER_NAMES = {"mediapipe": "MediaPipe face landmarker", "dlib": "dlib 68-point shape predictor"}


def table(record: Dict[str, Any], link: str) -> str:
    env = record["environment"]
    cpu = env["cpu"]
    kind = record["faces"].split(":")[0].lower()
    reference = PEER_NAMES.get(record["reference"], record["reference"]).split(" ")[0]
    lines = [START,
             f"{DATA_NAMES.get(kind, kind)} `{record['split']}` split ({record['count']} faces glsr never trained "
             "on), the tight box of the 68 annotated points as every landmarker's box, NME = mean point error / "
             f"outer-eye-corner distance. Time: the user's call (image + box -> 68 points), one thread on a "
             f"{cpu.get('cores')}-core {cpu.get('model')} ({env['date'][:10]}), all landmarkers interleaved over "
             f"{record['rounds']} rounds so they share the same load (other jobs used {record['other_load_cores']} "
             f"of the cores). `{re.sub(r' --(faces|out) [^ ]+', '', record['command'])}`, record: "
             f"[{Path(link).name}]({link}).", "",
             f"| landmarker | runtime | NME68 | NME51 (no jaw) | failures (NME68 > 10 %) | ms per face | x {reference} "
             "| file MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in record["rows"]:
        a = row["accuracy"]
        name = f"glsr `{row['name']}`" if row["kind"] == "glsr" else PEER_NAMES.get(row["name"], row["name"])
        lines.append(f"| {name} | {row['runtime']} | {100 * a['nme68']:.2f} % | {100 * a['nme51']:.2f} % | "
                     f"{a['failures']} / {a['count']} | {row['ms_median']:.1f} | {row['x_reference']:.2f} | "
                     f"{row['size_bytes'] / 1e6:.1f} |")
    return "\n".join(lines + [END])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="a benchmarks.studies.peer_speed record (JSON)")
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
