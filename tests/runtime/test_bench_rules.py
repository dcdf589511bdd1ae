"""bench resolves folders by generate's rule, says which folder each row ran, and checks --json before the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import swiftbrush_runtime.bench
from cli_checks import invoke as _invoke, one_line_exit_2 as _one_line_exit_2




@pytest.mark.parametrize("backend", ["torch", "tensorrt"])
def test_a_backend_for_another_folder_kind_is_refused_as_generate_refuses_it(onnx_fp32: Path, tiny_student: Path, tmp_path: Path, backend: str):
    bench = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--backend", backend, "--iters", "1"))
    generate = _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--backend", backend, "--prompt", "x", "--out", str(tmp_path / "o")))
    assert bench == generate and f"which the {backend} backend cannot run" in bench
    assert str(tiny_student) not in bench  # no folder the user never gave


def test_compare_with_backend_is_refused(onnx_fp32: Path):
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--backend", "torch", "--compare", "onnxruntime,torch"))
    assert "not both" in line


def test_compare_to_a_kind_the_manifests_cannot_reach(onnx_fp32: Path):
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--compare", "onnxruntime,tensorrt", "--iters", "1"))
    assert "--compare tensorrt" in line and "engine directory" in line


def test_unwritable_json_is_refused_before_the_benchmark(onnx_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(swiftbrush_runtime.bench, "bench_backend", never)
    (tmp_path / "afile").write_text("x")
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--json", str(tmp_path / "afile" / "b.json")))
    assert "--json" in line and "not writable" in line


def test_every_row_names_its_folder(onnx_fp32: Path, tiny_student: Path, tmp_path: Path):
    r = _invoke("bench", "--model", str(onnx_fp32), "--compare", "onnxruntime,torch", "--iters", "1", "--warmup", "0", "--json", str(tmp_path / "b.json"))
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.output.splitlines() if line.startswith(("onnxruntime", "torch"))}
    assert rows["onnxruntime"].endswith(str(onnx_fp32)) and rows["torch"].endswith(str(tiny_student))
    report = json.loads((tmp_path / "b.json").read_text())
    assert [x["model"] for x in report["results"]] == [str(onnx_fp32), str(tiny_student)]


def test_the_mismatch_message_reads_right(tiny_student: Path):
    line = _one_line_exit_2(_invoke("bench", "--model", str(tiny_student), "--backend", "onnxruntime", "--iters", "1"))
    assert f"{tiny_student} is a student directory" in line and "export it first" in line  # not "an student"
