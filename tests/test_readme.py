"""Every ``glsr`` command the READMEs and the measurement documents under ``benchmarks/results/`` show in a code
block parses with the real command-line parser; the README keeps its two set-up commands, the place of the shipped
models' table and links that resolve."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import List

import pytest

from glsr.cli import build_parser
from glsr.paths import CHECKOUT

READMES = [CHECKOUT / "README.md", CHECKOUT / "benchmarks" / "README.md",
           *sorted((CHECKOUT / "benchmarks" / "results").rglob("*.md"))]
"""The READMEs and the measurement documents they link to."""
SETUP_COMMANDS = ('pip install "torch==2.13.0" -e ".[test]" && glsr pipeline --out runs/pipeline',
                  'pip install "torch==2.13.0" -e ".[test]" && python -m pytest -q -rs')
"""The README's two set-up commands (the second is what CI, ``.ci/run``, runs)."""


def shown_commands(path: Path) -> List[str]:
    """``glsr ...`` command lines of the fenced code blocks (continuations joined, comments dropped)."""
    out: List[str] = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("glsr "):
                    out.append(part)
    return out


COMMANDS = [(p.relative_to(CHECKOUT).as_posix(), c) for p in READMES if p.is_file() for c in shown_commands(p)]


def test_the_readme_shows_commands():
    assert any(c.startswith("glsr pipeline") for _, c in COMMANDS)
    assert any(c.startswith("glsr bench") for _, c in COMMANDS)


def test_the_readme_keeps_its_set_up_commands_and_links():
    text = (CHECKOUT / "README.md").read_text()
    lines = text.splitlines()
    for command in SETUP_COMMANDS:
        assert command in lines, command
    # the results table's place (benchmarks/studies/readme_peers.py --readme writes between the markers)
    assert {"<!-- peers-table:start -->", "<!-- peers-table:end -->"} <= set(lines) and "models/README.md" in text
    assert len(text) < 10_000, f"README.md has {len(text)} characters; keep it a five-minute read (< 10,000)"


def test_readme_table_is_the_recorded_run():
    """The README's results table is rendered from the recorded `benchmarks.studies.peer_speed` run it links to
    (`python -m benchmarks.studies.readme_peers RECORD --readme README.md`), never typed by hand, and it shows every
    shipped model."""
    from benchmarks.studies.readme_peers import END, START, table
    from glsr.shipped import SHIPPED

    text = (CHECKOUT / "README.md").read_text()
    block = START + text.split(START, 1)[1].split(END, 1)[0] + END
    (link,) = re.findall(r"record: \[peer_speed[\w-]*\.md\]\(([^)]+)\)", block)
    record = json.loads((CHECKOUT / link).with_suffix(".json").read_text())
    assert block == table(record, link)
    assert all(f"glsr `{name}`" in block for name in SHIPPED)


def relative_links(path: Path) -> List[str]:
    """Link targets of a Markdown file outside its code blocks, other than web addresses and anchors."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("readme", [p for p in READMES if p.is_file()],
                         ids=lambda p: p.relative_to(CHECKOUT).as_posix())
def test_links_into_the_checkout_resolve(readme):
    missing = [t for t in relative_links(readme) if not (readme.parent / t).exists()]
    assert not missing, f"{readme.relative_to(CHECKOUT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("readme, command", COMMANDS)
def test_readme_command_parses(readme, command):
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(command)[1:])
    except SystemExit as e:
        pytest.fail(f"{readme}: `{command}` does not parse (exit {e.code})")
    assert getattr(args, "func", None) is not None, f"{readme}: `{command}` names no sub-command"
