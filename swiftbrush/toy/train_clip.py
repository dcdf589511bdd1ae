"""Train the toy CLIP: a small transformers CLIPModel for the clamped CLIP loss in the toy world.

    python -m swiftbrush.toy.train_clip [--out swiftbrush/toy/assets/clip] [--steps 1200] [--seed 1]
    ClipGuidance.load("toy", "toy")   # swiftbrush.clip_guidance: this CLIP and the toy TAESD

A ViT image tower (64x64 renders, 8x8 patches) and a transformer text tower read the toy
teacher's CLIP-format tokenizer; trained contrastively on fresh, seeded renders of the 36
grammar captions. Every batch holds each caption `--per-caption` times, so the image side is
a cross-entropy over the 36 distinct captions (no false negatives from repeats) and the text
side spreads its target evenly over the caption's renders. Renders are blurred and noised at
random, and half of them replaced by their round trip through the toy TAESD (with latent
noise), because the loss sees the tiny decoder's images of a student's latents. The
temperature is fixed and low so that a caption one attribute off ends below SwiftBrush v2's
tau = 0.35 while the right one sits near 1. It shares neither architecture (the evaluator is
a CNN classifier) nor seed with the toy evaluator, so a loss built on it does not grade
itself with the evaluator's eyes.

Writes a hub-style CLIP folder (config.json, model.safetensors, tokenizer files,
preprocessor_config.json) and training.json (command, wall and CPU seconds, threads, torch,
zero-shot caption retrieval on fresh renders and on their TAESD round trips, cos of
matching and non-matching pairs), built in a temporary sibling and renamed into place.
CPU-only, one thread by default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import RESOLUTION, render_batch
from swiftbrush.toy.train_evaluator import augment
from swiftbrush.toy.train_teacher import cosine_lr
from swiftbrush_runtime.toy_assets import TOY_CLIP_DIR, TOY_TAESD_DIR, TOY_TEACHER_DIR

# CLIP's own normalisation constants (OpenAI's), as every CLIPImageProcessor of a hub CLIP carries.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH = 8
TAU = 0.35  # SwiftBrush v2's clamp, reported against the trained model's cosines
TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json")


def clip_config(tokenizer: Any, width: int, layers: int) -> dict[str, Any]:
    """CLIPConfig kwargs: text and vision towers of `width` and `layers`, the vision one a ViT on 64x64 renders."""
    tower = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=4, projection_dim=width)
    text = dict(
        tower, vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(tower, image_size=RESOLUTION, patch_size=PATCH, num_channels=3)
    return dict(text_config=text, vision_config=vision, projection_dim=width)


def image_processor() -> Any:
    """CLIP's preprocessing at the toy resolution: resize and centre-crop to 64, CLIP's mean and std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": RESOLUTION}, crop_size={"height": RESOLUTION, "width": RESOLUTION},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True,
    )  # fmt: skip


def normalise(x01: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW images in [0, 1] -> CLIP's normalised pixel values."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x01 - mean) / std


def render_pixels(captions: list, seed: int, gen: torch.Generator | None = None, views: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Fresh renders of `captions` as CLIP pixel values; augmented (blur, noise, then `views`) when `gen` is given."""
    x = torch.from_numpy(render_batch(captions, seed=seed)).permute(0, 3, 1, 2).float() / 255.0
    if gen is not None:
        x = (augment(x * 2 - 1, gen) / 2 + 0.5).clamp(0, 1)  # the evaluator's augment works on [-1, 1]
        if views is not None:
            x = views(x)
    return normalise(x)


@torch.no_grad()
def decoder_views(pixels01: torch.Tensor, taesd: Any, share: float, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Replace a random `share` of the images by their round trip through the tiny decoder (latent noise std U(0, noise)).

    The clamped CLIP loss always sees images the toy TAESD decoded from a student's latents,
    whose softened edges and shifted colours a CLIP trained on renders alone misreads.
    """
    pick = torch.rand(pixels01.shape[0], generator=gen) < share
    if not pick.any():
        return pixels01
    latents = taesd.encode(pixels01[pick] * 2 - 1).latents
    latents = latents + torch.randn(latents.shape, generator=gen) * torch.rand(latents.shape[0], 1, 1, 1, generator=gen) * noise
    out = pixels01.clone()
    out[pick] = (taesd.decode(latents).sample / 2 + 0.5).clamp(0, 1)
    return out


def text_embeddings(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt")
    return nn.functional.normalize(model.get_text_features(input_ids=ids.input_ids), dim=-1)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss when the batch holds every caption once in `txt` and several renders of each in `img`.

    Image -> text: cross-entropy over the distinct captions. Text -> image: the target is
    spread evenly over that caption's renders (repeats are positives, not negatives).
    """
    logits = logit_scale.exp() * img @ txt.T  # images x captions
    i2t = nn.functional.cross_entropy(logits, labels)
    target = nn.functional.one_hot(labels, txt.shape[0]).T.float()
    t2i = nn.functional.cross_entropy(logits.T, target / target.sum(dim=1, keepdim=True))
    return (i2t + t2i) / 2


@torch.no_grad()
def zero_shot(model: Any, tokenizer: Any, seed: int, per_caption: int, taesd: Any = None) -> dict[str, Any]:
    """Caption retrieval on fresh, unaugmented renders (and their TAESD round trips), and where cos sits against tau.

    `accuracy`: share of images whose best caption of the 36 is their own. Matching cos are
    the image's own caption; `near_miss` are captions differing in one attribute, `other`
    the rest (two or three attributes wrong).
    """
    captions = all_captions()
    batch = captions * per_caption
    txt = text_embeddings(model, tokenizer, [c.text for c in captions])
    labels = torch.tensor([captions.index(c) for c in batch])
    wrong_attrs = torch.tensor([[sum(a != b for a, b in zip(c.labels, d.labels)) for d in captions] for c in batch])

    def stats(v: torch.Tensor) -> dict[str, float]:
        q = torch.quantile(v, torch.tensor([0.05, 0.5, 0.95]))
        return {"mean": round(v.mean().item(), 4), "p05": round(q[0].item(), 4), "median": round(q[1].item(), 4),
                "p95": round(q[2].item(), 4), "above_tau": round((v > TAU).float().mean().item(), 4)}  # fmt: skip

    def scores(pixels01: torch.Tensor) -> dict[str, Any]:
        img = nn.functional.normalize(model.get_image_features(pixel_values=normalise(pixels01)), dim=-1)
        cos = img @ txt.T
        return {
            "accuracy": round((cos.argmax(dim=1) == labels).float().mean().item(), 4),
            "cos_matching": stats(cos[torch.arange(len(batch)), labels]),
            "cos_near_miss": stats(cos[wrong_attrs == 1]),
            "cos_other": stats(cos[wrong_attrs >= 2]),
        }

    renders = torch.from_numpy(render_batch(batch, seed=seed)).permute(0, 3, 1, 2).float() / 255.0
    out: dict[str, Any] = {"images": len(batch), "seed": seed, "tau": TAU, "renders": scores(renders)}
    if taesd is not None:
        out["taesd_roundtrip"] = scores((taesd.decode(taesd.encode(renders * 2 - 1).latents).sample / 2 + 0.5).clamp(0, 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TOY_CLIP_DIR)
    p.add_argument("--tokenizer", type=Path, default=TOY_TEACHER_DIR / "tokenizer", help="a CLIPTokenizer folder (the toy teacher's)")
    p.add_argument("--width", type=int, default=64, help="hidden size of both towers and the shared embedding")
    p.add_argument("--layers", type=int, default=2, help="transformer layers in each tower")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--per-caption", type=int, default=2, help="renders of each of the 36 captions per batch")
    p.add_argument("--lr", type=float, default=2e-3)
    # A low fixed temperature keeps pushing wrong captions away after retrieval is perfect, so captions one
    # attribute off end below SwiftBrush v2's tau = 0.35; CLIP's learned scale grows until the softmax is
    # satisfied and leaves them above tau, where the clamped loss does not see them.
    p.add_argument("--logit-scale", type=float, default=5.0, help="fixed inverse temperature; 0: learned, as CLIP (capped at 100)")
    p.add_argument("--taesd", type=Path, default=TOY_TAESD_DIR, help="the tiny decoder whose round trips join the batches")
    p.add_argument("--taesd-share", type=float, default=0.5, help="share of training images replaced by their TAESD round trip")
    p.add_argument("--taesd-noise", type=float, default=0.5, help="max std of the latent noise before decoding a round trip")
    p.add_argument("--eval-per-caption", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)  # the evaluator's is 0
    p.add_argument("--threads", type=int, default=1)  # one thread: fair to other jobs on a shared machine, reproducible
    args = p.parse_args()
    if min(args.width, args.layers, args.steps, args.per_caption, args.eval_per_caption, args.threads) < 1 or args.lr <= 0 or not 0 <= args.logit_scale <= 100:
        p.error("--width, --layers, --steps, --per-caption, --eval-per-caption and --threads must be >= 1, --lr > 0, --logit-scale in [0, 100]")
    if not 0 <= args.taesd_share <= 1 or args.taesd_noise < 0:
        p.error("--taesd-share must be in [0, 1], --taesd-noise >= 0")
    if args.width % 4:
        p.error("--width must be a multiple of 4 (four attention heads)")
    if not (args.tokenizer / "tokenizer_config.json").is_file():
        p.error(f"--tokenizer {args.tokenizer} has no tokenizer_config.json")

    from diffusers import AutoencoderTiny
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from swiftbrush_runtime.manifest import OutputKind, atomic_dir, unlisted_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer)
    model = CLIPModel(CLIPConfig(**clip_config(tokenizer, args.width, args.layers)))
    taesd = AutoencoderTiny.from_pretrained(args.taesd, torch_dtype=torch.float32, use_safetensors=True).eval()
    views = partial(decoder_views, taesd=taesd, share=args.taesd_share, noise=args.taesd_noise, gen=gen)
    captions = all_captions()
    texts = [c.text for c in captions]
    labels = torch.arange(len(captions)).repeat(args.per_caption)
    if args.logit_scale > 0:
        model.logit_scale.data.fill_(math.log(args.logit_scale))
        model.logit_scale.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    started, cpu_started = time.time(), time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=min(100, args.steps // 10))
        pixels = render_pixels(captions * args.per_caption, seed=int(rng.integers(2**31)), gen=gen, views=views)
        img = nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)
        loss = contrastive_loss(img, text_embeddings(model, tokenizer, texts), labels, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: temperature 1/100
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} scale {model.logit_scale.exp().item():.1f} ({time.time() - started:.0f}s)", flush=True)
    seconds, cpu_seconds = round(time.time() - started, 1), round(time.process_time() - cpu_started, 1)

    model.eval()
    info = {
        "trained_with": "python -m swiftbrush.toy.train_clip "
        + f"--width {args.width} --layers {args.layers} --steps {args.steps} --per-caption {args.per_caption} --lr {args.lr} --logit-scale {args.logit_scale} "
        + f"--taesd-share {args.taesd_share} --taesd-noise {args.taesd_noise} --eval-per-caption {args.eval_per_caption} --seed {args.seed} --threads {args.threads}",
        "steps": args.steps,
        "seconds": seconds,  # wall time of training, on a machine shared with other jobs
        "cpu_seconds": cpu_seconds,
        "parameters": {"text": sum(p.numel() for p in model.text_model.parameters()), "vision": sum(p.numel() for p in model.vision_model.parameters())},
        "zero_shot_fresh_renders": zero_shot(model, tokenizer, seed=args.seed + 10_000, per_caption=args.eval_per_caption, taesd=taesd),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    own = ("config.json", "model.safetensors", "preprocessor_config.json", "training.json", *TOKENIZER_FILES)
    clip_kind = OutputKind("train_clip output", lambda p: None if (p / "training.json").is_file() and not unlisted_file(p, own) else "not train_clip's files")
    with atomic_dir(args.out, overwrite=True, kind=clip_kind) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        image_processor().save_pretrained(tmp)
        for name in TOKENIZER_FILES:  # the teacher's files as they are (tokenizer.json included)
            shutil.copyfile(args.tokenizer / name, tmp / name)
        (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes it private; this is a shipped asset
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
