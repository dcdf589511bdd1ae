"""Train the toy tiny autoencoder: a diffusers AutoencoderTiny (TAESD) for the toy teacher's latents.

    python -m swiftbrush.toy.train_taesd [--out swiftbrush/toy/assets/taesd] [--steps 2500] [--seed 0]
    swiftbrush export onnx --student DIR --out DIR --decoder taesd --taesd toy

Distilled from the committed toy teacher's AutoencoderKL, seeded, CPU-only, one thread;
about 8 minutes on 2 shared cores (the shipped weights: 481 s, 2500 steps). A pool
of fresh renders is encoded once by the frozen VAE; each render gives two decoder
inputs, its mean latent and a posterior sample pushed further off the encodings'
manifold (a one-step student's latents are not exact encodings), each with the VAE
decoder's image of it. The decoder learns to reproduce those images (the render itself
is a small secondary target); the encoder learns the VAE's mean latent. Both speak
TAESD's convention, which `export onnx --decoder taesd` and the torch backend assume:
*scaled* latents (VAE latent x scaling_factor) and images in [-1, 1] at the diffusers
API. The weights, `config.json` and a `training.json` (command, wall and CPU time,
errors on fresh renders) are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import render_batch
from swiftbrush.toy.train_teacher import TEACHER_DIR, cosine_lr, images_to_tensor
from swiftbrush_runtime.toy_assets import TOY_TAESD_DIR as TAESD_DIR



def taesd_config(width: int) -> dict[str, Any]:
    """TAESD's architecture at toy width: four resolution levels (three 2x down/upsamplings = the
    toy VAE's 8x), one block per level; one width throughout, as DecoderTiny's per-level convs require."""
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        encoder_block_out_channels=(width,) * 4,
        decoder_block_out_channels=(width,) * 4,
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )


def load_vae(teacher: Path = TEACHER_DIR):
    """The frozen toy VAE, fp32, and its scaling factor."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(teacher, subfolder="vae", torch_dtype=torch.float32, use_safetensors=True)
    return vae.eval().requires_grad_(False), float(vae.config.scaling_factor)


@torch.no_grad()
def make_pool(vae, scale: float, n: int, seed: int, perturb: float, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """`n` fresh renders, each with two decoder inputs and the VAE decoder's image of each.

    One input is the VAE's scaled mean latent (what encoding a render gives); the other a
    posterior sample with extra Gaussian noise of std U(0, perturb) (what a one-step
    student's latent may look like). Renders are kept as uint8 and the VAE's images in
    fp16 (about 60 kB per render); latent rows 2i and 2i+1 belong to render i.
    """
    captions = all_captions()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    images = render_batch([captions[i] for i in rng.integers(0, len(captions), n)], seed=seed)
    means, latents, targets = [], [], []
    for i in range(0, n, batch_size):
        d = vae.encode(images_to_tensor(images[i : i + batch_size])).latent_dist
        sigma = torch.rand(d.mean.shape[0], 1, 1, 1, generator=gen) * perturb / scale
        noisy = d.mean + d.std * torch.randn(d.mean.shape, generator=gen) + sigma * torch.randn(d.mean.shape, generator=gen)
        z = torch.stack([d.mean, noisy], dim=1).flatten(0, 1)
        means.append(d.mean * scale)
        latents.append(z * scale)
        targets.append(vae.decode(z).sample.half())
    return {"images": torch.from_numpy(images), "means": torch.cat(means), "latents": torch.cat(latents), "targets": torch.cat(targets)}


def pool_batch(pool: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """A training batch from pool rows (latent rows: image i has rows 2i and 2i+1)."""
    image = images_to_tensor(pool["images"][rows // 2].numpy())
    return {"image": image, "mean": pool["means"][rows // 2], "latent": pool["latents"][rows], "target": pool["targets"][rows].float()}


def decoder_loss(tiny, batch: dict[str, torch.Tensor], render_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Match the VAE decoder's image (L1 + MSE); a little L1 towards the render itself."""
    out = tiny.decode(batch["latent"]).sample
    distill = nn.functional.l1_loss(out, batch["target"]) + nn.functional.mse_loss(out, batch["target"])
    render = nn.functional.l1_loss(out, batch["image"])
    return distill + render_weight * render, {"dec_distill": distill.item(), "dec_render": render.item()}


def encoder_loss(tiny, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Match the VAE's scaled mean latent."""
    loss = nn.functional.mse_loss(tiny.encode(batch["image"]).latents, batch["mean"])
    return loss, {"enc": loss.item()}


@torch.no_grad()
def measure(tiny, vae, scale: float, n: int = 256, seed: int = 10_000, batch_size: int = 64) -> dict[str, float]:
    """Errors on `n` fresh renders, images compared on [0, 1] after clamping to [-1, 1].

    `decode_mae_vs_vae`: TAESD decode of the VAE's scaled mean latent vs the VAE decoder's
    image of it (the number `--decoder taesd` changes); `vae_mae_vs_render` and
    `decode_mae_vs_render` put it next to the VAE's own reconstruction error;
    `encode_rel_err`: relative L2 error of the TAESD latent vs the VAE's scaled mean;
    `roundtrip_mae_vs_render`: TAESD encode then decode.
    """
    captions = all_captions()
    rng = np.random.default_rng(seed)
    images = render_batch([captions[i] for i in rng.integers(0, len(captions), n)], seed=seed)
    sums = dict.fromkeys(("decode_mae_vs_vae", "vae_mae_vs_render", "decode_mae_vs_render", "roundtrip_mae_vs_render"), 0.0)
    worst = enc_num = enc_den = 0.0
    for i in range(0, n, batch_size):
        x = images_to_tensor(images[i : i + batch_size])
        mean = vae.encode(x).latent_dist.mean
        ref = vae.decode(mean).sample.clamp(-1, 1)
        dec = tiny.decode(mean * scale).sample.clamp(-1, 1)
        enc = tiny.encode(x).latents
        back = tiny.decode(enc).sample.clamp(-1, 1)
        for key, a, b in (("decode_mae_vs_vae", dec, ref), ("vae_mae_vs_render", ref, x), ("decode_mae_vs_render", dec, x), ("roundtrip_mae_vs_render", back, x)):
            sums[key] += (a - b).abs().mean().item() / 2 * x.shape[0]
        worst = max(worst, (dec - ref).abs().max().item() / 2)
        enc_num += (enc - mean * scale).square().sum().item()
        enc_den += (mean * scale).square().sum().item()
    out = {**{k: v / n for k, v in sums.items()}, "decode_max_vs_vae": worst, "encode_rel_err": (enc_num / enc_den) ** 0.5}
    return {k: round(v, 5) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TAESD_DIR)
    p.add_argument("--teacher", type=Path, default=TEACHER_DIR, help="the teacher folder whose vae/ is distilled")
    p.add_argument("--width", type=int, default=16, help="channels of every encoder and decoder resolution level")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--pool", type=int, default=2048, help="fresh renders encoded once; each gives two decoder inputs")
    p.add_argument("--perturb", type=float, default=1.5, help="max std of the extra noise on each render's second latent")
    p.add_argument("--render-weight", type=float, default=0.1, help="weight of the L1 to the render beside the VAE target")
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    # One thread: on a shared 2-core machine two OpenMP threads fighting other jobs made a
    # step >10x slower, and a fixed thread count keeps the run bit-reproducible.
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if min(args.width, args.threads, args.steps, args.eval_images) < 1 or args.batch_size < 2 or args.pool < args.batch_size:
        p.error("--width, --threads, --steps and --eval-images must be >= 1, --batch-size >= 2, --pool >= --batch-size")
    if args.lr <= 0 or args.perturb < 0 or args.render_weight < 0:
        p.error("--lr must be > 0, --perturb and --render-weight >= 0")
    if not (args.teacher / "vae" / "config.json").is_file():
        p.error(f"--teacher {args.teacher} has no vae/config.json")

    from diffusers import AutoencoderTiny

    from swiftbrush_runtime.manifest import OutputKind, atomic_dir, unlisted_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started, cpu_started = time.time(), time.process_time()
    vae, scale = load_vae(args.teacher)
    pool = make_pool(vae, scale, args.pool, args.seed, args.perturb)
    print(f"pool of {args.pool} renders encoded and decoded ({time.time() - started:.0f}s)", flush=True)
    tiny = AutoencoderTiny(**taesd_config(args.width))
    opt = torch.optim.AdamW(tiny.parameters(), lr=args.lr, weight_decay=0.0)
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=min(100, args.steps // 10))
        data = pool_batch(pool, torch.from_numpy(rng.integers(0, 2 * args.pool, args.batch_size)))
        dec, dec_logs = decoder_loss(tiny, data, args.render_weight)
        enc, enc_logs = encoder_loss(tiny, data)
        opt.zero_grad()
        (dec + enc).backward()  # encoder and decoder share no weights: one step trains both
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            logs = " ".join(f"{k} {v:.5f}" for k, v in {**dec_logs, **enc_logs}.items())
            print(f"step {step} {logs} ({time.time() - started:.0f}s)", flush=True)
    seconds, cpu_seconds = round(time.time() - started, 1), round(time.process_time() - cpu_started, 1)

    tiny.eval()
    errors = measure(tiny, vae, scale, n=args.eval_images, seed=args.seed + 10_000)
    info = {
        "trained_with": "python -m swiftbrush.toy.train_taesd "
        + f"--width {args.width} --steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} --pool {args.pool} "
        + f"--perturb {args.perturb} --render-weight {args.render_weight} --eval-images {args.eval_images} "
        + f"--seed {args.seed} --threads {args.threads}",
        "distilled_from": "teacher vae/ (scaled latents: VAE latent x scaling_factor)",
        "vae_scaling_factor": scale,
        "steps": args.steps,
        "seconds": seconds,  # wall time of pool + training, on a machine shared with other jobs
        "cpu_seconds": cpu_seconds,
        "parameters": {"encoder": sum(p.numel() for p in tiny.encoder.parameters()), "decoder": sum(p.numel() for p in tiny.decoder.parameters())},
        "fresh_render_errors": {"images": args.eval_images, "seed": args.seed + 10_000, **errors},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    own = ("config.json", "training.json", "diffusion_pytorch_model.safetensors")  # what an earlier run wrote: --out may be replaced
    taesd_kind = OutputKind("train_taesd output", lambda p: None if (p / "training.json").is_file() and not unlisted_file(p, own) else "not train_taesd's files")
    with atomic_dir(args.out, overwrite=True, kind=taesd_kind) as tmp:
        tiny.save_pretrained(tmp, safe_serialization=True)
        # diffusers 0.39 saves a `block_out_channels` key that its own loader then warns about on every load.
        config = json.loads((tmp / "config.json").read_text())
        config.pop("block_out_channels", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        for path in (tmp, *tmp.iterdir()):  # mkdtemp and safetensors make them private; this is a shipped asset
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
