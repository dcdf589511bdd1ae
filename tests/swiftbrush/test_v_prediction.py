"""A v-prediction teacher (SD 2.x-768's kind) through the chain: distill, student folder, diffusers, ONNX, runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from swiftbrush.cli import cli


@pytest.fixture(scope="module")
def v_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import make_tiny_teacher

    root = tmp_path_factory.mktemp("v")
    teacher = make_tiny_teacher(root / "teacher", prediction_type="v_prediction")
    args = ["distill", "--teacher", str(teacher), "--prompts", "toy", "--out", str(root / "run"), "--preset", "toy", "--batch-size", "4", "--max-steps", "2"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run" / "student"


def test_the_student_predicts_v_and_diffusers_runs_it_in_one_step(v_student: Path):
    from diffusers import StableDiffusionPipeline

    from swiftbrush.student import OneStepPipeline, initial_latents

    assert json.loads((v_student / "onestep.json").read_text())["prediction_type"] == "v_prediction"
    assert json.loads((v_student / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    prompts = ["a red circle on a black background", "a blue square on a white background"]
    z = torch.from_numpy(initial_latents(3, 2, 4, 8, 8))
    ours = OneStepPipeline.from_pretrained(v_student)(prompts, latents=z, output_type="latent").images
    theirs = StableDiffusionPipeline.from_pretrained(v_student)(prompts, num_inference_steps=1, guidance_scale=0.0, latents=z, output_type="latent").images
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)  # DDIM's own v -> x0 step
    # read as eps, the same UNet output would give another image
    pipe = StableDiffusionPipeline.from_pretrained(v_student)
    pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    wrong = pipe(prompts, num_inference_steps=1, guidance_scale=0.0, latents=z, output_type="latent").images
    assert (wrong - ours).abs().max() > 0.1


def test_onnx_and_torch_runtimes_make_the_v_students_image(v_student: Path, tmp_path: Path):
    from swiftbrush.student import sample_student
    from swiftbrush_export.onnx_export import export_onnx
    from swiftbrush_runtime import Generator

    export_onnx(v_student, tmp_path / "onnx")
    assert json.loads((tmp_path / "onnx" / "onestep.json").read_text())["prediction_type"] == "v_prediction"
    prompts = ["a red circle on a blue background", "", "green square"]
    ref = sample_student(v_student, prompts, seed=9).astype(int)
    for model in (tmp_path / "onnx", v_student):
        ours = Generator.load(model).generate(prompts, seed=9).astype(int)
        assert np.abs(ours - ref).max() <= 1, model
