"""Parameters and FLOPs of the real graph, beside the paper's Table 7."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from glsr.models.factory import create_model
from glsr.models.network import GLSRNet
from glsr.models.registry import get_variant, list_variants


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: GLSRNet, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass, measured with ``torch.utils.flop_counter`` (FLOPs / 2).

    The paper's "FLOPs" are multiply-accumulates (its ResNet-50 at 256 px: 5.28 G). The flop counter counts
    convolutions, matmuls and linear layers; element-wise ops and the bilinear resampling are not counted.
    """
    x = torch.zeros(batch, 3, model.cfg.input_size, model.cfg.input_size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x)
    return fc.get_total_flops() // 2


@dataclass(frozen=True)
class ModelRow:
    variant: str
    paper_name: str
    params: int
    macs: int
    input_size: int
    stages: str
    paper_params_m: Optional[float]
    paper_flops_g: Optional[float]

    def deltas(self) -> tuple[Optional[float], Optional[float]]:
        dp = None if self.paper_params_m is None else self.params / 1e6 / self.paper_params_m - 1
        df = None if self.paper_flops_g is None else self.macs / 1e9 / self.paper_flops_g - 1
        return dp, df


def model_rows(scheme: str = "68", progress: Optional[bool] = None) -> List[ModelRow]:
    """One row per variant (parameters and MACs counted on the real graph: about 10 s for all of them on a CPU);
    ``progress`` shows a bar on stderr (``None``: only when stderr is a terminal)."""
    from tqdm import tqdm

    rows = []
    for name in tqdm(list_variants(), desc="counting MACs", unit="variant", leave=False,
                     disable=None if progress is None else not progress):
        cfg = get_variant(name)
        m = create_model(name, scheme)
        rows.append(ModelRow(name, cfg.paper_name, count_params(m), count_macs(m), cfg.input_size,
                             " > ".join(cfg.stages), cfg.paper_params_m, cfg.paper_flops_g))
    return rows


def format_table(rows: List[ModelRow]) -> str:
    """Markdown table; deltas above 10 % are flagged with ``!``."""
    def pct(d: Optional[float]) -> str:
        return "" if d is None else f"{d:+.0%}" + (" !" if abs(d) > 0.10 else "")

    out = ["| variant | paper | params | MACs | paper params | paper FLOPs | Δparams | ΔFLOPs | input | stages |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        dp, df = r.deltas()
        pp = "" if r.paper_params_m is None else f"{r.paper_params_m:.2f} M"
        pf = "" if r.paper_flops_g is None else f"{r.paper_flops_g * 1e3:.1f} M"
        out.append(f"| {r.variant} | {r.paper_name} | {r.params / 1e6:.2f} M | {r.macs / 1e6:.1f} M | {pp} | {pf} | "
                   f"{pct(dp)} | {pct(df)} | {r.input_size} | {r.stages} |")
    return "\n".join(out)


@dataclass(frozen=True)
class ShippedRow:
    """A shipped checkpoint: the stages it runs (exported and run) and those it carries but never runs
    (:meth:`GLSRNet.inert_stages`: their output is exactly zero)."""

    model: str
    variant: str
    input_size: int
    params_run: int
    stages: str
    not_run: str


def shipped_rows() -> List[ShippedRow]:
    """One row per shipped model whose file is present (:data:`glsr.shipped.SHIPPED`)."""
    from glsr.models.checkpoint import load_checkpoint
    from glsr.shipped import SHIPPED, shipped_path

    rows = []
    for name in SHIPPED:
        try:
            full = load_checkpoint(shipped_path(name))
        except FileNotFoundError:
            continue
        run = full.without_inert_stages()
        rows.append(ShippedRow(name, full.cfg.name, full.cfg.input_size, count_params(run), " > ".join(run.stages),
                               " > ".join(s for s in full.stages if s not in run.stages)))
    return rows


def format_shipped(rows: List[ShippedRow]) -> str:
    """Markdown table of :func:`shipped_rows`."""
    out = ["| shipped model | variant | input | params run | stages run | carried, not run (output exactly zero) |",
           "|---|---|---:|---:|---|---|"]
    out += [f"| {r.model} | {r.variant} | {r.input_size} | {r.params_run / 1e6:.2f} M | {r.stages} | "
            f"{r.not_run or '-'} |" for r in rows]
    return "\n".join(out)
