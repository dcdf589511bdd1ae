"""benchmarks/gpu_bench.py --tiny on CPU: the real command, every case, checked for shape and parity, never for speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
CASES = ["eager", "levers", "compile_graph", "runtime_torch", "runtime_torch_compile", "runtime_ort", "runtime_trt"]
LEVERS = ["fp16 NCHW", "+ channels-last UNet, TAESD", "+ fused q/k/v"]


def test_tiny_run_reports_every_case_with_fp32_parity(tmp_path: Path):
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--device", "cpu", "--out", str(tmp_path),
        "--cases", ",".join(CASES), "--decoders", "vae,taesd", "--batches", "1,2", "--iters", "1", "--warmup", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())

    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"]
    flops = report["flops_per_image"]
    assert set(flops) == {"text_encoder", "unet", "vae", "taesd"} and all(v > 0 for v in flops.values())

    rows = report["cases"]
    assert {r["case"] for r in rows} == (set(CASES) - {"levers"}) | {f"levers: {lever}" for lever in LEVERS}
    skipped = {r["case"]: r["reason"] for r in rows if r["status"] != "ok"}
    assert list(skipped) == ["runtime_trt"] and "CUDA" in skipped["runtime_trt"]  # ORT runs on its CPU provider here
    ok = [r for r in rows if r["status"] == "ok"]
    for case in ("eager", "compile_graph", "runtime_torch", "runtime_torch_compile", "runtime_ort"):
        assert sorted((r["decoder"], r["batch"]) for r in ok if r["case"] == case) == [("taesd", 1), ("taesd", 2), ("vae", 1), ("vae", 2)], case
    for lever in LEVERS:  # batch 1 only, each decoder
        assert sorted((r["decoder"], r["batch"]) for r in ok if r["case"] == f"levers: {lever}") == [("taesd", 1), ("vae", 1)], lever
    for r in ok:
        p = r["parity"]
        assert p["finite"] and p["pass"] and p["max_abs_err_01"] <= 1e-4, (r["case"], r["decoder"], r["batch"], p)
        assert set(r["timings"]) == {"text_encoder", "unet", "decoder", "end_to_end"}
        assert r["timings"]["end_to_end"]["floor_ms"] > 0 and r["peak_gib"] is None  # no GPU memory on CPU

    lines = proc.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| case |"))
    table = lines[header:]
    assert all(line.startswith("|") for line in table)  # the table is the last thing printed
    assert len(table) == 2 + len(rows)
