"""`swiftbrush eval` end to end on the committed toy teacher (reduced grid)."""

import json

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli


def test_teacher_25_steps_is_aligned_and_one_step_is_not(tmp_path):
    runner = CliRunner()
    multi = runner.invoke(cli, ["eval", "--model", "toy-teacher", "--steps", "25", "--per-caption", "2", "--json", str(tmp_path / "m.json")])
    assert multi.exit_code == 0, multi.output
    one = runner.invoke(cli, ["eval", "--model", "toy-teacher", "--steps", "1", "--per-caption", "2"])
    assert one.exit_code == 0, one.output
    m = json.loads((tmp_path / "m.json").read_text())
    o = json.loads(one.stdout)  # the progress bar goes to stderr
    assert m["images"] == 72 and m["steps"] == 25
    assert m["alignment"] >= 0.85  # full-grid bar is 0.90 (benchmarks/RESULTS.md); 72 images are noisier
    assert o["alignment"] < m["alignment"] and o["fd"] > m["fd"]


def test_bad_guidance_scale_exits_2():
    result = CliRunner().invoke(cli, ["eval", "--model", "toy-teacher", "--guidance-scale", "-1", "--per-caption", "1", "--steps", "1"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "args, words",
    [
        (["--guidance-scale", "nan"], "finite number >= 0, got nan"),  # sampled nan images before
        (["--seed", "-1"], "--seed"),
        (["--json", "{afile}/sub/scores.json"], "not writable"),  # refused before the sampling, not after it
    ],
)
def test_eval_bad_input_is_one_line(tmp_path, args, words):
    (tmp_path / "afile").write_text("x")
    args = [a.format(afile=tmp_path / "afile") for a in args]
    result = CliRunner().invoke(cli, ["eval", "--model", "toy-teacher", "--per-caption", "1", "--steps", "1", *args])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output


def test_an_os_error_mid_run_is_one_line_exit_1(monkeypatch):
    """A full disk or a vanished path: one line naming the file, exit 1, no traceback."""
    import swiftbrush.evaluate

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/out/scores.json")

    monkeypatch.setattr(swiftbrush.evaluate, "evaluate_model", full_disk)
    result = CliRunner().invoke(cli, ["eval", "--model", "toy-teacher"])
    assert result.exit_code == 1 and result.output == "error: [Errno 28] No space left on device: '/data/out/scores.json'\n", result.output
