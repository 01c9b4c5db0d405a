""".ci/run: runs the README's test command and then the slow suite, and turns pytest's exit codes into one verdict
(a suite that fails, is cut by its time limit or collects no test fails the job; both suites always run). Checked
with a stand-in ``python`` on PATH that records its arguments and exits with a chosen code."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from test_readme import SETUP_COMMANDS

REPO = Path(__file__).resolve().parents[1]
CI = REPO / ".ci" / "run"

FAKE = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
case "$*" in
    *"-m slow"*) [[ -n "${FAKE_SLOW_SLEEP:-}" ]] && sleep "$FAKE_SLOW_SLEEP"; exit "${FAKE_SLOW_RC:-0}" ;;
    *) exit "${FAKE_DEFAULT_RC:-0}" ;;
esac
"""


def run_ci(tmp_path: Path, **env) -> tuple:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    full = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
            **{k: str(v) for k, v in env.items()}}
    r = subprocess.run(["bash", str(CI), "--no-install"], env=full, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return r.returncode, r.stdout, calls


def test_runs_the_readme_command_then_the_slow_suite(tmp_path):
    readme_args = SETUP_COMMANDS[1].split("python ", 1)[1]           # "-m pytest -q -rs"
    code, out, calls = run_ci(tmp_path)
    assert code == 0 and "all suites passed" in out
    assert calls == [readme_args, readme_args + " -m slow"]


@pytest.mark.parametrize("default_rc, slow_rc, failed", [
    (1, 0, "default suite"),
    (0, 1, "slow suite"),
    (5, 0, "default suite"),      # nothing collected is not a pass
    (0, 5, "slow suite"),
    (2, 3, "default suite slow suite"),
])
def test_any_failing_or_empty_suite_fails_the_job(tmp_path, default_rc, slow_rc, failed):
    code, out, calls = run_ci(tmp_path, FAKE_DEFAULT_RC=default_rc, FAKE_SLOW_RC=slow_rc)
    assert code == 1 and f"ci: failed: {failed}" in out
    assert len(calls) == 2                                            # the slow suite runs after a failed default
    if 5 in (default_rc, slow_rc):
        assert "collected no tests (exit 5)" in out


def test_a_suite_over_its_time_limit_fails_the_job(tmp_path):
    code, out, _ = run_ci(tmp_path, FAKE_SLOW_SLEEP=5, GLSR_CI_SLOW_LIMIT="1s")
    assert code == 1 and "slow suite FAILED: not finished within 1s" in out


def test_the_slow_marker_is_declared_and_off_by_default():
    import tomllib

    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in ini["markers"]) and "-m 'not slow'" in ini["addopts"]
