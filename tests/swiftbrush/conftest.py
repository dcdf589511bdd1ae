"""Fixtures for the distillation tests: a tiny random SD-structured teacher folder.

It has the toy teacher's structure (AutoencoderKL 64x64x3 <-> 8x8x4, the toy
CLIP-format vocabulary, a cross-attention UNet2DConditionModel, SD's schedule) at
a smaller width, with seeded random weights, so trainer mechanics are tested
without waiting for the trained toy teacher. Quality needs the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_models import make_tiny_teacher


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny-teacher")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
