"""doctor: versions from package metadata, aligned columns, no CUDA call without a GPU, the backend's own TensorRT hint."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import swiftbrush_runtime.cuda
from swiftbrush.cli import cli
from swiftbrush_runtime import doctor


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_cuda(*args, **kwargs):
        raise AssertionError("the CUDA runtime was asked on a machine without a GPU")

    monkeypatch.setattr(doctor, "_nvidia_smi", lambda: [])
    monkeypatch.setattr(doctor, "_jetson", lambda: None)
    monkeypatch.setattr(doctor, "NVIDIA_DEVICE", tmp_path / "nvidia0")
    monkeypatch.setattr(swiftbrush_runtime.cuda, "gpu_identity", no_cuda)


def test_versions_come_from_metadata(no_gpu: None):
    report = doctor.doctor_report()
    assert report["packages"]["swiftbrush"] == metadata.version("swiftbrush")
    assert report["packages"]["optimum"] == metadata.version("optimum")  # a namespace package: its import has no __version__
    assert report["gpu"]["cuda_runtime"] == "none: no NVIDIA GPU found"
    assert "insufficient" not in json.dumps(report)


def test_tensorrt_hint_is_the_backends_own(no_gpu: None):
    from swiftbrush_runtime.backends.base import BackendUnavailableError
    from swiftbrush_runtime.backends.trt import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        assert doctor.doctor_report()["backends"]["tensorrt"] == str(e)
    else:
        pytest.skip("TensorRT is installed here")


def test_columns_are_aligned(no_gpu: None):
    report = doctor.doctor_report()
    lines = doctor.format_report(report).splitlines()
    names = ["python", *report["packages"], "gpu"]
    rows = [next(line for line in lines if line.startswith(name + " ")) for name in names]
    starts = {len(row) - len(row[len(name) :].lstrip()) for name, row in zip(names, rows)}
    assert len(starts) == 1, "\n".join(lines)  # every value starts in the same column
    assert f"transformers  {metadata.version('transformers')}" in "\n".join(lines)  # not run together


def test_doctor_imports_no_torch():
    code = "import sys; from swiftbrush_runtime.doctor import doctor_report; doctor_report(); print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'optimum', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_json_to_a_file_or_stdout(tmp_path: Path):
    r = CliRunner().invoke(cli, ["doctor", "--json", str(tmp_path / "d.json")])
    assert r.exit_code == 0 and r.stdout == "", r.output
    assert set(json.loads((tmp_path / "d.json").read_text())["backends"]) == {"onnxruntime", "tensorrt", "tensorrt-rtx", "torch"}
    r = CliRunner().invoke(cli, ["doctor", "--json"])
    assert r.exit_code == 0 and "swiftbrush" in json.loads(r.stdout)["packages"]


def test_a_gpu_machine(monkeypatch: pytest.MonkeyPatch):
    """Where nvidia-smi lists a GPU the CUDA runtime is asked, and a failure there is reported, not raised."""
    monkeypatch.setattr(doctor, "_nvidia_smi", lambda: ["GPU 0: NVIDIA H200 (UUID: GPU-1)"])
    monkeypatch.setattr(swiftbrush_runtime.cuda, "gpu_identity", lambda device=0: {"name": "NVIDIA H200", "compute_capability": "90"})
    report = doctor.doctor_report()
    assert report["gpu"]["cuda_runtime"] == "ok" and "NVIDIA H200 sm90" in doctor.format_report(report)

    def broken(device=0):
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version\nsecond line")

    monkeypatch.setattr(swiftbrush_runtime.cuda, "gpu_identity", broken)
    text = doctor.format_report(doctor.doctor_report())
    assert "GPU 0: NVIDIA H200 (UUID: GPU-1); cuda runtime unavailable (CUDA driver version is insufficient" in text and "second line" not in text


def test_json_report_never_replaces_a_file_it_did_not_write(tmp_path):
    """--json FILE replaces an earlier report, and refuses a user's file (one line, exit 2, file unchanged)."""
    from cli_checks import invoke, one_line_exit_2

    notes = tmp_path / "notes.txt"
    notes.write_text("my thesis\n")
    line = one_line_exit_2(invoke("doctor", "--json", str(notes)))
    assert "exists and is not a JSON report" in line and notes.read_text() == "my thesis\n"
    report = tmp_path / "doctor.json"
    assert invoke("doctor", "--json", str(report)).exit_code == 0
    assert invoke("doctor", "--json", str(report)).exit_code == 0  # its own earlier report is replaced
    assert "backends" in json.loads(report.read_text())
