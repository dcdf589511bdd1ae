"""python -m benchmarks.gpu_bench --tiny on CPU: the real command, every case, checked for shape and parity, never for speed.

The fp8 case needs a CUDA GPU of compute capability >= 8.9, so here it is a skip record; with
torchao installed, it also runs for real on CPU with torchao's GPU check lifted (torch's CPU
_scaled_mm does the float8 matmuls), so the code a GPU slot runs has run once before.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]
CASES = ["eager", "levers", "compile_graph", "compile_channels_last", "fp8", "runtime_torch", "runtime_torch_compile", "runtime_ort", "runtime_trt"]
LEVERS = ["fp16 NCHW", "+ channels-last UNet, TAESD", "+ fused q/k/v"]
FP8_ROWS = ["fp8: per-tensor", "fp8: per-row, bf16 UNet"]


@pytest.fixture(scope="module")
def gpu_bench() -> ModuleType:
    return importlib.import_module("benchmarks.gpu_bench")  # the package at the repo root (pytest's pythonpath)


def test_tiny_run_reports_every_case_with_fp32_parity(tmp_path: Path, tiny_student: Path):
    cmd = [
        sys.executable, "-m", "benchmarks.gpu_bench", "--tiny", "--device", "cpu", "--out", str(tmp_path),
        "--cases", ",".join(CASES), "--decoders", "vae,taesd", "--batches", "1,2", "--iters", "1", "--warmup", "0",
        "--toy-quality", str(tiny_student), "--profile",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())

    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"]
    flops = report["flops_per_image"]
    assert set(flops) == {"text_encoder", "unet", "vae", "taesd"} and all(v > 0 for v in flops.values())

    rows = report["cases"]
    assert {r["case"] for r in rows} == (set(CASES) - {"levers"}) | {f"levers: {lever}" for lever in LEVERS}
    skipped = {r["case"]: r["reason"] for r in rows if r["status"] != "ok"}
    assert set(skipped) == {"runtime_trt", "fp8"} and "CUDA" in skipped["runtime_trt"]  # ORT runs on its CPU provider here
    assert "torchao" in skipped["fp8"]  # not installed, or installed and refusing a CPU
    ok = [r for r in rows if r["status"] == "ok"]
    for case in ("eager", "compile_graph", "compile_channels_last", "runtime_torch", "runtime_torch_compile", "runtime_ort"):
        assert sorted((r["decoder"], r["batch"]) for r in ok if r["case"] == case) == [("taesd", 1), ("taesd", 2), ("vae", 1), ("vae", 2)], case
    for lever in LEVERS:  # batch 1 only, each decoder
        assert sorted((r["decoder"], r["batch"]) for r in ok if r["case"] == f"levers: {lever}") == [("taesd", 1), ("vae", 1)], lever
    for r in ok:
        p = r["parity"]
        assert p["finite"] and p["pass"] and p["max_abs_err_01"] <= 1e-4, (r["case"], r["decoder"], r["batch"], p)
        runtime = r["case"].startswith("runtime_")
        extra = {"end_to_end_float", "end_to_end_cached_prompts"} if runtime else set()
        assert set(r["timings"]) == {"text_encoder", "unet", "decoder", "end_to_end"} | extra
        if runtime:  # generate()'s uint8 images are exactly the float ones rounded, on every backend
            assert r["uint8_matches_float"] is True, r["case"]
            prof = r["profile"]  # --profile: 5 warm generate() calls; torch ops only where torch runs them
            assert prof["calls"] == 5 and prof["wall_ms_per_call"] > 0 and prof["device_busy_ms_per_call"] is None
            assert bool(prof["top_host"]) == r["case"].startswith("runtime_torch"), (r["case"], prof["top_host"][:2])
        assert r["timings"]["end_to_end"]["floor_ms"] > 0 and r["peak_gib"] is None  # no GPU memory on CPU

    toy = report["toy_quality"]  # the random tiny student scored in fp32; FP8 refused on CPU
    assert toy["images"] == 288 and [r["unet"] for r in toy["rows"]] == ["fp32", "fp8"]
    fp32, fp8 = toy["rows"]
    assert fp32["status"] == "ok" and 0 <= fp32["alignment"] <= 1 and fp32["fd"] > 0 and fp32["max_abs_diff_vs_fp32_uint8"] == 0
    assert fp8["status"] == "skipped" and fp8["reason"] == skipped["fp8"]

    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("Toy quality (") for line in lines) and "| fp32 |" in proc.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("| case | decoder | batch | text enc"))
    table = lines[header : header + 2 + len(rows)]
    assert all(line.startswith("|") for line in table) and not lines[header + 2 + len(rows)].startswith("|")
    runtime_rows = [r for r in ok if r["case"].startswith("runtime_")]
    runtime_table = lines[-2 - len(runtime_rows) :]  # the runtime's uint8 / float / cached-prompt table is printed last
    assert runtime_table[0].startswith("| case | decoder | batch | e2e uint8 ms") and all(line.startswith("|") for line in runtime_table)


def test_fp8_filter_keeps_scaled_mm_shapes_and_leaves_time_embedding_and_torchao_128x128_out(gpu_bench: ModuleType):
    import torch

    from benchmarks.fp8 import fp8_filter

    per_tensor, per_row = fp8_filter("tensor"), fp8_filter("row")
    for keep in (per_tensor, per_row):
        assert keep(torch.nn.Linear(320, 1280), "down_blocks.0.attentions.0.proj_in")
        assert not keep(torch.nn.Linear(320, 1280), "down_blocks.0.resnets.0.time_emb_proj")
        assert not keep(torch.nn.Linear(320, 1280), "time_embedding.linear_1")
        assert not keep(torch.nn.Linear(320, 100), "x") and not keep(torch.nn.Linear(40, 320), "x")  # not multiples of 16
        assert not keep(torch.nn.Conv2d(320, 320, 3), "conv_in")
    assert per_row(torch.nn.Linear(128, 128), "to_q") and not per_tensor(torch.nn.Linear(128, 128), "to_q")
    assert per_tensor(torch.nn.Linear(128, 256), "to_q")


def _lift_torchaos_gpu_check(gpu_bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchao's quantize_ refuses float8 without CUDA >= 8.9; CPU _scaled_mm (torch 2.13) runs the matmuls anyway."""
    quant_api = pytest.importorskip("torchao.quantization.quant_api")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularities: None)
    monkeypatch.setattr(gpu_bench, "fp8_unavailable", lambda device: None)


def _tiny(out: Path, *args: str) -> list[str]:
    return ["--tiny", "--device", "cpu", "--out", str(out), "--iters", "1", "--warmup", "0", "--batches", "1", *args]


def test_fp8_case_runs_on_cpu_beside_compile_graph(gpu_bench: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import torch
    from diffusers import UNet2DConditionModel

    _lift_torchaos_gpu_check(gpu_bench, monkeypatch)
    report = gpu_bench.main(_tiny(tmp_path, "--cases", "compile_graph,fp8", "--decoders", "taesd", "--fp8-granularity", "tensor,row"))

    rows = {r["case"]: r for r in report["cases"]}
    assert set(rows) == {"compile_graph", *FP8_ROWS} and all(r["status"] == "ok" for r in rows.values()), report["cases"]
    from benchmarks.sd_configs import TINY_UNET

    unet = UNet2DConditionModel(**TINY_UNET)
    linear = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]
    time_embedding = [n for n in linear if "time_emb" in n]
    assert time_embedding  # the tiny UNet has no 128x128 Linear: only these stay unquantised
    for name, dtype in zip(FP8_ROWS, ("float32", "bfloat16")):
        r = rows[name]
        f = r["fp8"]
        assert f["unet_dtype"] == dtype and f["linear_total"] == len(linear) and f["linear_quantised"] == len(linear) - len(time_embedding)
        assert 0.1 < f["linear_share_of_unet_flops"] < 1
        p, vs = r["parity"], r["vs_compile_graph"]
        # FP8 moves the image (past fp32's 1e-4) but keeps it an image; compile_graph here equals the fp32 reference
        assert p["finite"] and 1e-3 < p["max_abs_err_01"] < 0.1 and not p["pass"], p
        assert abs(vs["max_abs_err_01"] - p["max_abs_err_01"]) <= 1e-4, (vs, p)
    table = gpu_bench.format_table(report)
    assert "FP8 beside compile_graph" in table and table.count("| fp8: per-") == 4  # its own table and the main one


def test_toy_quality_scores_the_student_with_an_fp8_unet_on_cpu(gpu_bench: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_student: Path):
    _lift_torchaos_gpu_check(gpu_bench, monkeypatch)
    # per-row only: torch's CPU _scaled_mm takes minutes for per-tensor scales at 288 images (per-row: seconds)
    report = gpu_bench.main(_tiny(tmp_path, "--cases", "runtime_trt", "--fp8-granularity", "row", "--toy-quality", str(tiny_student)))

    toy = report["toy_quality"]
    assert [r["unet"] for r in toy["rows"]] == ["fp32", "bf16", "fp8: per-row, bf16 UNet"] and all(r["status"] == "ok" for r in toy["rows"]), toy
    fp32, bf16, fp8 = toy["rows"]
    assert fp32["max_abs_diff_vs_fp32_uint8"] == 0 and "fp8" not in bf16
    # the toy UNet's 128x128 layers are kept per-row; only the time-embedding ones stay out
    assert fp8["fp8"]["granularity"] == "row" and 0 < fp8["fp8"]["linear_quantised"] < fp8["fp8"]["linear_total"]
    assert fp8["mean_abs_diff_vs_fp32_uint8"] > 0 and all(0 <= r["alignment"] <= 1 and r["fd"] > 0 for r in toy["rows"])
