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

def make_tiny_teacher(out: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from swiftbrush.toy import models
    from swiftbrush.toy.vocab import write_tokenizer

    torch.manual_seed(seed)
    tok_dir = out.parent / (out.name + "-tokenizer")
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(**{
        **models.text_encoder_config(len(tokenizer.get_vocab()), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id),
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 32,
    }))  # fmt: skip
    unet = UNet2DConditionModel(**{**models.UNET_CONFIG, "block_out_channels": (16, 32), "cross_attention_dim": 32, "norm_num_groups": 8, "attention_head_dim": 4})
    vae = AutoencoderKL(**{**models.VAE_CONFIG, "block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4})
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**{**models.SCHEDULER_CONFIG, "prediction_type": prediction_type}),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)
    import shutil

    shutil.copytree(tok_dir, out / "tokenizer", dirs_exist_ok=True)
    shutil.rmtree(tok_dir)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny-teacher")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
