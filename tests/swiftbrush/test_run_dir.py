"""distill's and demo's out folders: nothing a user owns is lost, an interrupted --overwrite keeps the
previous result, --resume continues only a real run with its own settings, --keep-checkpoints.

Real commands on the tiny random teacher, 1-2 steps each; refusals happen before any model loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush.errors import InvalidArgumentError
from cli_checks import one_line_exit_2 as _one_line_exit_2

FAST = ["--preset", "toy", "--batch-size", "2"]


def _distill(teacher: Path | str, out: Path | str, *extra: str):
    return CliRunner().invoke(cli, ["distill", "--teacher", str(teacher), "--prompts", "toy", "--out", str(out), *FAST, *extra])



def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_step_run(tiny_teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    result = _distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "1")
    assert result.exit_code == 0, result.output
    return out


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# ---------------------------------------------------------------- refusals (before any model loads)


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_teacher, tmp_path):
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "thesis.txt").write_text("four years")
    (mine / "photos" / "cat.jpg").write_bytes(b"cat")
    before = _snapshot(mine)
    line = _one_line_exit_2(_distill(tiny_teacher, mine, "--max-steps", "1", "--overwrite"))
    assert "not an earlier distill run folder (it has no run.json)" in line
    assert _snapshot(mine) == before
    run = tmp_path / "run"  # even beside a run.json, a file no run writes is the user's
    (run / "logs").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "logs" / "train.jsonl").write_text("")
    (run / "logs" / "important.log").write_text("mine")
    before = _snapshot(run)
    line = _one_line_exit_2(_distill(tiny_teacher, run, "--max-steps", "1", "--overwrite"))
    assert "it holds logs/important.log, which is not part of a run" in line
    assert _snapshot(run) == before


def test_out_may_not_be_hold_or_lie_inside_an_input(tiny_teacher, tmp_path):
    teacher_files = _snapshot(tiny_teacher)
    assert "is the input --teacher" in _one_line_exit_2(_distill(tiny_teacher, tiny_teacher, "--overwrite"))
    assert "lies inside the input --teacher" in _one_line_exit_2(_distill(tiny_teacher, tiny_teacher / "run"))
    assert "holds the input --teacher" in _one_line_exit_2(_distill(tiny_teacher, tiny_teacher.parent, "--overwrite"))
    assert _snapshot(tiny_teacher) == teacher_files and not (tiny_teacher / "run").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "prompts.txt").write_text("a red circle on a blue background\n")
    args = ["distill", "--teacher", str(tiny_teacher), "--prompts", str(run / "prompts.txt"), "--out", str(run), "--overwrite"]
    assert "holds the input --prompts" in _one_line_exit_2(CliRunner().invoke(cli, args))
    assert "--out '' names no folder" in _one_line_exit_2(_distill(tiny_teacher, ""))


def test_resume_needs_a_run(tiny_teacher, tmp_path):
    line = _one_line_exit_2(_distill(tiny_teacher, tmp_path / "typo", "--resume"))
    assert "--resume" in line and "holds no run to continue" in line
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    assert "holds no run" in _one_line_exit_2(_distill(tiny_teacher, tmp_path / "empty", "--resume"))
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_failed_start_leaves_no_empty_folders(tmp_path):
    result = _distill(tmp_path / "no-such-teacher", tmp_path / "a" / "b" / "run", "--max-steps", "1")
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_help_documents_keep_checkpoints_and_the_folder_rules():
    text = " ".join(CliRunner().invoke(cli, ["distill", "--help"]).output.split())
    assert "--keep-checkpoints" in text and "(default 2)" in text
    assert "flags not given keep the run's values" in text and "run.json" in text


# ---------------------------------------------------------------- --overwrite


def test_an_interrupted_overwrite_leaves_the_previous_run_usable(tiny_teacher, two_step_run, tmp_path, monkeypatch):
    from swiftbrush import student as student_module
    from swiftbrush.config import build_config
    from swiftbrush.train import distill
    from swiftbrush_runtime.manifest import read_manifest

    out = _copy(two_step_run, tmp_path / "run")
    before = _snapshot(out)
    seen = {}

    def interrupted(*args, **kwargs):
        seen["old student and checkpoints while the new run finished"] = (out / "student" / "manifest.json").is_file() and (
            out / "checkpoints" / "checkpoint-2"
        ).is_dir()
        raise KeyboardInterrupt

    monkeypatch.setattr(student_module, "write_student", interrupted)
    config = build_config("toy", str(tiny_teacher), max_steps=1, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        distill(str(tiny_teacher), "toy", out, config, overwrite=True)
    assert seen == {"old student and checkpoints while the new run finished": True}
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the unfinished replacement is gone
    read_manifest(out / "student", "student", verify=True)


def test_overwrite_replaces_an_earlier_run(tiny_teacher, two_step_run, tmp_path):
    out = _copy(two_step_run, tmp_path / "run")
    result = _distill(tiny_teacher, out, "--max-steps", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1"]
    assert json.loads((out / "student" / "manifest.json").read_text())["made_from"]["steps"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---------------------------------------------------------------- --resume and --keep-checkpoints


def test_resume_keeps_the_runs_own_settings_and_keep_checkpoints_prunes(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    result = _distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "1", "--keep-checkpoints", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    # Killed before its first checkpoint: only run.json records the run. Resumed without --max-steps
    # it trains the run's 2 steps (not the preset's 260), and keeps 1 checkpoint.
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "student")
    result = _distill(tiny_teacher, out, "--resume")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "student" / "manifest.json").read_text())["made_from"]["steps"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    # A given --max-steps extends it; the checkpoint's other settings (1 kept, every step) stay.
    result = _distill(tiny_teacher, out, "--resume", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["config"]["checkpoints_keep"] == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]


def test_keep_checkpoints_must_be_positive(tiny_teacher, tmp_path):
    assert "--keep-checkpoints must be >= 1" in _one_line_exit_2(_distill(tiny_teacher, tmp_path / "r", "--keep-checkpoints", "0"))


# ---------------------------------------------------------------- demo


def _fake_stages(work: Path, target: Path, per_caption: int, seed: int) -> dict:
    report = {"world": "toy", "student": {"steps": 1, "alignment": 1.0, "fd": 0.0}, "per_caption": per_caption}
    (work / "student").mkdir()
    (work / "student" / "weights.safetensors").write_bytes(b"w%d" % seed)
    (work / "report.json").write_text(json.dumps(report))
    return report


def test_demo_replaces_only_its_own_output(tmp_path, monkeypatch):
    from swiftbrush import demo

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years")
    assert "not an earlier demo output" in _one_line_exit_2(CliRunner().invoke(cli, ["demo", "--out", str(mine), "--overwrite"]))
    assert "is not empty" in _one_line_exit_2(CliRunner().invoke(cli, ["demo", "--out", str(mine)]))
    assert (mine / "thesis.txt").read_text() == "four years"

    monkeypatch.setattr(demo, "_print_table", lambda report: None)
    monkeypatch.setattr(demo, "_run_stages", _fake_stages)
    out = tmp_path / "demo"
    demo.run_demo(out, seed=1)
    assert json.loads((out / "manifest.json").read_text())["kind"] == "demo"
    with pytest.raises(InvalidArgumentError, match="pass --overwrite to replace it"):
        demo.run_demo(out, seed=2)
    before = _snapshot(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_run_stages", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(out, seed=2, overwrite=True)
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo", "mine"]
    monkeypatch.setattr(demo, "_run_stages", _fake_stages)
    demo.run_demo(out, seed=2, overwrite=True)
    assert (out / "student" / "weights.safetensors").read_bytes() == b"w2"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="notes.txt"):
        demo.run_demo(out, seed=3, overwrite=True)


def test_an_older_demo_without_a_manifest_is_recognised(tmp_path):
    from swiftbrush.demo import recognise_demo

    old = tmp_path / "demo"
    (old / "student").mkdir(parents=True)
    (old / "report.json").write_text(json.dumps({"world": "toy"}))
    assert recognise_demo(old) is None
    (old / "thesis.txt").write_text("x")
    assert "thesis.txt" in recognise_demo(old)


@pytest.mark.skipif(not (Path(__file__).parents[2] / "swiftbrush" / "toy" / "assets" / "teacher" / "model_index.json").is_file(),
                    reason="the trained toy teacher is not committed")  # fmt: skip
def test_the_real_demo_stages_end_in_one_finished_folder(tmp_path, monkeypatch):
    """Every stage at 2 distill steps (about 30 s): built in a sibling, then one folder marked as the demo's."""
    from swiftbrush import config, demo
    from swiftbrush_runtime.manifest import read_manifest

    build = config.build_config
    monkeypatch.setattr(config, "build_config", lambda *a, **k: build(*a, **{**k, "max_steps": 2, "batch_size": 4}))
    out = tmp_path / "demo"
    report = demo.run_demo(out, per_caption=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert sorted(p.name for p in out.iterdir()) == ["distill", "grid.png", "manifest.json", "onnx", "report.json", "start", "student", "vsd-student"]
    read_manifest(out, "demo", verify=True)
    assert read_manifest(out / "onnx", "onnx")["source"]["student"] == str((out / "student").resolve())  # where the student is now
    assert report["distill"]["run_dir"] == str(out.resolve() / "distill") and report["distill"]["steps"] == 2
    assert report["distill"]["recipe"] == "swiftbrush-v2" and {"start", "vsd_student", "student", "student_vs_start"} <= set(report)
    merge = read_manifest(out / "student", "student")["made_from"]["merge"]  # the final student: the VSD student merged with its start
    assert (merge["a"], merge["b"]) == (str(out.resolve() / "vsd-student"), str(out.resolve() / "start"))
    with pytest.raises(InvalidArgumentError, match="pass --overwrite to replace it"):
        demo.run_demo(out, per_caption=2)
