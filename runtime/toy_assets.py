"""Where the toy world's committed models live: one definition for training, export and tests.

    from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR, TOY_TAESD_DIR
    swiftbrush export onnx --student out/toy/student --out out/onnx --decoder taesd --taesd toy

The folders ship inside the `swiftbrush` package (swiftbrush/toy/assets/). The path is found
without importing `swiftbrush`, so `swiftbrush_export` and the runtime can name the toy
teacher and tiny decoder without loading the training code (and torch with it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path:
    """The folder of the top-level package `name`, located by the import system without running it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        # One distribution installs all three packages side by side (pyproject.toml's package-dir).
        return Path(__file__).resolve().parent.parent / name
    return Path(next(iter(spec.submodule_search_locations)))


TOY_ASSETS_DIR = _package_dir("swiftbrush") / "toy" / "assets"
TOY_TEACHER_DIR = TOY_ASSETS_DIR / "teacher"  # the toy latent diffusion teacher (diffusers layout)
TOY_TAESD_DIR = TOY_ASSETS_DIR / "taesd"  # the AutoencoderTiny distilled from the toy teacher's VAE
TOY_EVALUATOR_DIR = TOY_ASSETS_DIR / "evaluator"  # the attribute classifier behind alignment and FD
TOY_WARM_START_DIR = TOY_ASSETS_DIR / "warm-start"  # a one-step UNet regressed onto the toy teacher's own samples (the toy's SD-Turbo)
TOY_CLIP_DIR = TOY_ASSETS_DIR / "clip"  # the toy CLIP (transformers CLIPModel) behind the clamped CLIP loss
