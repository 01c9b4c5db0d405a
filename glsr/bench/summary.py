"""What a benchmark result adds up to (the speed-up of the best exported runtime over PyTorch eager) and merging
several runs of one machine into one result. The project's speed goals are checked outside the package, by
``python -m benchmarks.goals RESULT.json`` in a source checkout."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from glsr.bench.cases import EXPORTED

def best_exported(cases: Iterable[Dict[str, Any]], variant: str, threads: int, batch: int = 1
                  ) -> Optional[Dict[str, Any]]:
    """The case of ``variant`` / ``threads`` / ``batch`` with the fastest exported network (``None``: none)."""
    rows = [c for c in cases if c["variant"] == variant and c["threads"] == threads and c["batch"] == batch
            and c["backend"] in EXPORTED]
    return min(rows, key=lambda c: c["network"]["median_ms"]) if rows else None


def summarize(results: Dict[str, Any]) -> Dict[str, Any]:
    """``{"eager_vs_exported": [...]}``: per PyTorch eager case, the best exported runtime of the same variant,
    threads and batch and its speed-up (eager median / exported median)."""
    cases = results["cases"]
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
    return {"eager_vs_exported": speedups}


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
