"""export engine without TensorRT: argument checks, profiles, the missing-TensorRT exit, and engine refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush_export.engine import engine_profiles
from swiftbrush_runtime.backends.trt import EngineMismatchError, check_engine_compat
from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.manifest import read_manifest
from cli_checks import one_line_exit_2 as _one_line_exit_2


def test_profiles_static_and_dynamic(onnx_fp32: Path, onnx_fp16: Path):
    dyn = read_manifest(onnx_fp32, "onnx")
    prof, rng = engine_profiles(dyn, dynamic=True, batch=None)
    assert prof["unet"]["sample"] == {"min": [1, 4, 4, 4], "opt": [2, 4, 8, 8], "max": [2, 4, 16, 16]}
    assert rng == {"min": 1, "opt": 2, "max": 2}
    prof, rng = engine_profiles(dyn, dynamic=False, batch=1)
    assert prof["text_encoder"]["input_ids"] == {"min": [1, 77], "opt": [1, 77], "max": [1, 77]}
    assert rng == {"min": 1, "opt": 1, "max": 1}
    with pytest.raises(InvalidArgumentError, match="outside"):
        engine_profiles(dyn, dynamic=False, batch=3)
    with pytest.raises(InvalidArgumentError, match="--dynamic needs"):
        engine_profiles(read_manifest(onnx_fp16, "onnx"), dynamic=True, batch=None)



def test_cli_engine_without_tensorrt(onnx_fp16: Path, tmp_path: Path):
    try:
        import tensorrt

        if hasattr(tensorrt, "Runtime"):
            pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    line = _one_line_exit_2(CliRunner().invoke(cli, ["export", "engine", "--onnx", str(onnx_fp16), "--out", str(tmp_path / "e")]))
    assert "pip install" in line and "JetPack" in line
    assert not (tmp_path / "e").exists()


def test_cli_engine_refuses_changed_or_incomplete_onnx(onnx_fp16: Path, tmp_path: Path):
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_fp16, copy)
    (copy / "unet" / "model.onnx").write_bytes((copy / "unet" / "model.onnx").read_bytes() + b"\0")
    line = _one_line_exit_2(CliRunner().invoke(cli, ["export", "engine", "--onnx", str(copy), "--out", str(tmp_path / "e")]))
    assert "does not match its manifest hash" in line
    (copy / "unet" / "model.onnx").unlink()
    line = _one_line_exit_2(CliRunner().invoke(cli, ["export", "engine", "--onnx", str(copy), "--out", str(tmp_path / "e")]))
    assert "missing" in line


def test_engine_from_another_gpu_or_version_is_refused(tmp_path: Path):
    manifest = {"kind": "engine", "tensorrt_version": "10.14.1", "compute_capability": "90", "gpu_name": "NVIDIA H100 80GB HBM3",
                "source": {"onnx": "/m/onnx"}, "dynamic": False, "batch": {"opt": 1}}
    check_engine_compat(manifest, "10.14.1", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "90"}, tmp_path)
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10.14.1, this machine has 10.3.0.*swiftbrush export engine --onnx /m/onnx"):
        check_engine_compat(manifest, "10.3.0", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "90"}, tmp_path)
    with pytest.raises(EngineMismatchError, match=r"sm87.*--static --batch 1"):
        check_engine_compat(manifest, "10.14.1", {"name": "Orin", "compute_capability": "87"}, tmp_path)


def test_engine_from_another_module_of_the_same_family_is_refused(tmp_path: Path):
    """Every Orin module reports "Orin" and sm87: the SM count tells an AGX build from a Nano."""
    manifest = {"kind": "engine", "backend": "tensorrt", "backend_version": "10.3.0", "compute_capability": "87", "gpu_name": "Orin",
                "multiprocessor_count": 16, "source": {"onnx": "/m/onnx"}, "dynamic": False, "batch": {"opt": 1}}
    check_engine_compat(manifest, "10.3.0", {"name": "Orin", "compute_capability": "87", "multiprocessor_count": 16}, tmp_path)
    with pytest.raises(EngineMismatchError, match=r"sm87, 16 SMs\), this machine has Orin \(sm87, 8 SMs\)"):
        check_engine_compat(manifest, "10.3.0", {"name": "Orin", "compute_capability": "87", "multiprocessor_count": 8}, tmp_path)


def test_extras_say_which_tensorrt_goes_with_which_driver():
    """A bare `tensorrt>=10` resolves to 11.x (CUDA 13, driver R580+); cuda-python was never used."""
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    everything = [req for reqs in extras.values() for req in reqs]
    assert not any(req.replace(" ", "").startswith(("tensorrt>", "tensorrt=", "cuda-python")) for req in everything), everything
    assert extras["trt"] == ["tensorrt-cu12>=10.3,<11"]
    assert any(req.startswith("tensorrt-cu13") for req in extras["trt-cu13"])
    assert {req.split(">")[0] for req in extras["rtx"]} == {"tensorrt-rtx-cu12-libs", "tensorrt-rtx-cu12-bindings"}
