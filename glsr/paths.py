"""Folders beside the source checkout, derived in one place, and how a committed file shows a path. Bottom layer:
imports nothing from glsr.

* :data:`CHECKOUT`: the folder holding the ``glsr`` package (the repository root in a source checkout);
* :data:`SHARED`: ``../shared`` next to the checkout, the reference material (authors' checkpoints, WFLW samples,
  LFW photos) present on CI and dev machines only; everything that uses it works, or skips, without it;
* :func:`portable`: a path as a model card or a recorded result shows it, without the folders of the machine that
  wrote it.

The library reads from these folders and never writes into them: results go where the user says (``-o``).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
PLACEHOLDER = "DIR"
"""Stands for a folder of the machine that wrote a record (a run folder, a scratch folder)."""


def portable(text: str | os.PathLike) -> str:
    """``text`` (a path, or a data spec ``KIND:PATH`` such as ``300w:/data/300w``) without machine folders.

    Relative paths stay as they are; an absolute path inside a ``shared`` folder becomes ``../shared/...``, one
    inside this checkout becomes relative to it, any other keeps its last two parts under :data:`PLACEHOLDER`
    (``/home/me/runs/small3/model.pt`` -> ``DIR/small3/model.pt``).
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
