"""Shared fixtures: a tiny random student and its ONNX exports, built once per session.

The student has the toy teacher's exact structure (AutoencoderKL 64x64x3 <-> 8x8x4,
a width-64 CLIPTextModel with the toy CLIP-format vocabulary, a cross-attention
UNet2DConditionModel, SD's schedule) with seeded random weights, so the export and
runtime tests do not wait for the trained toy teacher; a student is just a UNet
with its teacher's structure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_models import make_tiny_student


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_student(tmp_path_factory.mktemp("student") / "student")


@pytest.fixture(scope="session")
def onnx_fp32(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swiftbrush_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "fp32"
    export_onnx(tiny_student, out, dtype="fp32", batch=2, dynamic=True)
    return out


@pytest.fixture(scope="session")
def onnx_fp16(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swiftbrush_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "fp16"
    export_onnx(tiny_student, out, dtype="fp16", batch=1)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests on machines without CUDA."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda or os.environ.get("SWIFTBRUSH_GPU_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
