"""Shared fixtures: the ``../shared`` folder (skip with a reason when absent), denormal flushing and one torch
thread (for every test). Helpers (model sizes, perturbed models) are in ``support.py``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glsr.paths import SHARED

DPR_DIR = SHARED / "reference" / "dpr_wflw"
LFW_DIR = SHARED / "faces" / "lfw"


@pytest.fixture(scope="session")
def dpr_dir() -> Path:
    if not (DPR_DIR / "98_points_global_regress.pth.tar").is_file():
        pytest.skip(f"authors' reference checkpoints not found at {DPR_DIR} (../shared is only on CI and dev "
                    "machines); download them from shaoxiaohu/Face_Alignment_DPR to run this test")
    return DPR_DIR


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not LFW_DIR.is_dir():
        pytest.skip(f"real face photos not found at {LFW_DIR} (../shared is only on CI and dev machines)")
    return LFW_DIR


@pytest.fixture(scope="module")
def flush_denormals():
    """Perturbed random weights push activations into the denormal range, 10x slower on CPUs."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Eager PyTorch in one thread, for every test: with two threads on a loaded 2-core machine a forward pass
    crawls (a 192 px ``small`` at batch 2: 3.5 s instead of 0.03 s). No test times PyTorch; code that sets its
    own thread count (the trainer, ``--threads``) still does."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------- fault corpus
# model files, faces and broken inputs shared by the fault corpus (test_faults*.py), built once per session
@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Model files, faces and broken inputs shared by the corpus."""
    from benchmarks.studies.fault_corpus import write_bad_dataset, write_calib_folder, write_face_images
    from glsr.models import save_checkpoint
    from support import TINY, jittered

    d = tmp_path_factory.mktemp("faults")
    model = jittered("small", "68", sizes=TINY)
    save_checkpoint(model, d / "m.pt")
    ck = torch.load(d / "m.pt", weights_only=True)
    ck["state_dict"]["regress.features.0.0.weight"] = torch.full_like(ck["state_dict"]["regress.features.0.0.weight"],
                                                                    float("nan"))
    torch.save(ck, d / "nan.pt")
    _face, image, data, box = write_face_images(d)
    # a folder data set: 3 good faces and 3 bad ones (wrong point count, NaN coordinate, undecodable image)
    bad = write_bad_dataset(d / "baddata")
    calib = write_calib_folder(d / "calib", data)
    return {"dir": d, "model": model, "pt": d / "m.pt", "nan": d / "nan.pt", "face": d / "face.jpg",
            "image": image, "box": box, "truncated": d / "truncated.jpg", "junk": d / "junk.jpg", "bad": bad,
            "calib": calib}


@pytest.fixture(scope="session")
def exported(files, tmp_path_factory):
    """One export of two formats into one folder (ONNX + MNN, parity on 2 procedural faces)."""
    from glsr.export import export_model
    from glsr.export.parity import default_inputs

    out = tmp_path_factory.mktemp("exported")
    res = export_model(files["pt"], formats=["onnx", "mnn"], out_dir=out, name="m", threads=1,
                       parity_inputs=default_inputs("68", 2, 0, None))
    return out, res


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished two-stage training run (reinit, global) with its resumable state and stage checkpoints."""
    from glsr.train.trainer import train
    from support import tiny_config

    out = tmp_path_factory.mktemp("run") / "r"
    train(tiny_config(), out)
    return out


# ============================================================================================================
# Shared models and exports (issue 29). One perturbed model and one cache of its exports serve every export and
# runtime test file, so a model is built and an artifact exported once per session. Fixtures of other issues go
# above this block.
# ============================================================================================================

@pytest.fixture(scope="session")
def model():
    """The perturbed ``small`` at reduced sizes (192 px crops, ``support.SMALL``) the export and runtime tests share.
    Fresh heads start at zero, so an unperturbed model predicts the same points for every face; this one's output
    depends on its input (the procedural parity faces land >= 3.5 px apart), so a batch returned out of order
    cannot pass a per-face comparison. It declares the shipped models' box convention ("tight"), which every
    export must carry into its metadata. Tests must not change it."""
    from support import jittered

    m = jittered("small", scale=0.03, seed=1)
    m.box_convention = "tight"
    return m


@pytest.fixture(scope="session")
def parity_faces():
    """The parity input set the shared exports are checked on: 3 procedural faces (+ 1 LFW photo and the WFLW
    samples with ``../shared``)."""
    from glsr.export.parity import default_inputs

    return default_inputs("68", procedural=3, lfw=1)


@pytest.fixture(scope="session")
def exports(model, parity_faces, tmp_path_factory):
    """``exports(formats, parity=False, **options)`` -> the ``ExportResult`` of :func:`model` exported with those
    options (``glsr.export.export_model`` keywords; artifact stem ``m``), made once per session in its own folder
    and in a private working folder (MNN's converter writes a fixed-name scratch file into the current one)."""
    from glsr.bench.artifacts import private_cwd
    from glsr.export import export_model

    made = {}

    def get(formats, parity: bool = False, **options):
        key = (str(formats), parity, tuple(sorted((k, str(v)) for k, v in options.items())))
        checked = (key[0], True, key[2])
        if not parity and checked in made:     # the same artifact, made with a parity check
            return made[checked]
        if key not in made:
            out = tmp_path_factory.mktemp("export")
            with private_cwd():
                made[key] = export_model(model=model, formats=formats, out_dir=out, parity=parity,
                                         parity_inputs=parity_faces if parity else None, name="m", **options)
        return made[key]

    return get
