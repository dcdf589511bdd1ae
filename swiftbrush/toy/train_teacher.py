"""Train the toy teacher: an SD-structured latent diffusion model of the toy world.

    python -m swiftbrush.toy.train_teacher [--out swiftbrush/toy/assets/teacher]
        [--vae-steps 1500] [--unet-steps 4000] [--seed 0]

Three phases, seeded, CPU-only: (1) an AutoencoderKL 64x64x3 <-> 8x8x4 on renders,
(2) the dataset encoded once into latent distributions, (3) a CLIPTextModel and a
UNet2DConditionModel trained together with SD's eps objective and 10% empty-prompt
dropout (for classifier-free guidance). The result is saved as a
`StableDiffusionPipeline` folder. Run time on 2 CPU cores is recorded in
`training.json` next to the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.models import SCHEDULER_CONFIG, UNET_CONFIG, VAE_CONFIG, text_encoder_config
from swiftbrush.toy.render import render_batch
from swiftbrush.toy.vocab import MAX_LENGTH, write_tokenizer
from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR as TEACHER_DIR



def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(images: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator):
    """AutoencoderKL with SD's objective minus the GAN/LPIPS terms (flat toy images need neither)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    start = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, 1e-3)
        x = images_to_tensor(images[rng.integers(0, len(images), batch_size)])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = nn.functional.mse_loss(recon, x) + 0.1 * nn.functional.l1_loss(recon, x)
        loss = rec + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"vae step {step} rec {rec.item():.5f} ({time.time() - start:.0f}s)", flush=True)
    return vae.eval()


@torch.no_grad()
def encode_dataset(vae, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        d = vae.encode(images_to_tensor(images[i : i + batch_size])).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TEACHER_DIR)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--unet-steps", type=int, default=4000)
    p.add_argument("--images-per-caption", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    tok_dir = args.out.parent / (args.out.name + ".tokenizer.tmp")
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    captions = all_captions() * args.images_per_caption
    images = render_batch(captions, seed=args.seed)
    print(f"rendered {len(images)} images ({time.time() - started:.0f}s)", flush=True)

    vae = train_vae(images, args.vae_steps, 32, rng)
    mean, std = encode_dataset(vae, images)
    sample = mean + std * torch.randn_like(std)
    vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    scale = vae.config.scaling_factor
    print(f"latents encoded, scaling_factor {scale:.4f} ({time.time() - started:.0f}s)", flush=True)

    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(**text_encoder_config(len(vocab), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id))
    )
    unet = UNet2DConditionModel(**UNET_CONFIG)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    ids = tokenizer([c.text for c in all_captions()], padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
    caption_index = torch.arange(len(captions)) % len(all_captions())

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema = EMAModel(nn.ModuleList([unet, text_encoder]).parameters(), decay=0.999, use_ema_warmup=True, power=0.75)
    t0 = time.time()

    def save(step: int) -> None:
        ema.store(params)
        ema.copy_to(params)
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(args.out, safe_serialization=True)
        shutil.copytree(tok_dir, args.out / "tokenizer", dirs_exist_ok=True)  # adds tokenizer.json for the runtime
        ema.restore(params)
        info = {
            "trained_with": "python -m swiftbrush.toy.train_teacher "
            + f"--vae-steps {args.vae_steps} --unet-steps {args.unet_steps} --images-per-caption {args.images_per_caption} "
            + f"--batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
            "unet_steps_done": step,
            "seconds": round(time.time() - started, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        (args.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"saved teacher at unet step {step} -> {args.out}", flush=True)

    for step in range(args.unet_steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.unet_steps, args.lr, warmup=200)
        idx = torch.from_numpy(rng.integers(0, len(captions), args.batch_size))
        latents = (mean[idx] + std[idx] * torch.randn_like(std[idx])) * scale
        batch_ids = ids[caption_index[idx]]
        drop = torch.rand(args.batch_size) < 0.1  # empty prompt 10% of the time: CFG needs an unconditional model
        batch_ids = torch.where(drop[:, None], empty_ids, batch_ids)
        cond = text_encoder(batch_ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,))
        noisy = scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, cond).sample
        loss = nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(nn.ModuleList([unet, text_encoder]).parameters())
        if step % 100 == 0 or step == args.unet_steps - 1:
            print(f"unet step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        if (step + 1) % args.save_every == 0 or step == args.unet_steps - 1:
            save(step + 1)
    shutil.rmtree(tok_dir)


if __name__ == "__main__":
    main()
