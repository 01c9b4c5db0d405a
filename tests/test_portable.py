"""No committed file names the folders of the machine that wrote it: paths are shown by ``glsr.paths.portable``
(``../shared/...``, checkout-relative, ``DIR/<folder>/<file>``), and the checkout's text files hold none."""
from __future__ import annotations

import re
from pathlib import Path

from glsr.paths import CHECKOUT, portable, portable_text

TEXT_SUFFIXES = {".py", ".md", ".json", ".txt", ".toml", ".cfg", ".yaml", ".yml", ".sh", ""}
SCANNED = ("README.md", "pyproject.toml", ".ci", "glsr", "models", "benchmarks", "tests")
MACHINE_PATH = re.compile(r"(?<![\w.~/])/(" + "|".join(["work", "tmp", "home", "root", "Users", "mnt"]) + r")/")
"""A folder of a machine: these roots, not preceded by a word (a phone's ``/data/local/tmp`` is not one)."""


def test_portable_paths():
    assert portable("300w:/srv/x/shared/data/300w") == "300w:../shared/data/300w"
    assert portable("/srv/runs/out/small3/model.pt") == "DIR/small3/model.pt"
    assert portable(CHECKOUT / "models" / "glsr-small-68.pt") == "models/glsr-small-68.pt"
    assert portable("runs/small/model.pt") == "runs/small/model.pt" and portable("procedural:68") == "procedural:68"


def test_portable_text_keeps_what_is_not_a_machine_folder():
    roots = ("/srv/box",)
    text = ("python -m x 'B1=/srv/box/runs/b1/model.pt' --faces 300w:/srv/box/shared/data/300w, at /srv/box/main. "
            "https://github.com/a/b /data/local/tmp/glsr-bench /usr/lib/x a/b /opt/shared/lfw/a.jpg")
    assert portable_text(text, roots) == ("python -m x 'B1=DIR/b1/model.pt' --faces 300w:../shared/data/300w, at "
                                          "DIR/box/main. https://github.com/a/b /data/local/tmp/glsr-bench "
                                          "/usr/lib/x a/b ../shared/lfw/a.jpg")


def committed_text_files():
    for top in SCANNED:
        root = CHECKOUT / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            rel = p.relative_to(CHECKOUT)
            if "__pycache__" in rel.parts or rel.parts[:2] == ("glsr", "zoo") or p.suffix not in TEXT_SUFFIXES:
                continue
            yield rel, p


def test_no_committed_text_names_a_machine_folder():
    found = []
    for rel, p in committed_text_files():
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    assert not found, ("machine folders in committed files (python -m benchmarks.redact FILE shows them portably): "
                       + "; ".join(found[:10]))


def _strings(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


def test_shipped_checkpoints_name_no_machine_folder():
    """What a shipped .pt records besides its weights (training config, chain, box convention) is as portable as
    the text files: `glsr ship` stamps the training config through glsr.paths.portable."""
    from glsr.models.checkpoint import read_checkpoint

    files = sorted((CHECKOUT / "models").glob("*.pt"))
    assert files
    found = [f"{p.name}{where}: {text}" for p in files
             for where, text in _strings({k: v for k, v in read_checkpoint(p).items() if k != "state_dict"})
             if MACHINE_PATH.search(text)]
    assert not found, "machine folders in shipped checkpoints: " + "; ".join(found[:10])


def test_ship_stamps_a_portable_training_config():
    from glsr.train.ship import portable_config

    cfg = portable_config({"data": "300w:/srv/x/shared/data/300w", "init": "/srv/runs/out/small3/model.pt",
                           "val_data": None, "seed": 0})
    assert cfg == {"data": "300w:../shared/data/300w", "init": "DIR/small3/model.pt", "val_data": None, "seed": 0}


def test_redact_rewrites_text_records_and_leaves_images_alone(tmp_path):
    """``python -m benchmarks.redact`` over a result's files (``int8_faces.*``: JSON, Markdown and a PNG): the text
    ones lose the machine folder, the image is skipped unchanged instead of stopping the run."""
    from benchmarks.redact import main

    md, png = tmp_path / "r.md", tmp_path / "r.png"
    md.write_text("faces: 300w:/somewhere/shared/data/300w split val\n")
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert main([str(md), str(png)]) == 0
    assert md.read_text() == "faces: 300w:../shared/data/300w split val\n"
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\n\x00\xff"
