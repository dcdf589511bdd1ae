"""The base install (no torch): commands that need an extra say which, in one line, exit 2.

The training stack is hidden from a fresh interpreter (None in sys.modules makes its
import fail as if it were not installed), rather than building a second virtual environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HIDE = ("torch", "diffusers", "transformers", "peft", "accelerate", "onnx", "optimum", "onnxslim", "onnxconverter_common", "scipy", "tqdm")
RUN = f"""
import sys
for name in {HIDE!r}:
    sys.modules[name] = None
from swiftbrush.cli import main
sys.argv = ["swiftbrush", *sys.argv[1:]]
main()
"""


def _swiftbrush(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, extra",
    [
        (["distill", "--teacher", "toy", "--prompts", "toy", "--out", "{tmp}/run"], "train"),
        (["eval", "--model", "toy-teacher"], "train"),
        (["demo", "--out", "{tmp}/demo"], "train,export"),
        (["export", "onnx", "--student", "{tmp}", "--out", "{tmp}/onnx"], "train,export"),
    ],
)
def test_missing_extra_is_one_line(tmp_path: Path, args: list[str], extra: str):
    r = _swiftbrush(*(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"pip install 'swiftbrush[{extra}]'" in lines[0] and "is not installed" in lines[0], lines[0]


def test_runtime_commands_and_help_still_work_without_the_training_stack():
    r = _swiftbrush("doctor")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout
    for command in (["distill"], ["eval"], ["export", "onnx"]):
        r = _swiftbrush(*command, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, r.stderr
    assert "Defaults per --preset" in _swiftbrush("distill", "--help").stdout


def test_an_export_only_gap_names_the_export_extra(tmp_path: Path):
    """With the training stack present but not the export one, demo names [train,export], not a traceback."""
    code = RUN.replace(repr(HIDE), repr(("onnx", "optimum", "onnxslim", "onnxconverter_common")))
    r = subprocess.run([sys.executable, "-c", code, "demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "pip install 'swiftbrush[train,export]'" in r.stderr and "onnx is not installed" in r.stderr
