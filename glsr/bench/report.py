"""A benchmark result as Markdown and a PNG plot, written atomically beside its JSON."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from glsr import atomic
from glsr.bench.cases import BACKENDS
from glsr.bench.summary import summarize


def _f(v: Optional[float], fmt: str = ".2f") -> str:
    return "" if v is None else format(v, fmt)


def markdown(results: Dict[str, Any]) -> str:
    env = results["environment"]
    cpu = env["cpu"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    out = ["# glsr benchmark", "",
           f"- date: {env['date']}; host: {env['host']}; {env['platform']}; Python {env['python']}",
           f"- CPU: {cpu['model']} — {cpu['cores']} usable cores; flags: {' '.join(cpu['flags'])}",
           f"- libraries: {libs}",
           f"- glsr {env['glsr']}, commit {env['commit'] or 'unknown'}; load average at start {env.get('loadavg')}, "
           f"end {env.get('loadavg_end')}",
           f"- settings: {json.dumps(results['config'])}"]
    if results.get("merged_from"):
        out.append("- merged from runs "
                   + "; ".join(f"{m['date']} ({m['cases']} cases)" for m in results["merged_from"])
                   + ": each row is the run of that case with the least load from other processes")
    out.append("")
    if results["models"]:
        out += ["## Models", "", "| variant | params | MACs | input | paper params | paper FLOPs | stages |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for v, m in results["models"].items():
            out.append(f"| {v} | {m['params'] / 1e6:.2f} M | {m['macs'] / 1e6:.1f} M | {m['input_size']} | "
                       f"{_f(m['paper_params_m'])} M | {_f((m['paper_flops_g'] or 0) * 1e3, '.1f')} M | "
                       f"{' > '.join(m['stages'])} |")
        out.append("")
    out += ["## Latency", "",
            "Network = the exported graph on ready crops; end-to-end = `Predictor.predict` on a photo (crop + "
            "normalize + network + uncrop). Median and p90 in ms; fps = batch / median. Other load = cores kept busy "
            "by other processes during the case (machine CPU time minus the benchmark's): above ~0.2 the case "
            "shared the CPU and its figures are pessimistic.", "",
            "| variant | backend | threads | batch | net median | net p90 | fps | e2e median | e2e p90 | e2e fps | "
            "size MB | iters | stable | other load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for c in sorted(results["cases"], key=lambda c: (list(results["models"]).index(c["variant"])
                                                     if c["variant"] in results["models"] else 0,
                                                     c["threads"], c["batch"], c["backend"])):
        e = c.get("end_to_end") or {}
        out.append(f"| {c['variant']} | {c['backend']} | {c['threads']} | {c['batch']} | "
                   f"{c['network']['median_ms']:.3f} | {c['network']['p90_ms']:.3f} | {c['fps']:.1f} | "
                   f"{_f(e.get('median_ms'), '.3f')} | {_f(e.get('p90_ms'), '.3f')} | "
                   f"{_f(c.get('fps_end_to_end'), '.1f')} | "
                   f"{c['size_bytes'] / 1e6:.2f} | {c['network']['iterations']} | "
                   f"{'yes' if c['network']['stable'] else 'no'} | {_f(c.get('other_load_cores'))} |")
    out.append("")
    summ = results.get("summary") or summarize(results)
    if results["glue"]:
        out += ["## Resampling / STN glue", "",
                "Whole exported graph vs the sum of its sub-networks exported and timed alone (same runtime, "
                "threads, batch 1); the difference is the in-graph glue (crop->loc / face / part resampling, "
                "theta algebra, index gathers).", "",
                "| variant | runtime | threads | whole ms | sum of sub-networks ms | glue ms | overhead | other load "
                "| sub-networks (ms) |",
                "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for g in results["glue"]:
            for rt, r in g["runtimes"].items():
                subs = ", ".join(f"{k} {v:.3f}" for k, v in r["subnets_ms"].items())
                out.append(f"| {g['variant']} | {rt} | {g['threads']} | {r['whole_ms']:.3f} | {r['sum_ms']:.3f} | "
                           f"{r['glue_ms']:.3f} | {r['overhead']:.1%} | {_f(g.get('other_load_cores'))} | {subs} |")
        out.append("")
    if summ["eager_vs_exported"]:
        out += ["## PyTorch eager vs the best exported runtime", "",
                "| variant | threads | batch | torch ms | best exported | ms | speed-up |",
                "|---|---:|---:|---:|---|---:|---:|"]
        for s in summ["eager_vs_exported"]:
            out.append(f"| {s['variant']} | {s['threads']} | {s['batch']} | {s['torch_ms']:.3f} | "
                       f"{s['best_backend']} | "
                       f"{s['best_ms']:.3f} | {s['speedup']:.2f}x |")
        out.append("")
    if results["profiles"]:
        out += ["## Profiles (1 thread, batch 1)", "",
                "onnxruntime: kernel times from its profiler; MNN: wall time between its per-op callbacks.", ""]
        for p in results["profiles"]:
            out += [f"### {p['variant']} — {p['runtime']} (sum {p['kernel_ms']:.3f} ms per run)", ""]
            if p.get("by_scope"):
                out += ["Time by sub-network: " + ", ".join(f"{k} {v:.3f} ms" for k, v in p["by_scope"].items())
                        + f"; the glue is {p['glue_nodes']} nodes: "
                        + ", ".join(f"{g['op']} {g['ms']:.3f} ms" for g in p["glue_by_op"][:8]) + ".", ""]
            out += ["| op type | ms | share | | node | ms | share |", "|---|---:|---:|---|---|---:|---:|"]
            for a, b in zip(p["by_op"] + [None] * 12, p["by_node"] + [None] * 12):
                if a is None and b is None:
                    break
                left = f"{a['op']} | {a['ms']:.3f} | {a['share']:.1%}" if a else " | | "
                right = f"{b['node'][:60]} | {b['ms']:.3f} | {b['share']:.1%}" if b else " | | "
                out.append(f"| {left} | | {right} |")
            out.append("")
    if results["errors"]:
        out += ["## Errors", ""] + [f"- {json.dumps(e)}" for e in results["errors"]] + [""]
    return "\n".join(out)


def plot(results: Dict[str, Any], path: str | os.PathLike) -> Optional[Path]:
    """Bar chart: fps per variant x backend, one panel per thread count (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in results["cases"] if c["batch"] == 1] or results["cases"]
    if not cases:
        return None
    threads = sorted({c["threads"] for c in cases})
    variants = [v for v in results["models"] if any(c["variant"] == v for c in cases)]
    backends = [b for b in BACKENDS if any(c["backend"] == b for c in cases)]
    fig, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4.2), squeeze=False)
    width = 0.8 / max(len(backends), 1)
    for ax, t in zip(axes[0], threads):
        for i, b in enumerate(backends):
            vals = []
            for v in variants:
                c = next((c for c in cases if c["variant"] == v and c["backend"] == b and c["threads"] == t), None)
                vals.append(c["fps"] if c else 0.0)
            xs = np.arange(len(variants)) + (i - (len(backends) - 1) / 2) * width
            ax.bar(xs, vals, width, label=b)
            for x, val in zip(xs, vals):
                if val > 0:
                    ax.text(x, val * 1.05, f"{val:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(variants)), variants)
        ax.set_yscale("log")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}, batch 1 (network)")
        ax.set_ylabel("frames per second")
        ax.legend(fontsize=8)
    fig.suptitle(f"glsr — {results['environment']['cpu']['model']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as a PNG atomically (rendered in memory first) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic.write_bytes(path, buf.getvalue())


def write_results(results: Dict[str, Any], out_dir: str | os.PathLike, stem: str = "bench") -> Dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    paths = {"json": atomic.write_text(out / f"{stem}.json", json.dumps(results, indent=2, default=str)),
             "md": atomic.write_text(out / f"{stem}.md", markdown(results))}
    png = plot(results, out / f"{stem}.png")
    if png is not None:
        paths["png"] = png
    return paths
