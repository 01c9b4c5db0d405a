"""The ``--init`` chain recorded in checkpoints and shown in the README table and the model cards."""
from __future__ import annotations

from fnmatch import fnmatch

import torch

from benchmarks.studies.real_faces import describe_start
from glsr.models import create_model
from glsr.models.checkpoint import save_checkpoint
from glsr.train.lineage import checkpoint_lineage, init_label, init_lineage, relabel
from glsr.train.runfiles import (GROWN_FILE, MODEL_FILE, STAGE_FILE, STAGE_GLOB, STATE_FILE, is_run_checkpoint,
                                 stage_file)


def test_labels_name_shipped_files_runs_the_authors_release_and_plain_files():
    assert init_label("/x/models/glsr-small-68.pt", {"shipped_as": "small", "train_config": {}}) == "shipped small"
    assert init_label("/x/gsr68.pt", {"source": "shaoxiaohu/Face_Alignment_DPR (MIT)"}) == "WFLW GSR"
    assert init_label("/runs/small3/model.pt", None) == "run small3"          # gone from disk: named by its path
    assert init_label("/runs/mgrow/stage2-global.pt", None) == "run mgrow"
    assert init_label("/runs/mgrow/grown.pt", None) == "run mgrow"
    assert init_label("/x/backbone.pth", None) == "backbone.pth"
    assert init_label("/x/stage.pt", None) == "stage.pt"                       # not a name a run writes


def test_run_file_names_round_trip():
    assert STAGE_FILE.fullmatch(stage_file(2, "global")).groups() == ("2", "global")
    assert fnmatch(stage_file(4, "finetune"), STAGE_GLOB)
    assert all(is_run_checkpoint(n) for n in (MODEL_FILE, STATE_FILE, GROWN_FILE, stage_file(1, "reinit")))
    assert not any(is_run_checkpoint(n) for n in ("glsr-small-68.pt", "stage.pt", "stage2-global.pt.tmp"))


def test_table_text_of_a_chain():
    assert describe_start([]) == "scratch"
    assert describe_start(["WFLW GSR"]) == "WFLW GSR"
    assert describe_start(["shipped small", "run small3"]) == "shipped small ← run small3"
    assert describe_start(["run c", "run b", "run a", "WFLW GSR"]) == "run c ← … ← WFLW GSR"
    assert describe_start(["shipped small-fast", "run fast160"], "small-fast") == \
        "earlier shipped small-fast ← run fast160"
    assert relabel(["shipped small-fast", "shipped small"], "small-fast") == ["earlier shipped small-fast",
                                                                             "shipped small"]


def test_chain_is_read_from_the_record_else_followed_through_files_on_disk(tmp_path):
    model = create_model("gsr", "68")
    save_checkpoint(model, tmp_path / "gsr68.pt", extra={"source": "shaoxiaohu/Face_Alignment_DPR (MIT)"})
    (tmp_path / "a").mkdir()
    save_checkpoint(model, tmp_path / "a" / "model.pt", extra={"train_config": {"init": str(tmp_path / "gsr68.pt")}})
    shipped = {"train_config": {"init": str(tmp_path / "a" / "model.pt")}, "shipped_as": "small"}
    save_checkpoint(model, tmp_path / "shipped.pt", extra=shipped)
    # a checkpoint from before the chain was recorded: followed file by file, nearest first
    old = {"train_config": {"init": str(tmp_path / "shipped.pt")}}
    assert checkpoint_lineage(old) == ["shipped small", "run a", "WFLW GSR"]
    # what a new run starting from shipped.pt records, and that the record wins over the files
    assert init_lineage(tmp_path / "shipped.pt", shipped) == ["shipped small", "run a", "WFLW GSR"]
    assert checkpoint_lineage({**old, "lineage": ["recorded"]}) == ["recorded"]
    # a file gone from disk ends the chain with its name; so does a bare state dict (not a glsr checkpoint)
    assert checkpoint_lineage({"train_config": {"init": str(tmp_path / "gone" / "model.pt")}}) == ["run gone"]
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    assert checkpoint_lineage({"train_config": {"init": str(tmp_path / "bare.pt")}}) == ["bare.pt"]
    assert checkpoint_lineage({"train_config": {"init": None}}) == [] and checkpoint_lineage(None) == []
