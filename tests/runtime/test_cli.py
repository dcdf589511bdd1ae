"""generate / bench / doctor through the CLI: files written, one-line exit 2 on bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from cli_checks import invoke as _invoke, one_line_exit_2 as _one_line_exit_2




def test_generate_writes_pngs(onnx_fp32: Path, tmp_path: Path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle on a blue background\n\ngreen square\nblue\n\n")  # blank lines are skipped
    r = _invoke("generate", "--model", str(onnx_fp32), "--prompts", str(prompts), "--seed", "4", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png", "grid.png", "images.jsonl", "manifest.json"]
    assert Image.open(tmp_path / "out" / "0001.png").size == (64, 64)
    # the noise of a list's first prompt is the noise of that prompt alone (numpy fills row by row)
    r2 = _invoke("generate", "--model", str(onnx_fp32), "--prompt", "a red circle on a blue background", "--seed", "4", "--out", str(tmp_path / "one"))
    assert r2.exit_code == 0, r2.output
    assert Image.open(tmp_path / "one" / "0000.png").tobytes() == Image.open(tmp_path / "out" / "0000.png").tobytes()
    # a dynamic export takes another size per call
    r3 = _invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--height", "32", "--width", "48", "--out", str(tmp_path / "size"))
    assert r3.exit_code == 0, r3.output
    assert Image.open(tmp_path / "size" / "0000.png").size == (48, 32)


def test_generate_bad_inputs(onnx_fp32: Path, tiny_student: Path, tmp_path: Path):
    out = str(tmp_path / "o")
    assert "--seed must be an integer" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--seed", "1.5", "--out", out))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "is empty" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompts", str(empty), "--out", out))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x89PNG\x00\x01\xff")
    assert "not a text file" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompts", str(binary), "--out", out))
    assert "no prompts" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--out", out))
    assert "--height must be an integer" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--height", "big", "--out", out))
    assert "multiple of 8" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--width", "60", "--out", out))
    # not "re-export with --height 100000", which export refuses; a student directory would try to allocate it
    assert "at most 4096" in _one_line_exit_2(_invoke("generate", "--model", str(tiny_student), "--prompt", "x", "--height", "100000", "--out", out))
    (tmp_path / "plain").mkdir()
    assert "no manifest.json" in _one_line_exit_2(_invoke("generate", "--model", str(tmp_path / "plain"), "--prompt", "x", "--out", out))
    assert "--backend" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--backend", "tpu", "--out", out))
    assert "non-negative" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--seed", "-1", "--out", out))
    assert not Path(out).exists()  # the refused calls left no empty --out behind
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(afile)))
    assert "not writable" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(afile / "sub")))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert "not writable" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(ro / "sub")))


def test_export_onnx_cli_bad_input(tiny_student: Path, tmp_path: Path):
    assert "multiple of 8" in _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tmp_path / "x"), "--height", "500"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert "not empty" in _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tmp_path / "full")))
    (tmp_path / "plain").mkdir()
    assert "not a student directory" in _one_line_exit_2(_invoke("export", "onnx", "--student", str(tmp_path / "plain"), "--out", str(tmp_path / "y")))
    assert "--opset 11" in _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tmp_path / "z"), "--opset", "11"))
    (tmp_path / "afile").write_text("x")  # a folder under a file cannot be made, not even by root
    assert "not writable" in _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tmp_path / "afile" / "sub" / "onnx")))


def test_bench_compare_json(onnx_fp32: Path, tmp_path: Path):
    r = _invoke("bench", "--model", str(onnx_fp32), "--compare", "onnxruntime,torch", "--iters", "2", "--warmup", "1", "--json", str(tmp_path / "b.json"))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert [x["backend"] for x in report["results"]] == ["onnxruntime", "torch"]
    for x in report["results"]:
        assert x["end_to_end"]["p50_ms"] > 0 and set(x["components"]) == {"text_encoder", "unet", "decoder"}
        assert x["images_per_second"] > 0 and "numpy" in x["versions"]
    assert "onnxruntime" in r.output and "torch" in r.output


def test_doctor():
    r = _invoke("doctor", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["backends"]["onnxruntime"].startswith("ok")
    assert set(report["backends"]) == {"onnxruntime", "tensorrt", "tensorrt-rtx", "torch"}


def test_bench_compile_needs_the_torch_backend(onnx_fp32: Path):
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--compile", "--iters", "1"))
    assert "--compile applies to the torch backend only" in line


def test_bench_batch_above_maximum(onnx_fp16: Path):
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp16), "--batch", "4", "--iters", "1"))
    assert "--batch 4 is above the largest batch" in line and "re-export with --batch 4" in line


def test_decoder_choice(tiny_student: Path, onnx_fp32: Path, tmp_path: Path):
    """--decoder picks the tiny decoder where the directory has one, and says how to get one where not."""
    import shutil

    from swiftbrush_runtime.manifest import read_manifest, write_manifest

    r = _invoke("generate", "--model", str(tiny_student), "--backend", "torch", "--decoder", "taesd", "--prompt", "x", "--out", str(tmp_path / "t"))
    assert r.exit_code == 0, r.output
    vae = _invoke("generate", "--model", str(tiny_student), "--backend", "torch", "--prompt", "x", "--out", str(tmp_path / "v"))
    assert vae.exit_code == 0, vae.output
    assert Image.open(tmp_path / "t" / "0000.png").tobytes() != Image.open(tmp_path / "v" / "0000.png").tobytes()

    line = _one_line_exit_2(_invoke("generate", "--model", str(tiny_student), "--decoder", "vqgan", "--prompt", "x", "--out", str(tmp_path / "b")))
    assert "--decoder must be vae or taesd" in line
    plain = tmp_path / "student"  # the same student without its taesd/ folder, manifest rewritten
    shutil.copytree(tiny_student, plain, ignore=shutil.ignore_patterns("taesd"))
    fields = {k: v for k, v in read_manifest(plain, "student", verify=False).items() if k not in ("kind", "format_version", "files")}
    write_manifest(plain, "student", **fields)
    line = _one_line_exit_2(_invoke("generate", "--model", str(plain), "--decoder", "taesd", "--prompt", "x", "--out", str(tmp_path / "c")))
    assert "has no taesd/ folder" in line and "--decoder vae" in line
    line = _one_line_exit_2(_invoke("bench", "--model", str(onnx_fp32), "--decoder", "taesd", "--iters", "1"))
    assert "re-export with --decoder taesd" in line
