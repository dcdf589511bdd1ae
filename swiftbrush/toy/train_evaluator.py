"""Train the toy evaluator (attribute classifier) on fresh renders.

    python -m swiftbrush.toy.train_evaluator [--out swiftbrush/toy/assets/evaluator] [--steps 1500]

Seeded and CPU-only; about 3 minutes on 2 cores. Renders are blurred and noised
at random so that the classifier judges attributes, not the crispness of the
renderer (generated images are softer than renders).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swiftbrush.toy.evaluator import EVALUATOR_DIR, AttributeClassifier, Evaluator, to_tensor
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import render_batch


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random blur (as a VAE decoder softens) and pixel noise, per image."""
    n = x.shape[0]
    sigma = torch.rand(n, generator=gen) * 1.5
    out = []
    coords = torch.arange(-3, 4, dtype=torch.float32)
    for img, s in zip(x, sigma):
        if s > 0.2:
            k = torch.exp(-(coords**2) / (2 * s**2))
            k = (k / k.sum()).view(1, 1, 1, 7)
            img = nn.functional.conv2d(img[:, None], k, padding=(0, 3))
            img = nn.functional.conv2d(img, k.transpose(2, 3), padding=(3, 0))[:, 0]
        out.append(img)
    x = torch.stack(out)
    return x + torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.1


def accuracy(evaluator: Evaluator, seed: int, per_caption: int = 20) -> dict[str, float]:
    """Per-attribute accuracy on fresh, unaugmented renders of the whole grid."""
    captions = all_captions() * per_caption
    _, pred = evaluator.classify(render_batch(captions, seed=seed))
    truth = np.array([c.labels for c in captions])
    return {n: float((pred[:, i] == truth[:, i]).mean()) for i, n in enumerate(("colour", "shape", "background"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=EVALUATOR_DIR)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    captions = all_captions()
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps)
    start = time.time()
    for step in range(args.steps):
        batch = [captions[i] for i in rng.integers(0, len(captions), args.batch_size)]
        x = augment(to_tensor(render_batch(batch, seed=int(rng.integers(2**31)))), gen)
        y = torch.tensor([c.labels for c in batch])
        _, logits = model(x)
        loss = sum(nn.functional.cross_entropy(l, y[:, i]) for i, l in enumerate(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)

    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out / "model.safetensors")
    acc = accuracy(Evaluator(model), seed=args.seed + 10_000)
    meta = {
        "model": {"width": 32, "feature_dim": 128},
        "trained_with": f"python -m swiftbrush.toy.train_evaluator --steps {args.steps} --seed {args.seed}",
        "fresh_render_accuracy": acc,
        "seconds": round(time.time() - start, 1),
    }
    (args.out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
