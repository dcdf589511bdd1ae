"""Architectures of the toy world's models, as diffusers/transformers configs.

The toy teacher uses SD's exact classes (AutoencoderKL, CLIPTextModel,
UNet2DConditionModel, SD's scaled-linear eps schedule) at a size that trains on
a CPU, so every code path that loads or runs it is the one used for real SD.
"""

from __future__ import annotations

from typing import Any

from swiftbrush.toy.render import RESOLUTION

LATENT_CHANNELS = 4
LATENT_SIZE = RESOLUTION // 8  # SD's 8x spatial compression: 64x64x3 <-> 8x8x4
TEXT_WIDTH = 64

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=8,
    sample_size=RESOLUTION,
)

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 128),
    layers_per_block=1,
    attention_head_dim=8,
    cross_attention_dim=TEXT_WIDTH,
    norm_num_groups=32,
)

# SD's training schedule (v1.5 / v2.1-base): scaled-linear betas, 1000 steps, eps.
SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def text_encoder_config(vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """CLIPTextConfig kwargs for the toy text encoder (77 positions, as SD)."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )

# The CFG scale at which the toy teacher samples best at 25 steps (measured with
# `swiftbrush eval --model toy-teacher --guidance-scale S`; see benchmarks/RESULTS.md).
# SD's 4.5 over-saturates a model this small.
TOY_GUIDANCE_SCALE = 2.0
# The CFG scale of both teacher predictions in the toy preset's VSD gradient (tuned on
# short distillation runs; VSD wants a sharper target than sampling does).
TOY_VSD_GUIDANCE_SCALE = 3.0
