"""On a GPU machine: TensorRT engines and ONNX Runtime CUDA against the CPU reference (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swiftbrush_runtime import Generator

PROMPTS = ["a red circle on a blue background", "green square", ""]
pytestmark = pytest.mark.gpu


def _max_err01(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.clip(a, -1, 1) - np.clip(b, -1, 1)).max() / 2)


def test_onnxruntime_cuda_io_binding(onnx_fp16: Path, onnx_fp32: Path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu not installed")
    ref = Generator.load(onnx_fp32, device="cpu").generate(PROMPTS, seed=0, output="float")
    gpu = Generator.load(onnx_fp16, device="cuda")
    assert gpu.backend.device == "cuda"
    out = gpu.generate(PROMPTS, seed=0, output="float")
    assert np.isfinite(out).all() and _max_err01(out, ref) < 2 / 255


@pytest.mark.parametrize("backend", ["tensorrt", "tensorrt-rtx"])
@pytest.mark.parametrize("static", [True, False])
def test_tensorrt_engines(onnx_fp16: Path, onnx_fp32: Path, tmp_path: Path, static: bool, backend: str):
    """Build in one process, run in another: a plugin layer (GroupNorm on 8.5/8.6) loads only after plugin registration."""
    import subprocess
    import sys

    from swiftbrush_runtime.backends.base import BackendUnavailableError
    from swiftbrush_runtime.backends.trt import import_engine_module

    try:
        import_engine_module(backend)
    except BackendUnavailableError as e:  # not installed; anything else is a failure
        pytest.skip(str(e))
    src = onnx_fp16 if static else onnx_fp32
    cache = ", timing_cache=" + repr(str(tmp_path / "cache.bin")) if backend == "tensorrt" else ""
    build = (
        "from swiftbrush_export.engine import build_engines\n"
        f"build_engines({str(src)!r}, {str(tmp_path / 'engine')!r}, backend={backend!r}, dynamic={not static}{cache})\n"
    )
    r = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    if backend == "tensorrt":
        assert (tmp_path / "cache.bin").is_file()
    ref = Generator.load(onnx_fp32, device="cpu").generate(PROMPTS, seed=0, output="float")
    with Generator.load(tmp_path / "engine") as gen:
        assert gen.backend.name == backend
        a = gen.generate(PROMPTS, seed=0, output="float")
        b = gen.generate(PROMPTS, seed=0, output="float")  # second call replays the CUDA graph when static
        assert np.array_equal(a, b)
        assert np.isfinite(a).all() and _max_err01(a, ref) < 2 / 255
    if backend == "tensorrt-rtx":
        assert (tmp_path / "engine" / "runtime_cache.bin").is_file()  # JIT kernels kept for the next run


def test_torch_cuda_fp16(tiny_student: Path, onnx_fp32: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    ref = Generator.load(onnx_fp32, device="cpu").generate(PROMPTS, seed=0, output="float")
    gen = Generator.load(tiny_student, backend="torch", device="cuda")
    out = gen.generate(PROMPTS, seed=0, output="float")
    assert np.isfinite(out).all() and _max_err01(out, ref) < 2 / 255
    # The per-stage calls (each under its own CUDA graph) give what the whole-pipeline graph gives.
    b = gen.backend
    ids, _ = gen.tokenizer.encode(PROMPTS)
    z = gen.noise(len(PROMPTS), 0)
    emb = b.encode(ids)
    staged = b.decode(b.denoise(z, emb))
    assert np.abs(staged - b.run(z, emb)).max() < 2e-3
    from swiftbrush_runtime.images import to_uint8

    np.testing.assert_array_equal(b.run_uint8(z, emb), to_uint8(b.run(z, emb)))  # converted on the GPU, same rounding
    assert np.array_equal(b.encode(ids), emb)  # replayed graph, same result
    mem = b.memory()
    assert 0 < mem["allocated_bytes"] <= mem["peak_allocated_bytes"]
