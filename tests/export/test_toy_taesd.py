"""The toy world's tiny autoencoder (swiftbrush/toy/assets/taesd): loads, decodes like the toy VAE,
exports with `--decoder taesd --taesd toy` and runs in ONNX Runtime like the torch backend.

The asset is trained by `python -m swiftbrush.toy.train_taesd`; its errors on 256 fresh
renders are in its training.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tiny_models import student_from_teacher
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import render_batch
from swiftbrush.toy.train_taesd import TAESD_DIR, load_vae, measure
from swiftbrush.toy.train_teacher import TEACHER_DIR, images_to_tensor

PROMPTS = ["a red circle on a blue background", "a green square on a yellow background", "", "blue triangle"]
# TAESD decode vs the VAE decoder's image of the same latent, mean abs error on [0, 1], and
# TAESD encode vs the VAE's scaled mean latent, relative L2: each about 1.5x the errors the
# committed asset makes on fresh renders (benchmarks/RESULTS.md, "Test bounds"), so a
# retrained or damaged asset that decodes visibly worse fails.
DECODE_MAE_BOUND = 0.03
ENCODE_REL_BOUND = 0.13



def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(TAESD_DIR, use_safetensors=True).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vae():
    return load_vae(TEACHER_DIR)


def test_asset_is_a_small_autoencoder_tiny_for_scaled_toy_latents(tiny):
    import torch

    cfg = tiny.config
    assert cfg.latent_channels == 4 and cfg.scaling_factor == 1.0  # takes the VAE latent x its scaling_factor itself
    assert len(cfg.decoder_block_out_channels) == 4  # three 2x upsamplings: the toy VAE's 8x
    with torch.no_grad():
        assert tiny.decode(torch.zeros(2, 4, 8, 8)).sample.shape == (2, 3, 64, 64)
        assert tiny.encode(torch.zeros(2, 3, 64, 64)).latents.shape == (2, 4, 8, 8)
    weights = sum(f.stat().st_size for f in TAESD_DIR.glob("*.safetensors"))
    assert weights < 2_000_000, weights
    info = json.loads((TAESD_DIR / "training.json").read_text())
    assert info["trained_with"].startswith("python -m swiftbrush.toy.train_taesd") and info["seconds"] > 0


def test_decodes_fresh_renders_like_the_toy_vae(tiny, vae):
    errors = measure(tiny, *vae, n=64, seed=123)  # a seed neither training nor training.json used
    assert errors["decode_mae_vs_vae"] < DECODE_MAE_BOUND, errors
    assert errors["encode_rel_err"] < ENCODE_REL_BOUND, errors


def test_export_taesd_toy_decodes_in_onnxruntime_like_torch(vae, tmp_path: Path):
    """`export onnx --decoder taesd --taesd toy` on a toy student: taesd_decoder takes the VAE's latent
    (what vae_decoder takes) and gives the VAE's images; ORT through it equals torch's taesd."""
    import torch

    from swiftbrush.cli import cli
    from swiftbrush_runtime import Generator
    from swiftbrush_runtime.manifest import read_manifest

    student = student_from_teacher(TEACHER_DIR, tmp_path / "student")
    out = tmp_path / "onnx"
    batch = len(PROMPTS)
    args = ["export", "onnx", "--student", str(student), "--out", str(out), "--batch", str(batch), "--decoder", "taesd", "--taesd", "toy"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "taesd_decoder" / "model.onnx").is_file()
    m = read_manifest(out, "onnx")
    assert m["decoder"] == "taesd" and m["source"]["taesd"] == str(TAESD_DIR.resolve())

    ort = Generator.load(out)
    assert ort.backend.decoder == "taesd_decoder"
    model, _ = vae
    captions = all_captions()
    x = images_to_tensor(render_batch([captions[i] for i in range(0, len(captions), 3)], seed=321))
    with torch.no_grad():
        latent = model.encode(x).latent_dist.mean
        ref = model.decode(latent).sample.clamp(-1, 1).numpy()
    got = np.concatenate([ort.backend.decode(latent[i : i + batch].numpy()) for i in range(0, len(latent), batch)])
    assert np.abs(np.clip(got, -1, 1) - ref).mean() / 2 < DECODE_MAE_BOUND

    a = ort.generate(PROMPTS, seed=3, output="float")
    shutil.copytree(TAESD_DIR, student / "taesd")  # the torch backend reads <student>/taesd
    b = Generator.load(student, backend="torch", device="cpu", decoder="taesd").generate(PROMPTS, seed=3, output="float")
    assert _rel(a, b) < 1e-4


def test_taesd_that_cannot_decode_the_student_is_refused(tiny_student: Path, tmp_path: Path):
    """Before any export work: the toy TAESD on a non-toy student, and a TAESD of other latents."""
    from swiftbrush.cli import cli

    def export(student: Path, taesd: str, out: str) -> str:
        args = ["export", "onnx", "--student", str(student), "--out", str(tmp_path / out), "--decoder", "taesd", "--taesd", taesd]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert not (tmp_path / out).exists()
        return result.output.strip()

    line = export(tiny_student, "toy", "a")  # the conftest student records teacher "random-tiny"
    assert "decodes only its latents" in line and "'random-tiny'" in line

    other = tmp_path / "taesd16"
    shutil.copytree(TAESD_DIR, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "latent_channels": 16}))
    student = student_from_teacher(TEACHER_DIR, tmp_path / "student")
    line = export(student, str(other), "b")
    assert "decodes 16-channel latents 8x up" in line and "4-channel latents 8x down" in line
