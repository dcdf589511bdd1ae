"""ClipGuidance: loading and refusing CLIP / tiny decoder folders, the text side, and the differentiable image side."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from swiftbrush.clip_guidance import ClipGuidance
from swiftbrush.errors import InvalidModelError
from swiftbrush.losses import clamped_clip_loss
from swiftbrush_runtime.toy_assets import TOY_CLIP_DIR, TOY_TAESD_DIR, TOY_TEACHER_DIR
from tiny_models import make_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def guidance(tiny_clip: Path) -> ClipGuidance:
    return ClipGuidance.load(str(tiny_clip), "toy")


def refusal(clip: str, decoder: str = "toy") -> str:
    with pytest.raises(InvalidModelError) as info:
        ClipGuidance.load(clip, decoder)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_loads_a_folder_frozen(guidance: ClipGuidance, tiny_clip: Path):
    assert guidance.clip_path == tiny_clip and guidance.decoder_path == TOY_TAESD_DIR
    for module in (guidance.clip, guidance.decoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert guidance.max_length == 77


def test_refuses_a_folder_that_is_not_a_clip_model(tmp_path: Path, tiny_clip: Path):
    text_only = tmp_path / "text-encoder"
    shutil.copytree(TOY_TEACHER_DIR / "text_encoder", text_only)  # a CLIPTextModel: no image tower
    assert "not a CLIPModel" in refusal(str(text_only))
    assert "has no config.json" in refusal(str(TOY_TEACHER_DIR))  # a diffusers pipeline folder
    assert "does not exist" in refusal(str(tmp_path / "missing"))


def test_refuses_a_clip_folder_without_tokenizer_or_preprocessor(tmp_path: Path, tiny_clip: Path):
    no_tok = shutil.copytree(tiny_clip, tmp_path / "no-tokenizer")
    (no_tok / "vocab.json").unlink()
    assert "has no tokenizer" in refusal(str(no_tok))
    no_proc = shutil.copytree(tiny_clip, tmp_path / "no-preprocessor")
    (no_proc / "preprocessor_config.json").unlink()
    assert "preprocessor_config.json" in refusal(str(no_proc))


def test_refuses_a_decoder_that_is_not_tiny_and_weights_that_do_not_load(tmp_path: Path, tiny_clip: Path):
    assert "not an AutoencoderTiny" in refusal(str(tiny_clip), str(TOY_TEACHER_DIR / "vae"))  # the KL VAE
    broken = shutil.copytree(tiny_clip, tmp_path / "truncated")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "do not load" in refusal(str(broken))


def test_gradient_reaches_x0_only(guidance: ClipGuidance):
    text, truncated = guidance.encode_prompts(["a red circle on a blue background", "a green square on a white background"])
    assert truncated == 0 and not text.requires_grad
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    image = guidance.image_embeddings(x0)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    loss, _ = clamped_clip_loss(image, text, tau=1.5)  # tau above any cos: every pair pulls
    loss.backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all() and x0.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.clip.parameters())


def test_long_prompts_are_truncated_and_counted(guidance: ClipGuidance):
    long = " ".join(["a red circle on a blue background"] * 12)  # 84 words, one token each, + BOS/EOS
    assert len(guidance.tokenizer(long).input_ids) > 77
    text, truncated = guidance.encode_prompts([long, "a red circle", long])
    assert truncated == 2 == guidance.count_truncated([long, "a red circle", long])
    assert text.shape == (3, guidance.clip.config.projection_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))


def test_preprocessing_matches_clip_image_processor(guidance: ClipGuidance, tiny_clip: Path):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(tiny_clip)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # square, at the processor's size
    theirs = processor(images=list(pixels), return_tensors="pt").pixel_values
    ours = guidance.preprocess(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # Larger and not square: resized (shortest edge) and centre-cropped like the processor; the resamplers differ a little.
    smooth = np.repeat(np.repeat(np.random.default_rng(1).integers(0, 256, (1, 12, 16, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    theirs = processor(images=list(smooth), return_tensors="pt").pixel_values
    ours = guidance.preprocess(torch.from_numpy(smooth).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert (ours - theirs).abs().mean() < 0.02  # measured 0.005; a crop one pixel off gives ~0.3


def test_the_toy_clip_ranks_the_right_caption_first():
    """The shipped toy CLIP, through the whole image side (TAESD latents -> tiny decoder -> CLIP) on fresh renders."""
    from diffusers import AutoencoderTiny

    from swiftbrush.toy.grammar import all_captions
    from swiftbrush.toy.render import render_batch

    guidance = ClipGuidance.load("toy", "toy")
    assert guidance.clip_path == TOY_CLIP_DIR
    captions = all_captions()
    text, _ = guidance.encode_prompts([c.text for c in captions])
    picks = [captions[i] for i in (0, 7, 17, 26, 35)]
    images = torch.from_numpy(render_batch(picks, seed=424242)).permute(0, 3, 1, 2).float() / 127.5 - 1
    encoder = AutoencoderTiny.from_pretrained(TOY_TAESD_DIR, use_safetensors=True).eval()
    with torch.no_grad():
        latents = encoder.encode(images).latents  # the scaled latents a student produces
        best = (guidance.image_embeddings(latents) @ text.T).argmax(dim=1).tolist()
    assert [captions[i] for i in best] == picks
