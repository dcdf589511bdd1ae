"""One prompt reader for generate and distill: the same BOM, blank-line, stdin and format rules."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush.prompts import load_prompts
from swiftbrush_runtime.commands import read_prompts as generate_prompts
from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.prompts import RULES, read_prompts

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    "name, content",
    [
        ("p.txt", BOM + b"a cat\r\n\n  \na dog\n"),
        ("p.jsonl", BOM + b'{"prompt": "a cat"}\n\n{"caption": "a dog"}\n'),
        ("p.json", BOM + json.dumps(["a cat", "", {"prompt": "a dog"}]).encode()),
        ("prompts", BOM + b"a cat\n\na dog"),  # no suffix: text
    ],
)
def test_every_command_reads_the_same_prompts(tmp_path: Path, name: str, content: bytes):
    """A BOM is dropped and blank prompts are skipped in every format, for generate and distill alike."""
    f = tmp_path / name
    f.write_bytes(content)
    assert read_prompts(f).prompts == ["a cat", "a dog"]
    assert load_prompts(f).prompts == ["a cat", "a dog"]  # distill (a BOM stayed in its first .txt prompt; .json refused it)
    if f.suffix not in (".json", ".jsonl"):
        assert generate_prompts(f) == ["a cat", "a dog"]  # generate (blank lines were unconditional prompts)


def test_stdin(tmp_path: Path):
    ps = read_prompts("-", stdin=io.BytesIO(BOM + b"a cat\n\na dog\n"))
    assert ps.prompts == ["a cat", "a dog"] and ps.source == "<stdin>" and ps.skipped_blank == 1
    with pytest.raises(InvalidArgumentError, match="<stdin> is empty"):
        read_prompts("-", stdin=io.BytesIO(b"\n\n"))


def test_distill_refuses_stdin_in_a_multi_process_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InvalidArgumentError, match="one process only"):
        load_prompts("-")


def test_non_utf8_lines_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    f = tmp_path / "p.txt"
    f.write_bytes(b"a cat\n\xff broken\na dog\n")
    ps = read_prompts(f)
    assert ps.prompts == ["a cat", "a dog"] and ps.skipped_non_utf8 == 1
    assert "skipped 1 line(s) that are not valid UTF-8" in caplog.text


def test_generate_reads_stdin_and_help_states_the_rule(onnx_fp32: Path, tmp_path: Path):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["generate", "--model", str(onnx_fp32), "--prompts", "-", "--out", str(out)], input="a red circle\n\na blue square\n")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("0*.png")) == ["0000.png", "0001.png"]
    for command in (["generate"], ["distill"]):
        text = " ".join(CliRunner().invoke(cli, [*command, "--help"]).output.split())
        assert "blank lines are skipped" in text and "'-' reads stdin" in text, text
    assert "blank lines are skipped" in RULES
