"""Every command's --help and bad flags behave alike: INTEGER options, help on every option, one-line errors."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from swiftbrush.cli import cli
from swiftbrush_runtime.cli_options import probe_output_file
from swiftbrush_runtime.errors import InvalidArgumentError
from cli_checks import invoke as _invoke, one_line_exit_2 as _one_line_exit_2


def _commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command




def test_every_option_has_help_and_integers_are_typed():
    for path, command in _commands():
        for p in command.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            assert p.help, f"{' '.join(path)} {p.opts[0]} has no help"
            assert not isinstance(p.default, str) or not p.default.lstrip("-").isdigit(), f"{' '.join(path)} {p.opts[0]} is an integer typed as TEXT"


@pytest.mark.parametrize(
    "args, words",
    [
        (["bench", "--model", "m", "--iters", "many"], "--iters must be an integer, got 'many'"),
        (["bench", "--model", "m", "--batch", "0"], "--batch must be an integer >= 1, got 0"),
        (["eval", "--model", "toy-teacher", "--steps", "0"], "--steps must be an integer in 1..1000, got 0"),
        (["distill", "--teacher", "toy", "--prompts", "toy", "--out", "o", "--seed", "x"], "--seed must be an integer"),
        (["export", "onnx", "--student", "s", "--out", "o", "--batch", "2.5"], "--batch must be an integer"),
        (["export", "onnx", "--student", "s", "--out", "o", "--dtype", "fp8"], "Invalid value for '--dtype'"),
        (["generate", "--prompt", "x", "--out", "o"], "Missing option '--model'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_bad_flags_are_one_line(args, words):
    assert words in _one_line_exit_2(_invoke(*args))


def test_ignored_export_combinations_are_refused(tmp_path: Path):
    line = _one_line_exit_2(_invoke("export", "onnx", "--student", "s", "--out", str(tmp_path / "o"), "--fp32-layers", "none"))
    assert "--fp32-layers applies to --dtype fp16 only" in line
    line = _one_line_exit_2(_invoke("export", "onnx", "--student", "s", "--out", str(tmp_path / "o"), "--taesd", "toy"))
    assert "--taesd applies to --decoder taesd only" in line
    assert not (tmp_path / "o").exists()


def test_help_texts():
    distill = " ".join(_invoke("distill", "--help").output.split())
    assert "Defaults per --preset" in distill
    for flag, toy in (("--max-steps", "260"), ("--batch-size", "32"), ("--lora-rank", "16")):
        assert f"{flag} " in distill and toy in distill
    opset = " ".join(_invoke("export", "onnx", "--help").output.split())
    assert "16 for jetpack5 (TensorRT 8.5" in opset and "else 17" in opset  # as docs/JETSON.md's table says
    jetson = (Path(__file__).parents[2] / "docs" / "JETSON.md").read_text()
    assert "| 10.3 | `--target jetpack6` (opset 17) |" in jetson and "`--target jetpack5` (opset 16" in jetson
    bench = _invoke("bench", "--help").output
    assert "--iters INTEGER" in bench and "--batch INTEGER" in bench


def test_probe_output_file(tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not writable"):
        probe_output_file(tmp_path / "afile" / "r.json", "--json")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        probe_output_file(tmp_path, "--json")
    assert probe_output_file(tmp_path / "new" / "r.json", "--json") == tmp_path / "new" / "r.json"
    assert list((tmp_path / "new").iterdir()) == []  # the probe leaves nothing behind
