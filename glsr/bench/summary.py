"""Goal checks of a benchmark result (fps per variant and threads with the best exported backend, glue
overhead, eager vs exported speed-up) and merging several runs of one machine into one result."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from glsr.bench.cases import EXPORTED

# Performance goals (whole chain in one exported graph, batch 1, median, best backend).
FPS_GOALS: Tuple[Dict[str, Any], ...] = (
    {"variant": "small", "threads": 1, "fps": 400.0},
    {"variant": "medium", "threads": 1, "fps": 120.0},
    {"variant": "large", "threads": 1, "fps": 9.0},
    {"variant": "large", "threads": 2, "fps": 18.0},
)

GLUE_GOAL = 0.15          # resampling / STN glue <= 15 % over the sum of the sub-networks

EAGER_SPEEDUP_GOAL = 3.5  # exported runtime >= 3.5x faster than PyTorch eager


def best_exported(cases: Iterable[Dict[str, Any]], variant: str, threads: int, batch: int = 1
                  ) -> Optional[Dict[str, Any]]:
    rows = [c for c in cases if c["variant"] == variant and c["threads"] == threads and c["batch"] == batch
            and c["backend"] in EXPORTED]
    return min(rows, key=lambda c: c["network"]["median_ms"]) if rows else None


def summarize(results: Dict[str, Any]) -> Dict[str, Any]:
    """Goal checks: fps per variant/threads (best exported backend), glue overhead, eager speed-up."""
    cases = results["cases"]
    goals = []
    for g in FPS_GOALS:
        best = best_exported(cases, g["variant"], g["threads"])
        if best is None:
            continue
        goals.append({"goal": f"{g['variant']} {g['threads']} thread{'s' if g['threads'] > 1 else ''} >= "
                              f"{g['fps']:g} fps", "measured": best["fps"], "backend": best["backend"],
                      "met": best["fps"] >= g["fps"], "ratio": round(best["fps"] / g["fps"], 3)})
    for gl in results["glue"]:
        for rt, r in gl["runtimes"].items():
            goals.append({"goal": f"glue {gl['variant']} {rt} {gl['threads']}t <= {GLUE_GOAL:.0%}",
                          "measured": r["overhead"], "met": r["overhead"] <= GLUE_GOAL})
    speedups = []
    for c in cases:
        if c["backend"] != "torch":
            continue
        best = best_exported(cases, c["variant"], c["threads"], c["batch"])
        if best is None:
            continue
        sp = c["network"]["median_ms"] / best["network"]["median_ms"]
        speedups.append({"variant": c["variant"], "threads": c["threads"], "batch": c["batch"],
                         "torch_ms": c["network"]["median_ms"], "best_backend": best["backend"],
                         "best_ms": best["network"]["median_ms"], "speedup": round(sp, 3)})
        goals.append({"goal": f"exported >= {EAGER_SPEEDUP_GOAL:g}x eager: {c['variant']} {c['threads']}t "
                              f"b{c['batch']}", "measured": round(sp, 3), "met": sp >= EAGER_SPEEDUP_GOAL})
    return {"goals": goals, "eager_vs_exported": speedups}


def _quiet_key(rec: Dict[str, Any]) -> Tuple[float, float]:
    """Order records by interference first (other processes' load), then by latency."""
    other = rec.get("other_load_cores")
    lat = rec["network"]["median_ms"] if "network" in rec else min(
        (r["whole_ms"] for r in rec.get("runtimes", {}).values()), default=0.0)
    return (round(float("inf") if other is None else other, 1), lat)


def merge_results(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One result from several runs on the same machine: per case (variant, backend, threads, batch), per glue
    (variant, threads) and per profile (variant, runtime), the record measured with the least interference from
    other processes (ties: the lower latency). Meant for shared machines where no single run is quiet
    throughout; the environment of the first run is kept and every run's date and commit are listed."""
    if not runs:
        raise ValueError("nothing to merge")

    def pick(key_fn, items):
        best: Dict[Any, Dict[str, Any]] = {}
        for rec in items:
            k = key_fn(rec)
            if k not in best or _quiet_key(rec) < _quiet_key(best[k]):
                best[k] = rec
        return list(best.values())

    base = json.loads(json.dumps(runs[0]))
    cpus = {r["environment"]["cpu"]["model"] for r in runs}
    if len(cpus) > 1:
        raise ValueError(f"refusing to merge runs from different CPUs: {sorted(cpus)}")
    base["cases"] = pick(lambda c: (c["variant"], c["backend"], c["threads"], c["batch"]),
                         [c for r in runs for c in r["cases"]])
    base["glue"] = pick(lambda g: (g["variant"], g["threads"]), [g for r in runs for g in r["glue"]])
    base["profiles"] = [p for r in reversed(runs) for p in r["profiles"]]
    seen, profiles = set(), []
    for p in base["profiles"]:  # the latest run's profile of each (variant, runtime)
        if (p["variant"], p["runtime"]) not in seen:
            seen.add((p["variant"], p["runtime"]))
            profiles.append(p)
    base["profiles"] = profiles
    for r in runs[1:]:
        for v, m in r.get("models", {}).items():
            base["models"].setdefault(v, m)
    base["errors"] = [e for r in runs for e in r.get("errors", [])]
    base["merged_from"] = [{"date": r["environment"]["date"], "commit": r["environment"]["commit"],
                            "cases": len(r["cases"])} for r in runs]
    base["summary"] = summarize(base)
    return base
