"""Capacity probe: can the toy UNet map noise to the teacher's image in ONE call?

    python -m benchmarks.toy_regression_probe [--pairs-per-caption 100] [--steps 1500] [--lr 1e-4] [--out out/regression_probe]

The product's image-free warm start, measured: `swiftbrush pairs` (the teacher's 25-step DDIM
samples of seeded noises for every toy caption) and a `distill` run that only regresses the
student onto them (`--regression-steps` = `--max-steps`), then the student scored like the VSD
students (3 sampling seeds, 288 images each) and its x0 MSE on held-out pairs (another noise
seed) against their variance. If this student reaches the teacher's quality, the toy UNet has
the capacity for one-step generation. `swiftbrush/toy/train_warm_start.py` builds the shipped
start the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs-per-caption", type=int, default=100)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--pairs", type=Path, default=None, help="a finished pairs folder to reuse (default: OUT/pairs)")
    p.add_argument("--out", type=Path, default=Path("out/regression_probe"))
    args = p.parse_args()

    from swiftbrush.config import build_config
    from swiftbrush.evaluate import evaluate_model
    from swiftbrush.pairs import read_pairs, sample_pairs
    from swiftbrush.prompts import encode_text
    from swiftbrush.student import OneStepPipeline, one_step_x0
    from swiftbrush.train import distill

    pairs = args.pairs or args.out / "pairs"
    if not (pairs / "manifest.json").is_file():
        sample_pairs("toy", "toy", pairs, per_prompt=args.pairs_per_caption, steps=25, seed=0)
    held_dir = args.out / "held-out-pairs"
    if not (held_dir / "manifest.json").is_file():
        sample_pairs("toy", "toy", held_dir, per_prompt=4, steps=25, seed=1)
    config = build_config("toy", "toy", regression_pairs=str(pairs), regression_steps=args.steps, max_steps=args.steps,
                          student_lr=args.lr, checkpoint_every=max(args.steps // 3, 1), sample_prompts=0)  # fmt: skip
    run = args.out / "run"
    student = distill("toy", "toy", run, config, overwrite=run.exists())

    held = read_pairs(held_dir)
    z, x0, prompt = held.batch(range(len(held)))
    pipe = OneStepPipeline.from_pretrained(student)
    with torch.no_grad():
        cond = encode_text(pipe.tokenizer, pipe.text_encoder, [held.prompts[i] for i in prompt.tolist()])
        pred = one_step_x0(pipe.unet, z, cond, pipe.onestep["timestep"], pipe.onestep["alpha_T"], pipe.onestep["prediction_type"])
    scores = [evaluate_model(str(student), per_caption=8, seed=s) for s in (0, 1, 2)]
    row = {"held_out_mse": F.mse_loss(pred, x0).item(), "x0_variance": x0.var().item(),
           "alignment": [s["alignment"] for s in scores], "fd": [s["fd"] for s in scores]}  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    main()
