"""The project's speed goals, checked against recorded results: ``python -m benchmarks.goals RESULT.json ...``.

A maintainers' tool beside the product: ``glsr bench`` records what it measures (``bench.json``, and
``faces.json`` with ``--peers``); whether that meets the goals the project set itself is decided here, from the
recorded cases alone, so older records are checked the same way as new ones. Goals:

* ``bench.json`` (whole chain in one exported graph, batch 1, median, best exported backend): the frame rates of
  :data:`FPS_GOALS`; the in-graph glue (resampling / STN) at most :data:`GLUE_GOAL` over the sum of the
  sub-networks run alone; the best exported runtime at least :data:`EAGER_SPEEDUP_GOAL` times as fast as PyTorch
  eager (every torch case);
* ``faces.json`` (per face, image + box -> landmarks): the fastest glsr row with a lower NME51 than MediaPipe at
  most :data:`PEER_RATIO_GOAL` times MediaPipe's end-to-end time (once without and once with the re-cropped
  ``@<px>`` rows); every MNN row's end-to-end time at most :data:`E2E_OVERHEAD_GOAL` over crop + network-only.

Prints one Markdown table per file (``--md FILE`` also writes them, atomically); exits 0 whatever the verdicts
(a record is not wrong for missing a goal), 2 on a file that is neither kind of record.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

FPS_GOALS: Tuple[Dict[str, Any], ...] = (
    {"variant": "small", "threads": 1, "fps": 400.0},
    {"variant": "medium", "threads": 1, "fps": 120.0},
    {"variant": "large", "threads": 1, "fps": 9.0},
    {"variant": "large", "threads": 2, "fps": 18.0},
)
"""Frames per second of the exported network per variant and threads (batch 1, best exported backend)."""
GLUE_GOAL = 0.15
"""Resampling / STN glue at most 15 % over the sum of the sub-networks."""
EAGER_SPEEDUP_GOAL = 3.5
"""The best exported runtime at least 3.5x faster than PyTorch eager."""
PEER_RATIO_GOAL = 1.0
"""The fastest glsr model more accurate than MediaPipe (NME51) at most 1.0x MediaPipe's end-to-end time."""
E2E_OVERHEAD_GOAL = 0.10
"""An MNN row's end-to-end time at most 10 % over its crop + network-only time."""


def bench_goals(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Goal rows ``{goal, measured, met, ...}`` of a ``glsr bench`` result (``bench.json``)."""
    from glsr.bench.summary import best_exported, summarize

    cases = results["cases"]
    goals = []
    for g in FPS_GOALS:
        best = best_exported(cases, g["variant"], g["threads"])
        if best is None:
            continue
        goals.append({"goal": f"{g['variant']} {g['threads']} thread{'s' if g['threads'] > 1 else ''} >= "
                              f"{g['fps']:g} fps", "measured": best["fps"], "backend": best["backend"],
                      "met": best["fps"] >= g["fps"], "ratio": round(best["fps"] / g["fps"], 3),
                      "shown": f"{best['fps']:.1f} fps ({best['backend']})"})
    for gl in results.get("glue") or []:
        for rt, r in gl["runtimes"].items():
            goals.append({"goal": f"glue {gl['variant']} {rt} {gl['threads']}t <= {GLUE_GOAL:.0%}",
                          "measured": r["overhead"], "met": r["overhead"] <= GLUE_GOAL,
                          "shown": f"{r['overhead']:.1%}"})
    for s in summarize(results)["eager_vs_exported"]:
        goals.append({"goal": f"exported >= {EAGER_SPEEDUP_GOAL:g}x eager: {s['variant']} {s['threads']}t "
                              f"b{s['batch']}", "measured": s["speedup"], "met": s["speedup"] >= EAGER_SPEEDUP_GOAL,
                      "shown": f"{s['speedup']:.2f}x"})
    return goals


def faces_goals(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Goal rows of a ``glsr bench --peers`` result (``faces.json``); none about MediaPipe without its row."""
    from glsr.bench.latency import summarize_faces

    s = summarize_faces(results)
    goals = []
    for key, what in (("fastest_more_accurate", ""),
                      ("fastest_more_accurate_recropped", ", re-cropped rows counted")):
        if key not in s or not any(c["kind"] == "mediapipe" for c in results["cases"]):
            continue
        best = s[key]
        name = f"fastest glsr row with a lower NME51 than MediaPipe <= {PEER_RATIO_GOAL:g}x its time{what}"
        if best is None:
            goals.append({"goal": name, "measured": None, "met": False, "shown": "no glsr row is more accurate"})
        else:
            goals.append({"goal": name, "measured": best["ratio"], "met": best["ratio"] <= PEER_RATIO_GOAL,
                          "label": best["label"], "shown": f"{best['ratio']:.2f}x ({best['label']})"})
    for r in s["e2e_overhead"]:
        backend = r.get("backend") or next((c["backend"] for c in results["cases"] if c["label"] == r["label"]), "")
        if backend == "mnn":
            goals.append({"goal": f"{r['label']}: e2e <= crop + network-only + {E2E_OVERHEAD_GOAL:.0%}",
                          "measured": r["overhead"], "met": r["overhead"] <= E2E_OVERHEAD_GOAL,
                          "shown": f"{r['overhead']:+.1%}"})
    return goals


def goals_of(results: Dict[str, Any], where: str = "result") -> List[Dict[str, Any]]:
    """The goal rows of a recorded result of either kind; ``ValueError`` naming ``where`` for anything else."""
    cases = results.get("cases") if isinstance(results, dict) else None
    if not isinstance(cases, list):
        raise ValueError(f"{where}: not a glsr bench record (no 'cases' list)")
    if all("kind" in c and "latency" in c for c in cases) and cases:
        return faces_goals(results)
    if all("variant" in c and "network" in c for c in cases):
        return bench_goals(results)
    raise ValueError(f"{where}: its cases are neither `glsr bench` nor `glsr bench --peers` cases")


def markdown(goals: List[Dict[str, Any]], title: str) -> str:
    """One table: goal, measured, met (``**no**`` when missed)."""
    out = [f"## Goals: {title}", ""]
    if not goals:
        return "\n".join(out + ["No goal applies to the cases of this record.", ""])
    out += ["| goal | measured | met |", "|---|---:|---|"]
    out += [f"| {g['goal']} | {g['shown']} | {'yes' if g['met'] else '**no**'} |" for g in goals]
    return "\n".join(out + [""])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.goals", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="bench.json / faces.json files written by glsr bench")
    ap.add_argument("--md", help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    parts = []
    for path in map(Path, args.results):
        try:
            results = json.loads(path.read_text())
            parts.append(markdown(goals_of(results, str(path)), str(path)))
        except (OSError, ValueError) as e:
            print(f"{path}: {e}" if str(path) not in str(e) else str(e), file=sys.stderr)
            return 2
    text = "\n".join(parts)
    print(text, end="")
    if args.md:
        from glsr import atomic

        atomic.write_text(args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
