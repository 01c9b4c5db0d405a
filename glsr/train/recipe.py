"""Recipes: how a shipped model is made, as data (``glsr train --recipe NAME --data 300w:DIR --out DIR``).

A recipe is a JSON file (``glsr/train/recipes/<name>.json``, or any file given by path)::

    {"name": "small", "description": "...",
     "start": {"import_dpr": {"folder": "../shared/reference/dpr_wflw", "variant": "gsr", "scheme": "68"}},
     "settings": {"variant": "small", "train_split": "fit", "val_split": "val", "loss.kind": "adaptive", ...},
     "steps": [{"name": "small-1", "settings": {"stages": [...]}},
               {"name": "small-s", "settings": {...}, "seeds": [0, 1, 2, 3]}]}

``settings`` are :func:`glsr.train.config.apply_settings` keys (dotted paths of
:class:`~glsr.train.config.TrainConfig`), shared by every step; each step adds its own. The chain runs in order:
the first step starts from ``start`` (the authors' release imported by ``glsr import-dpr``, a shipped model's name
or a file; none = scratch), every later one from the step before. A step with several ``seeds`` trains one run per
seed and continues from the average of their weights (``glsr ship RUN RUN ...``, :mod:`glsr.train.soup`). The
last step is shipped as ``OUT/glsr-<name>-<scheme>.pt`` with its card (``"ship": {"crop": PX, "align_loc": true,
"drop_local": true}``: at an input crop of ``PX`` px, at the same pixel scale or aligned to the loc's pixels, with
the local stage inert: ``glsr ship --crop --align-loc --drop-local``). Re-running the command skips finished runs
and continues an interrupted one, so a chain of hours survives a stop; ``--jobs N`` trains up to N seeds of a
step at once (one process each, with the recipe's ``threads`` per run).

The shipped recipes write down the chains of runs recorded in ``benchmarks/research/models-record.md``; their
last step is checked against the training config each shipped checkpoint records (``tests/test_recipe.py``). glsr's
training code has changed since the recorded runs, so a run reproduces the procedure and lands near, not bit-exactly
on, the shipped numbers: run at full budget, ``small``'s recipe (about 2 h on 2 CPU cores) scores 3.50 % on 300-W
``val`` like the shipped ``small``, ``small-fast``'s 3.96 % against the shipped 3.99 % and ``medium``'s 3.52 % like the
shipped ``medium`` (differences its 122 faces cannot resolve; ``benchmarks/research/models-record.md``).

Layout of ``OUT``: ``start.pt`` (an imported start), ``<step>/`` (a one-seed run), ``<step>-s<seed>/`` and
``<step>/glsr-<step>-<scheme>.pt`` (a soup), and the shipped file with its card.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from glsr.train.config import TrainConfig, apply_settings, read_json_object
from glsr.train.runfiles import STATE_FILE

RECIPES_PACKAGE = "glsr.train"
RECIPES_FOLDER = "recipes"


@dataclass(frozen=True)
class RecipeStep:
    """One training step: its run name, its settings, and the seeds whose runs are averaged (one run: no soup)."""

    name: str
    settings: Dict[str, Any] = field(default_factory=dict)
    seeds: Tuple[int, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A chain of training steps that makes one model (see the module docstring for the file format)."""

    name: str
    description: str
    steps: Tuple[RecipeStep, ...]
    settings: Dict[str, Any] = field(default_factory=dict)
    start: Optional[Dict[str, Any]] = None
    ship_crop: Optional[int] = None
    ship_align_loc: bool = False
    ship_drop_local: bool = False

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "recipe") -> "Recipe":
        known = {"name", "description", "steps", "settings", "start", "ship"}
        unknown = sorted(set(d) - known)
        if unknown or not d.get("name") or not d.get("steps"):
            raise ValueError(f"{where}: a recipe needs 'name' and 'steps' (keys {sorted(known)}); "
                             + (f"unknown keys {unknown}" if unknown else "missing name or steps"))
        steps = []
        for i, s in enumerate(d["steps"]):
            extra = sorted(set(s) - {"name", "settings", "seeds"})
            if extra or not s.get("name"):
                raise ValueError(f"{where}: step {i + 1} needs a 'name' (keys name, settings, seeds); got {sorted(s)}")
            steps.append(RecipeStep(str(s["name"]), dict(s.get("settings") or {}), tuple(s.get("seeds") or ())))
        if len({s.name for s in steps}) < len(steps):
            raise ValueError(f"{where}: two steps share a name")
        start = d.get("start")
        if start is not None and (not isinstance(start, dict) or len(start) != 1
                                  or not set(start) <= {"import_dpr", "init"}):
            raise ValueError(f"{where}: 'start' is {{\"import_dpr\": {{...}}}} or {{\"init\": NAME_OR_FILE}}")
        ship = d.get("ship") or {}
        if (not isinstance(ship, dict) or set(ship) - {"crop", "align_loc", "drop_local"}
                or not isinstance(ship.get("crop", 0), int)
                or not all(isinstance(ship.get(k, False), bool) for k in ("align_loc", "drop_local"))):
            raise ValueError(f"{where}: 'ship' is {{\"crop\": PX, \"align_loc\": true|false, \"drop_local\": "
                             f"true|false}} (glsr ship --crop, --align-loc, --drop-local), got {ship!r}")
        text = d.get("description", "")
        text = " ".join(text) if isinstance(text, list) else str(text)  # a list of lines keeps the file narrow
        return cls(str(d["name"]), text, tuple(steps), dict(d.get("settings") or {}), start, ship.get("crop"),
                   ship.get("align_loc", False), ship.get("drop_local", False))


def recipe_names() -> List[str]:
    """The recipes glsr ships (``glsr/train/recipes/*.json``)."""
    folder = resources.files(RECIPES_PACKAGE) / RECIPES_FOLDER
    return sorted(Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".json"))


def load_recipe(spec: str | os.PathLike) -> Recipe:
    """A recipe by name (:func:`recipe_names`) or from a JSON file."""
    text = os.fspath(spec)
    path = Path(text)
    if not path.is_file():
        if text not in recipe_names():
            raise ValueError(f"unknown recipe {text!r}: glsr's recipes are {', '.join(recipe_names())} (or give a "
                             "recipe JSON file)")
        path = Path(str(resources.files(RECIPES_PACKAGE) / RECIPES_FOLDER / f"{text}.json"))
    return Recipe.from_dict(read_json_object(path, "recipe fields"), str(path))


def as_settings(settings: Dict[str, Any]) -> List[str]:
    """``{"augment.flip_probability": 0}`` -> ``["augment.flip_probability=0"]`` (:func:`apply_settings` form)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items()]


def step_config(recipe: Recipe, step: RecipeStep, data: str, extra: Sequence[str] = ()) -> TrainConfig:
    """The config of one step's runs on ``data`` (training and held-out faces from it): the recipe's settings, the
    step's, then ``extra`` (``--set`` of the command line, e.g. ``threads=2``). ``init`` and ``seed`` are set by
    the runner."""
    cfg = TrainConfig(data=data, val_data=data)
    return apply_settings(cfg, as_settings(recipe.settings) + as_settings(step.settings) + list(extra))


def _finished(run: Path) -> bool:
    return (run / "summary.json").is_file() and (run / "model.pt").is_file()


def run_recipe(recipe: Recipe, data: str, out: str | os.PathLike, extra: Sequence[str] = (),
               train_fn: Optional[Callable[[TrainConfig, Path, bool], Any]] = None,
               progress: Callable[[str], None] = print, jobs: int = 1) -> Path:
    """Run the chain of ``recipe`` on ``data`` into ``out``; the shipped checkpoint's path. Finished runs are
    kept, an interrupted one is resumed from its last saved state (started over if it stopped before one).
    ``jobs``: how many seed runs of one step train at once, each in its own process (``train_fn`` must then be a
    module-level function); the runs and their results are the same as one at a time, only the wall time changes."""
    from glsr.train.ship import ship

    if train_fn is None:
        from glsr.train.trainer import train as train_fn  # noqa: N806 (a function)
    out = Path(out)
    kind, _, folder = data.partition(":")
    if kind.strip().lower() != "procedural" and not Path(folder.strip()).expanduser().is_dir():
        raise FileNotFoundError(f"--data {data}: the folder {folder.strip() or '(none)'} does not exist")
    check_start(recipe)
    out.mkdir(parents=True, exist_ok=True)
    init = _start(recipe, out, progress)
    scheme_file = None
    for k, step in enumerate(recipe.steps):
        cfg = step_config(recipe, step, data, extra)
        last = k == len(recipe.steps) - 1
        seeds = step.seeds or (cfg.seed,)
        runs = [out / (f"{step.name}-s{s}" if step.seeds else step.name) for s in seeds]
        pending = []
        for seed, run in zip(seeds, runs):
            if _finished(run):
                progress(f"[recipe {recipe.name}] {run.name}: finished earlier, kept")
                continue
            resume = (run / STATE_FILE).is_file()   # stopped before its first saved state: starts over
            note = (f"[recipe {recipe.name}] {run.name}: {'resuming' if resume else 'training'} (step {k + 1} of "
                    f"{len(recipe.steps)}{f', seed {seed}' if step.seeds else ''})")
            pending.append((TrainConfig.from_dict({**cfg.to_dict(), "init": None if init is None else str(init),
                                                   "seed": seed}), run, resume, note))
        _train_runs(train_fn, pending, jobs, progress)
        if last:
            scheme_file = ship(runs if len(runs) > 1 else runs[0], recipe.name, out,
                               init_note=f"made by `glsr train --recipe {recipe.name}`", crop=recipe.ship_crop,
                               align_loc=recipe.ship_align_loc, drop_local=recipe.ship_drop_local)
        elif len(runs) > 1:
            target = out / step.name
            done = sorted(target.glob("*.pt")) if target.is_dir() else []
            init = done[0] if done else ship(runs, step.name, target)
        else:
            init = runs[0] / "model.pt"
    progress(f"[recipe {recipe.name}] shipped {scheme_file} and its card")
    return scheme_file


def _train_runs(train_fn: Callable[[TrainConfig, Path, bool], Any],
                runs: Sequence[Tuple[TrainConfig, Path, bool, str]], jobs: int,
                progress: Callable[[str], None]) -> None:
    """Train ``(config, folder, resume, note)`` runs one at a time, each announced by its note, or up to ``jobs`` at
    once in child processes (spawned, so no thread pool or lock is inherited); the first failure is raised once
    the others have finished."""
    if jobs <= 1 or len(runs) <= 1:
        for cfg, run, resume, note in runs:
            progress(note)
            train_fn(cfg, run, resume)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(jobs, len(runs))
    cores, threads = os.cpu_count() or 1, runs[0][0].threads
    if threads is None or workers * threads > cores:
        progress(f"[recipe] --jobs {jobs}: {workers} runs of {threads or 'all'} thread(s) each share {cores} cores, "
                 "so each runs slower (set --set threads=N so that jobs x N <= cores)")
    for *_, note in runs:
        progress(f"{note}, {workers} at a time")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_fn, cfg, run, resume) for cfg, run, resume, _ in runs]
    for f in futures:
        f.result()


def check_start(recipe: Recipe) -> None:
    """Refuse a start that cannot be had, before anything is written: a missing release folder, an unknown name."""
    start = recipe.start or {}
    if "init" in start:
        from glsr.shipped import resolve_model

        resolve_model(start["init"])
    elif "import_dpr" in start and not Path(start["import_dpr"].get("folder", "")).is_dir():
        raise FileNotFoundError(f"recipe {recipe.name} starts from the authors' release in "
                                f"{start['import_dpr'].get('folder')}, which does not exist here (run it from the "
                                "folder beside ../shared, or copy the recipe and change its start)")


def _start(recipe: Recipe, out: Path, progress: Callable[[str], None]) -> Optional[Path]:
    """The first step's ``--init``: ``None`` (scratch), a shipped name or file, or the authors' release imported
    once into ``OUT/start.pt``."""
    start = recipe.start or {}
    if "init" in start:
        from glsr.shipped import resolve_model

        return resolve_model(start["init"])
    if "import_dpr" in start:
        target = out / "start.pt"
        if not target.is_file():
            from glsr.models.checkpoint import save_checkpoint
            from glsr.models.dpr import import_dpr

            opts = dict(start["import_dpr"])
            folder = Path(opts.pop("folder"))
            progress(f"[recipe {recipe.name}] importing the authors' release from {folder}")
            save_checkpoint(import_dpr(folder, **opts), target,
                            extra={"source": "shaoxiaohu/Face_Alignment_DPR (MIT)", "imported_from": folder.name})
        return target
    return None
