"""The model hub (``glsr.shipped.resolve_model``): one lookup turns a shipped name or a path into a model file for
every entry (Predictor, export, eval, bench, train --init), and an unknown name lists the known ones."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsr.shipped import DEFAULT_SHIPPED, SHIPPED, list_models, resolve_model, shipped_path


def test_names_paths_and_the_default(tmp_path, monkeypatch):
    assert list_models()[0] == DEFAULT_SHIPPED and sorted(list_models()) == sorted(SHIPPED)
    assert resolve_model(None) == shipped_path(DEFAULT_SHIPPED) == resolve_model("small")
    assert resolve_model("medium").name == SHIPPED["medium"].file
    own = tmp_path / "mine.onnx"
    own.write_bytes(b"x")
    assert resolve_model(own) == own and resolve_model(str(own)) == own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small").mkdir()                    # a folder named like a model does not shadow it
    assert resolve_model("small") == shipped_path("small")
    (tmp_path / "medium").write_bytes(b"x")         # a file does: the user's file wins over a shipped name
    assert resolve_model("medium") == Path("medium")


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'huge': shipped models are small, .*medium"):
        resolve_model("huge")
    with pytest.raises(ValueError, match=r"did you mean 'small-fast'\?"):
        resolve_model("small_fast")
    with pytest.raises(FileNotFoundError, match=r"model file .*gone\.pt does not exist .*small"):
        resolve_model(tmp_path / "gone.pt")


def test_a_missing_shipped_file_says_how_to_get_it(tmp_path, monkeypatch):
    import glsr.shipped as hub

    monkeypatch.setattr(hub, "models_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped model 'small' is missing .*reinstall glsr"):
        resolve_model("small")


def test_predictor_from_file_takes_a_name():
    from glsr.runtime.predictor import Predictor

    p = Predictor.from_file("small-fast", threads=1)
    assert p.num_points == 68
    image = np.full((200, 200, 3), 128, np.uint8)
    (pts,) = p.predict(image, np.array([[50.0, 50.0, 150.0, 150.0]]))
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        Predictor.from_file("huge")


def test_every_entry_resolves_through_the_hub():
    """export (Python API), train --init, the bench's model list and eval all take the same names."""
    from glsr.bench.latency import model_sources
    from glsr.export.exporter import _resolve_model
    from glsr.train.evaluate import load_predictor
    from glsr.train.trainer import read_init

    model, source, stem = _resolve_model("small-fast", None, "68", None)
    assert source == str(shipped_path("small-fast")) and stem == Path(SHIPPED["small-fast"].file).stem
    assert model.scheme.name == "68"
    init = read_init("small-fast")
    assert Path(init["path"]) == shipped_path("small-fast") and init["config"]["name"] == model.cfg.name
    assert model_sources(["small-fast"]) == [("small-fast", shipped_path("small-fast"))]
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        model_sources(["small", "huge"])
    assert load_predictor("small-fast", threads=1).num_points == 68
    from glsr.models import load_checkpoint

    assert load_checkpoint("small-fast").cfg.face_size == model.cfg.face_size


def test_cli_lists_shipped_models_and_names_unknown_ones(capsys, tmp_path):
    from glsr.cli import main

    assert main(["models", "--shipped", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models() and all(r["installed"] for r in rows)
    assert main(["models", "--shipped"]) == 0
    assert "| small (default) | glsr-small-68.pt | yes |" in capsys.readouterr().out
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    assert main(["predict", str(photo), "--weights", "smal"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model 'smal'" in err and "did you mean 'small'" in err and len(err.splitlines()) == 1
