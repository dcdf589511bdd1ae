"""SwiftBrush training steps at SD 2.1-base size with random weights: it/s and peak memory.

    python -m benchmarks.train_sd_size                        # GPU: batch 16, bf16, gradient checkpointing
    python -m benchmarks.train_sd_size --batch-size 8 --no-gradient-checkpointing
    python -m benchmarks.train_sd_size --tiny --steps 2       # CPU: same structure, tiny widths
    python -m benchmarks.train_sd_size --recipe swiftbrush-v2 # SwiftBrush v2's step (CLIP loss via TAESD), and that part alone

The step is the trainer's own (`swiftbrush.train.VSDTrainer`): one student update
(student forward at T, frozen-teacher and LoRA-teacher CFG forwards, VSD backward)
then one LoRA-teacher update, with LoRA rank 64 on to_q/to_v and a student EMA.
No weights are downloaded: the UNet is SD 2.1-base's config with diffusers' random
initialisation, the text embeddings random 77x1024 tensors. Prints one JSON line.
For reference the paper's 4.1 A100-days for 65K steps is about 0.18 it/s (A100-40GB).

`--recipe swiftbrush-v2` times v2's step instead (the recipe's AdamW and LoRA r64/a128, the CLIP
loss at its starting weight 0.1 inside the student update) and adds `clip_part`: the CLIP loss on its own
(swiftbrush.clip_guidance with a random CLIP ViT-B/32 and a random TAESD built from their
configs): text targets, tiny-decoder decode of the latents, CLIP image tower, loss and the
backward to the latents, at the same batch; its it/s and peak memory (what the term adds).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from benchmarks.sd_configs import SD21_UNET

# The same structure at widths a CPU runs in seconds; text width 32 (the step's random embeddings), not sd_configs.TINY_UNET's 64.
TINY_UNET = {**SD21_UNET, "sample_size": 8, "block_out_channels": (20, 40, 80, 80), "cross_attention_dim": 32, "norm_num_groups": 4}
TEXT_LENGTH = 77
PROMPT = "a photograph of an astronaut riding a horse"


def sd_scaled_linear_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def run(tiny: bool, batch_size: int, steps: int, warmup: int, mixed_precision: str, gradient_checkpointing: bool, seed: int = 0,
        recipe: str = "swiftbrush") -> dict:  # fmt: skip
    from accelerate import Accelerator
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    from swiftbrush.config import build_config
    from swiftbrush.train import VSDTrainer, make_models, make_optimizers, step_generator

    config = build_config("sd21-base", "sd21-base", recipe=recipe, batch_size=batch_size, mixed_precision=mixed_precision,
                          gradient_checkpointing=gradient_checkpointing, seed=seed)  # fmt: skip
    accelerator = Accelerator(mixed_precision=mixed_precision)
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    torch.manual_seed(seed)
    unet_config = TINY_UNET if tiny else SD21_UNET
    teacher_unet = UNet2DConditionModel(**unet_config)
    student, teacher_unet = make_models(config, teacher_unet, weight_dtype)
    ema = EMAModel(student.parameters(), decay=config.ema_decay)
    ema.to(device)
    opt_student, opt_lora = make_optimizers(config, student, teacher_unet)
    student, teacher_unet, opt_student, opt_lora = accelerator.prepare(student, teacher_unet, opt_student, opt_lora)
    width = unet_config["cross_attention_dim"]
    empty = torch.randn(1, TEXT_LENGTH, width)
    clip = random_clip_guidance(tiny, device, weight_dtype, gradient_checkpointing) if config.clip_weight > 0 else None
    trainer = VSDTrainer(config, accelerator, student, teacher_unet, opt_student, opt_lora, ema, sd_scaled_linear_alphas_cumprod(), empty, clip=clip)
    cond = torch.randn(batch_size, TEXT_LENGTH, width, device=device)
    texts = [PROMPT] * batch_size

    def train_step(step: int) -> bool:  # v2's CLIP term at its full starting weight
        return trainer.train_step(cond, step_generator(seed, step, 0), config.clip_weight, texts)[1]

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup):
        train_step(step)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    ok_steps = 0
    for step in range(warmup, warmup + steps):
        ok_steps += train_step(step)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in accelerator.unwrap_model(student).parameters())
    return {
        "size": "tiny" if tiny else "sd21-base",
        "recipe": recipe,
        "optimizer": config.optimizer,
        "lora_rank": config.lora_rank,
        "clip_loss": clip is not None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "unet_params_m": round(params / 1e6, 1),
        "batch_size": batch_size,
        "mixed_precision": mixed_precision,
        "gradient_checkpointing": gradient_checkpointing,
        "steps": steps,
        "finite_steps": ok_steps,
        "it_per_s": round(steps / seconds, 3),
        "seconds_per_step": round(seconds / steps, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "torch": torch.__version__,
    }


def random_clip_guidance(tiny: bool, device: torch.device, dtype: torch.dtype, gradient_checkpointing: bool) -> Any:
    """SwiftBrush v2's CLIP loss models with random weights: a CLIP ViT-B/32 and SD's TAESD (tiny widths with `tiny`)."""
    import tempfile
    from pathlib import Path

    from diffusers import AutoencoderTiny
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from swiftbrush.clip_guidance import ClipGuidance, ImagePreprocessing
    from swiftbrush.runlog import quiet_diffusers
    from swiftbrush.toy.vocab import write_tokenizer

    if tiny:  # ViT-B/32's structure at CPU widths; 32x32 input, so the resize runs as at full size
        tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        clip_config = CLIPConfig(text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=32)
        taesd = AutoencoderTiny(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4)
    else:
        clip_config, taesd = CLIPConfig(), AutoencoderTiny()  # the defaults are ViT-B/32 and SD's TAESD
    clip = CLIPModel(clip_config).to(device, dtype)
    taesd.encoder = None
    with quiet_diffusers():  # TAESD has no modules that must stay fp32
        taesd.to(device, dtype)
    if gradient_checkpointing:  # the decoder only: transformers checkpoints a model in training mode, and the frozen
        taesd.enable_gradient_checkpointing()  # CLIP runs in eval (ViT-B/32 keeps 50 tokens an image: small activations)
    with tempfile.TemporaryDirectory() as tok_dir:  # CLIP's BPE vocabulary is a download: the toy one tokenizes the same way
        write_tokenizer(Path(tok_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    size = clip_config.vision_config.image_size
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    return ClipGuidance(clip, tokenizer, ImagePreprocessing(size, (size, size), mean, std), taesd, Path("random"), Path("random"))


def run_clip_part(tiny: bool, batch_size: int, steps: int, warmup: int, mixed_precision: str, gradient_checkpointing: bool, seed: int = 0) -> dict:
    """The clamped CLIP loss term alone: random ViT-B/32 CLIP + random TAESD, forward and backward to x0."""
    from swiftbrush.losses import clamped_clip_loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    torch.manual_seed(seed)
    guidance = random_clip_guidance(tiny, device, dtype, gradient_checkpointing)
    clip, taesd, size = guidance.clip, guidance.decoder, guidance.clip.config.vision_config.image_size
    latent = TINY_UNET["sample_size"] if tiny else SD21_UNET["sample_size"]
    prompts = [PROMPT] * batch_size
    x0 = torch.randn(batch_size, 4, latent, latent, device=device)

    def step() -> None:
        text, _ = guidance.encode_prompts(prompts)
        latents = x0.clone().requires_grad_(True)
        loss, _ = clamped_clip_loss(guidance.image_embeddings(latents), text, tau=1.0)  # tau 1: every sample pulls
        loss.backward()
        assert latents.grad is not None and torch.isfinite(latents.grad).all()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "clip_params_m": round(sum(p.numel() for p in clip.parameters()) / 1e6, 1),
        "taesd_decoder_params_m": round(sum(p.numel() for p in taesd.parameters()) / 1e6, 2),
        "image_size": size,
        "batch_size": batch_size,
        "dtype": str(dtype).removeprefix("torch."),
        "taesd_gradient_checkpointing": gradient_checkpointing,
        "it_per_s": round(steps / seconds, 3),
        "seconds_per_step": round(seconds / steps, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny widths, SD 2.1-base structure (CPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None, help="default: bf16 on GPU, no on CPU")
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--recipe", choices=("swiftbrush", "swiftbrush-v2"), default="swiftbrush",
                        help="swiftbrush-v2: the v2 step (AdamW, LoRA r64/a128, the clamped CLIP loss via TAESD) and the CLIP part timed alone")  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    mixed = args.mixed_precision or ("bf16" if torch.cuda.is_available() else "no")
    result = run(args.tiny, args.batch_size, args.steps, args.warmup, mixed, args.gradient_checkpointing, recipe=args.recipe)
    if args.recipe == "swiftbrush-v2":
        result["clip_part"] = run_clip_part(args.tiny, args.batch_size, args.steps, args.warmup, mixed, args.gradient_checkpointing)
    text = json.dumps(result)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
