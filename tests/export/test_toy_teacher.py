"""Export parity on the committed toy teacher's trained weights.

Trained weights have the activation sizes random ones lack, so the fp16 bound is
checked here on a real model: the teacher UNet taken as a one-step student.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tiny_models import optimum_and_runtime_images, student_from_teacher
from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR

# SWIFTBRUSH_TOY_TEACHER points the test at another teacher folder (e.g. a training snapshot).
TEACHER = Path(os.environ.get("SWIFTBRUSH_TOY_TEACHER", TOY_TEACHER_DIR))
PROMPTS = ["a red circle on a blue background", "a green square on a yellow background", "", "blue triangle"]



@pytest.fixture(scope="module")
def toy_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return student_from_teacher(TEACHER, tmp_path_factory.mktemp("toy") / "student")


def test_toy_fp32_and_fp16_parity(toy_student: Path, tmp_path: Path):
    from swiftbrush_export.onnx_export import export_onnx
    from swiftbrush_runtime import Generator

    export_onnx(toy_student, tmp_path / "fp32", dtype="fp32", batch=len(PROMPTS))
    export_onnx(toy_student, tmp_path / "fp16", dtype="fp16", batch=len(PROMPTS))
    torch_gen = Generator.load(toy_student, backend="torch", device="cpu")
    g32, g16 = Generator.load(tmp_path / "fp32"), Generator.load(tmp_path / "fp16")
    for seed in range(3):
        ref = torch_gen.generate(PROMPTS, seed=seed, output="float")
        a32 = g32.generate(PROMPTS, seed=seed, output="float")
        a16 = g16.generate(PROMPTS, seed=seed, output="float")
        assert np.linalg.norm(a32 - ref) / np.linalg.norm(ref) < 1e-4
        assert np.isfinite(a16).all()
        err = np.abs(np.clip(a16, -1, 1) - np.clip(ref, -1, 1)).max() / 2
        # The 2/255 bar is for a distilled student. The teacher taken as a student is the harsher
        # case (its eps at t=999 is less smooth, and x0 multiplies eps errors by ~15), bounded at
        # 3/255 (the measured errors: benchmarks/RESULTS.md, "Test bounds").
        assert err < 3 / 255, (seed, err * 255)


def test_a_student_with_its_teachers_scheduler_exports_a_one_step_folder(toy_student: Path, tmp_path: Path):
    """A student folder that carries its teacher's multi-step scheduler still exports a one-step folder."""
    from diffusers import DDPMScheduler

    from swiftbrush_export.onnx_export import export_onnx

    assert DDPMScheduler.load_config(toy_student, subfolder="scheduler")["timestep_spacing"] == "leading"
    export_onnx(toy_student, tmp_path / "onnx", dtype="fp32", batch=2)
    pipe, images, ours = optimum_and_runtime_images(tmp_path / "onnx", PROMPTS[:2], seed=1)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.timestep_spacing == "trailing"
    assert images.shape == ours.shape and np.abs(images - ours).max() < 1e-5
