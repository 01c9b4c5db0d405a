"""Folders beside the source checkout, derived in one place, and how a committed file shows a path. Bottom layer:
imports nothing from glsr.

* :data:`CHECKOUT`: the folder holding the ``glsr`` package (the repository root in a source checkout);
* :data:`SHARED`: ``../shared`` next to the checkout, the reference material (authors' checkpoints, WFLW samples,
  LFW photos) present on CI and dev machines only; everything that uses it works, or skips, without it;
* :func:`portable` / :func:`portable_text`: a path (or every machine path in a text such as a recorded command) as
  a model card or a recorded result shows it, without the folders of the machine that wrote it.

The library reads from these folders and never writes into them: results go where the user says (``-o``).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Tuple

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
PLACEHOLDER = "DIR"
"""Stands for a folder of the machine that wrote a record (a run folder, a scratch folder)."""


def portable(text: str | os.PathLike) -> str:
    """``text`` (a path, or a data spec ``KIND:PATH`` such as ``300w:/data/300w``) without machine folders.

    Relative paths stay as they are; an absolute path inside a ``shared`` folder becomes ``../shared/...``, one
    inside this checkout becomes relative to it, any other keeps its last two parts under :data:`PLACEHOLDER`
    (``/srv/runs/small3/model.pt`` -> ``DIR/small3/model.pt``).
    """
    text = os.fspath(text)
    kind, sep, rest = text.partition(":")
    if sep and "/" not in kind and rest.startswith("/"):
        return f"{kind}:{portable(rest)}"
    if not text.startswith("/"):
        return text
    path = PurePosixPath(text)
    try:
        return Path(text).resolve().relative_to(CHECKOUT).as_posix()
    except ValueError:
        pass
    if "shared" in path.parts:
        i = path.parts.index("shared")
        return PurePosixPath("..", *path.parts[i:]).as_posix()
    return PurePosixPath(PLACEHOLDER, *path.parts[1:][-2:]).as_posix()


ABSOLUTE_PATH = re.compile(r"(?<![\w.~/])/[^\s'\"`,;()\[\]<>|]+")
"""An absolute POSIX path inside a text: starts with ``/`` not preceded by a word, ``.``, ``~`` or ``/`` (so URLs and
relative paths are left alone) and runs to a space, quote, bracket or separator."""


def machine_roots() -> Tuple[str, ...]:
    """Folders of this machine a committed text must not name: the one holding the checkout (and ``../shared``), the
    temporary folder and the home folder."""
    roots = {CHECKOUT.parent.resolve(), Path(tempfile.gettempdir()).resolve(), Path.home().resolve(), Path("/tmp")}
    return tuple(sorted(str(r) for r in roots if r != Path("/")))


def portable_text(text: str, roots: Tuple[str, ...] | None = None) -> str:
    """``text`` with every absolute path under one of ``roots`` (default :func:`machine_roots`) or inside a
    ``shared`` folder (the reference material, wherever it is) made :func:`portable`; other absolute paths (a
    phone's ``/data/local/tmp``, system files) stay."""
    roots = machine_roots() if roots is None else roots

    def fix(match: re.Match) -> str:
        path = match.group(0)
        core = path.rstrip(".:")
        if not any(core == r or core.startswith(r + "/") for r in roots) and "/shared/" not in core:
            return path
        return portable(core) + path[len(core):]

    return ABSOLUTE_PATH.sub(fix, text)
