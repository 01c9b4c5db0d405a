"""The maintainers' card tool (benchmarks.ship, outside the package): the committed cards are what it generates
from the shipped checkpoints and the real-faces record; a refresh rewrites only the measured sections."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.ship import load_evaluation, main, refresh_card_evaluation

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "benchmarks" / "results" / "real_faces.json"


@pytest.mark.parametrize("name", ["small", "medium"])
def test_cards_are_what_the_tool_generates(name, tmp_path, capsys):
    """``python -m benchmarks.ship --card`` on a copy of a shipped checkpoint writes its committed card byte for
    byte (the start note is the card's own ``- Start:`` sentence, as models-record.md passes it)."""
    card = REPO / "models" / f"glsr-{name}-68.md"
    text = card.read_text()
    note = next(line for line in text.splitlines() if line.startswith("- Start: "))[len("- Start: "):-1]
    copy = tmp_path / card.with_suffix(".pt").name
    shutil.copyfile(card.with_suffix(".pt"), copy)
    assert main(["--card", str(copy), "--name", name, "--eval", str(RECORD), "--init-note", note]) == 0
    assert copy.with_suffix(".md").read_text() == text


def test_bad_use_is_one_line(tmp_path, capsys):
    assert main(["--name", "x"]) == 2                                  # neither runs nor --card
    assert main(["--card", str(tmp_path / "x.pt"), "--name", "x", "--eval", str(RECORD)]) == 2  # no label x
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--card FILE.pt" in err[0] and "no model labelled 'x'" in err[1]


def test_refresh_card_evaluation_rewrites_only_the_measured_sections(tmp_path):
    """A card whose run folders are gone gets a newer study's validation and speed; the rest stays as it was."""
    card = tmp_path / "card.md"
    card.write_text("# x\n\nrecipe\n\n## Validation (old)\n\n1.00 ms per face\n\n## File\n\n`x.pt`\n")
    ev = load_evaluation(RECORD, "small")
    refresh_card_evaluation(card, ev)
    text = card.read_text()
    assert text.startswith("# x\n\nrecipe\n\n## Validation (300-W") and text.endswith("\n\n## File\n\n`x.pt`\n")
    assert "1.00 ms" not in text and f"{ev['speed']['ms_median']:.2f} ms per face" in text
    card.write_text("# no sections\n")
    with pytest.raises(ValueError, match="no '## Validation'"):
        refresh_card_evaluation(card, ev)
