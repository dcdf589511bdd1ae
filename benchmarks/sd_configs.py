"""Stable Diffusion 2.1-base's network configs (random weights, no download) and their tiny-width twins.

    from benchmarks.sd_configs import SD21_UNET, SD21_VAE, SD21_TEXT, TINY_UNET
    unet = UNet2DConditionModel(**SD21_UNET)

Shared by gpu_bench, export_sd_size and train_sd_size, so every benchmark times the same
network. The SD 2.1 values are the fields of stabilityai/stable-diffusion-2-1-base's
config.json files that shape the network; the tiny ones keep the block structure
(blocks, heads per block, linear projections) at widths a CPU runs in seconds.
"""

from __future__ import annotations

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
)  # fmt: skip
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)  # fmt: skip
SD21_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)  # fmt: skip
# --tiny: the same block structure at toy widths, 64 px.
TINY_UNET = {**SD21_UNET, "sample_size": 8, "block_out_channels": (32, 64, 64, 64), "attention_head_dim": (2, 4, 4, 4), "cross_attention_dim": 64, "layers_per_block": 1}
TINY_VAE = {**SD21_VAE, "sample_size": 64, "block_out_channels": (16, 32, 32, 32), "layers_per_block": 1, "norm_num_groups": 8}
TINY_TEXT = {**SD21_TEXT, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 64}
# AutoencoderTiny's default config is TAESD's; the tiny one narrows it like tests/tiny_models.py does.
TINY_TAESD = dict(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4, num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
