"""The toy world's trained models are committed: a missing one fails here, by name, and nowhere skips.

The demo, the quality benchmark and the toy-teacher tests all load these folders; the tests
that use them fail on a missing file rather than skipping, and this test says which one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from swiftbrush_runtime.toy_assets import TOY_ASSETS_DIR, TOY_CLIP_DIR, TOY_EVALUATOR_DIR, TOY_TAESD_DIR, TOY_TEACHER_DIR, TOY_WARM_START_DIR

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = [
    TOY_TEACHER_DIR / "model_index.json",
    TOY_TEACHER_DIR / "scheduler" / "scheduler_config.json",
    TOY_TEACHER_DIR / "tokenizer" / "tokenizer.json",
    TOY_TEACHER_DIR / "tokenizer" / "vocab.json",
    TOY_TEACHER_DIR / "tokenizer" / "merges.txt",
    TOY_TEACHER_DIR / "text_encoder" / "config.json",
    TOY_TEACHER_DIR / "text_encoder" / "model.safetensors",
    TOY_TEACHER_DIR / "unet" / "config.json",
    TOY_TEACHER_DIR / "unet" / "diffusion_pytorch_model.safetensors",
    TOY_TEACHER_DIR / "vae" / "config.json",
    TOY_TEACHER_DIR / "vae" / "diffusion_pytorch_model.safetensors",
    TOY_TAESD_DIR / "config.json",
    TOY_TAESD_DIR / "diffusion_pytorch_model.safetensors",
    TOY_EVALUATOR_DIR / "config.json",
    TOY_EVALUATOR_DIR / "model.safetensors",
    *(TOY_CLIP_DIR / name for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json")),
    TOY_WARM_START_DIR / "config.json",
    TOY_WARM_START_DIR / "diffusion_pytorch_model.safetensors",
]


def test_every_toy_asset_is_present_and_not_empty():
    missing = [str(p.relative_to(TOY_ASSETS_DIR)) for p in REQUIRED if not p.is_file() or p.stat().st_size == 0]
    assert missing == [], f"toy assets missing from {TOY_ASSETS_DIR}: {missing} (python -m swiftbrush.toy.train_teacher / train_taesd / train_evaluator / train_clip / train_warm_start)"


def test_every_toy_asset_is_tracked_by_git():
    """Present is not enough: an untracked asset passes here and is missing from every clone."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): presence is checked above")
    listed = subprocess.run([git, "ls-files", "--", *map(str, REQUIRED)], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    tracked = {(ROOT / p).resolve() for p in listed}
    assert [str(p.relative_to(TOY_ASSETS_DIR)) for p in REQUIRED if p.resolve() not in tracked] == []
