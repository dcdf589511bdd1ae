"""`swiftbrush eval` on a student: the manifest check generate and export make, and a progress bar on stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from swiftbrush.cli import cli


def test_a_student_whose_files_changed_is_refused_as_generate_refuses_it(tiny_student: Path, tmp_path: Path):
    changed = tmp_path / "student"
    shutil.copytree(tiny_student, changed)
    with open(changed / "onestep.json", "a") as f:
        f.write(" ")
    r = CliRunner().invoke(cli, ["eval", "--model", str(changed), "--per-caption", "1"])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "onestep.json does not match its manifest hash" in r.output
    g = CliRunner().invoke(cli, ["generate", "--model", str(changed), "--prompt", "x", "--out", str(tmp_path / "o")])
    assert g.exit_code == 2 and g.output == r.output


def test_progress_on_stderr_scores_on_stdout(tiny_student: Path):
    r = CliRunner().invoke(cli, ["eval", "--model", str(tiny_student), "--per-caption", "1"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert scores["kind"] == "student" and scores["images"] == 36
    assert "sampling" in r.stderr and "36/36" in r.stderr, r.stderr
