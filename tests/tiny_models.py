"""Tiny random SD-structured models the tests build in seconds: a student directory,
a teacher folder, and the helper comparing optimum's pipeline with the runtime.

Student folders get their onestep.json and manifest from the runtime's own writers
(write_onestep, write_manifest), so export and runtime tests read what distill writes.

A plain module, not conftest.py: tests import these by name, and two conftest modules
(tests/ and tests/swiftbrush/) would race for the one name `conftest` in sys.modules,
so `pytest tests/swiftbrush tests/export` failed to collect.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_tiny_student(out: Path, seed: int = 0) -> Path:
    """Write a student directory (diffusers folder + onestep.json + manifest) with random weights."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from swiftbrush_runtime.manifest import write_manifest
    from swiftbrush_runtime.onestep import STUDENT_TIMESTEP, OneStep, one_step_scheduler, write_onestep
    from swiftbrush.toy import models
    from swiftbrush.toy.vocab import write_tokenizer

    out = Path(out)
    tok_dir = out / "tokenizer"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **models.text_encoder_config(
                len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
            )
        )
    )
    vae = AutoencoderKL(**models.VAE_CONFIG)
    unet = UNet2DConditionModel(**models.UNET_CONFIG)
    # Random decoders output tiny values; scale the last conv so images span [-1, 1]
    # and the fp16 comparisons see realistic activation sizes.
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(4.0)
    scheduler = one_step_scheduler(models.SCHEDULER_CONFIG)  # as write_student
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    write_tokenizer(tok_dir)  # save_pretrained rewrote the folder from the slow tokenizer; keep tokenizer.json
    # A tiny autoencoder decoder (TAESD's architecture at toy widths) for --decoder taesd.
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
    ).save_pretrained(out / "taesd", safe_serialization=True)
    write_onestep(out, OneStep(
        timestep=STUDENT_TIMESTEP, alpha_T=float(scheduler.alphas_cumprod[STUDENT_TIMESTEP]), prediction_type="epsilon",
        resolution=models.RESOLUTION, latent_channels=4, vae_scale_factor=8, scaling_factor=float(vae.config.scaling_factor),
        extra={"teacher": "random-tiny", "guidance_scale": 1.5},
    ))  # fmt: skip
    write_manifest(out, "student", teacher="random-tiny", step=0)
    return out


def student_from_teacher(teacher: Path, out: Path) -> Path:
    """A student directory from a teacher folder: the teacher UNet itself as the one-step student.

    Not a good student (one step of a multi-step teacher), but exactly the structure,
    weights and activation sizes of a trained model, which is what export parity needs.
    It keeps the teacher's multi-step scheduler, which a student folder may carry and the export replaces.
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    from swiftbrush_runtime.manifest import read_json, write_manifest
    from swiftbrush_runtime.onestep import STUDENT_TIMESTEP, OneStep, write_onestep

    shutil.copytree(teacher, out, ignore=shutil.ignore_patterns("manifest.json", "*.bin", "*.ckpt"))
    scheduler = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    vae_cfg = AutoencoderKL.load_config(out, subfolder="vae")
    unet_cfg = read_json(out / "unet" / "config.json")
    vae_scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    write_onestep(out, OneStep(
        timestep=STUDENT_TIMESTEP, alpha_T=float(scheduler.alphas_cumprod[STUDENT_TIMESTEP]), prediction_type="epsilon",
        resolution=int(unet_cfg["sample_size"]) * vae_scale, latent_channels=int(unet_cfg["in_channels"]), vae_scale_factor=vae_scale,
        scaling_factor=float(vae_cfg.get("scaling_factor", 0.18215)), extra={"teacher": str(teacher), "guidance_scale": 1.5},
    ))  # fmt: skip
    write_manifest(out, "student", teacher=str(teacher), step=0)
    return out


def optimum_and_runtime_images(onnx_dir: Path, prompts: list[str], seed: int) -> tuple:
    """optimum's ORTStableDiffusionPipeline (one step, no guidance) and the runtime on the same noise: NHWC in [0, 1]."""
    import numpy as np
    import torch
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    from swiftbrush_runtime import Generator

    pipe = ORTStableDiffusionPipeline.from_pretrained(onnx_dir)
    gen = Generator.load(onnx_dir)
    noise = torch.from_numpy(gen.noise(len(prompts), seed=seed))
    theirs = pipe(prompts, num_inference_steps=1, guidance_scale=0.0, latents=noise, output_type="np").images
    ours = np.clip(gen.generate(prompts, seed=seed, output="float") / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return pipe, theirs, ours


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
    shutil.copytree(tok_dir, out / "tokenizer", dirs_exist_ok=True)
    shutil.rmtree(tok_dir)
    return out


def make_tiny_clip(out: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A hub-style transformers CLIPModel folder with random weights: both towers tiny, the toy tokenizer,
    and a CLIPImageProcessor config (resize and centre-crop to `image_size`, CLIP's mean and std)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from swiftbrush.toy.vocab import write_tokenizer

    out = Path(out)
    write_tokenizer(out)
    tokenizer = CLIPTokenizer.from_pretrained(out)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(
        text_config=dict(tower, vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(tower, image_size=image_size, patch_size=8), projection_dim=16,
    ))  # fmt: skip
    model.save_pretrained(out, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(out)  # fmt: skip
    return out
