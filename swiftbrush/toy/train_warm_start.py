"""Build the toy's one-step start (its SD-Turbo) from the toy teacher alone, with the product's own commands.

    python -m swiftbrush.toy.train_warm_start [--work out/warm-start] [--out swiftbrush/toy/assets/warm-start]

SwiftBrush v2 starts its student from SD-Turbo, a one-step model its teacher's makers
released. The toy teacher has none, so this script makes one without images:

1. `swiftbrush pairs`: the teacher's own 25-step DDIM samples (CFG as the toy evaluates) of
   100 seeded noises per toy caption (3600 pairs);
2. `swiftbrush distill --regression-steps N --max-steps N`: the student (a copy of the teacher
   UNet) regressed onto those pairs in one call at t = 999, nothing else (the toy preset's batch
   and EMA, Adam at lr 1e-4);
3. the resulting UNet (EMA weights, stored in float16 to halve the file) goes to `--out` as a
   bare UNet folder, which `--student-init toy-warm-start` loads.

Seeded throughout, so a rerun rebuilds the same weights up to float rounding across machines.
`--work` keeps the pairs and the run, so an interrupted build resumes (rerun the same command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PAIRS_PER_CAPTION = 100
TEACHER_STEPS = 25
REGRESSION_STEPS = 1500
REGRESSION_LR = 1e-4
FILES = ("config.json", "diffusion_pytorch_model.safetensors", "training.json")


def recognise_warm_start(root: Path) -> str | None:
    """None for a folder this script wrote (its three files, its training.json): only that is replaced."""
    extra = sorted(p.name for p in root.iterdir() if p.name not in FILES)
    if extra:
        return f"it holds {extra[0]}, which this script does not write"
    try:
        made_here = json.loads((root / "training.json").read_text())["trained_with"].startswith("python -m swiftbrush.toy.train_warm_start")
    except (OSError, ValueError, KeyError, AttributeError):
        made_here = False
    return None if made_here else "its training.json is not this script's"


def main() -> None:
    from swiftbrush_runtime.toy_assets import TOY_WARM_START_DIR

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("out/warm-start"), help="pairs/ and run/ (kept: a rerun resumes)")
    p.add_argument("--out", type=Path, default=TOY_WARM_START_DIR)
    p.add_argument("--steps", type=int, default=REGRESSION_STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", type=Path, default=None, help="a finished `swiftbrush pairs` folder of the same plan, instead of sampling into WORK/pairs")
    args = p.parse_args()

    import torch
    from diffusers import UNet2DConditionModel

    from swiftbrush.config import build_config
    from swiftbrush.pairs import sample_pairs
    from swiftbrush.train import distill
    from swiftbrush_runtime.manifest import OutputKind, atomic_dir, atomic_write

    started = time.time()
    pairs = args.pairs or args.work / "pairs"
    if not (pairs / "manifest.json").is_file():  # sampled, or finished where an earlier run stopped
        sample_pairs("toy", "toy", pairs, per_prompt=PAIRS_PER_CAPTION, steps=TEACHER_STEPS, seed=args.seed, batch_size=64)
    pairs_seconds = time.time() - started  # 0 when an earlier run (or --pairs) had sampled them
    config = build_config("toy", "toy", regression_pairs=str(pairs), regression_steps=args.steps, max_steps=args.steps,
                          student_lr=REGRESSION_LR, seed=args.seed, checkpoint_every=250, sample_prompts=4)  # fmt: skip
    run = args.work / "run"
    resume = (run / "run.json").is_file()
    student = distill("toy", "toy", run, config, resume=resume)
    unet = UNet2DConditionModel.from_pretrained(student / "unet", torch_dtype=torch.float16)
    with atomic_dir(args.out, overwrite=True, kind=OutputKind("toy warm start", recognise_warm_start)) as tmp:
        unet.save_pretrained(tmp, safe_serialization=True)
        info = {
            "trained_with": "python -m swiftbrush.toy.train_warm_start " + " ".join(sys.argv[1:]),
            "pairs": {"per_caption": PAIRS_PER_CAPTION, "teacher_steps": TEACHER_STEPS, "seed": args.seed, "seconds": round(pairs_seconds, 1)},
            "regression": {"steps": args.steps, "student_lr": REGRESSION_LR, "batch_size": config.batch_size, "ema_decay": config.ema_decay},
            "seconds": round(time.time() - started, 1), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "dtype": "float16",
        }  # fmt: skip
        atomic_write(tmp / "training.json", json.dumps(info, indent=2) + "\n")
        for f in tmp.iterdir():  # save_pretrained's temporary files are private; these are ordinary package data
            f.chmod(0o644)
    print(f"warm start written to {args.out}")


if __name__ == "__main__":
    main()
