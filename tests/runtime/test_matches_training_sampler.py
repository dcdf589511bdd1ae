"""The runtime and the training package's own one-step sampler agree on noise, math and decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swiftbrush.student import sample_student
from swiftbrush_runtime import Generator


def test_onnx_runtime_matches_sample_student(onnx_fp32: Path, tiny_student: Path):
    prompts = ["a red circle on a blue background", "", "green square"]
    ref = sample_student(tiny_student, prompts, seed=9)
    ours = Generator.load(onnx_fp32).generate(prompts, seed=9)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
