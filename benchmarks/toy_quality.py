"""The SwiftBrush table in miniature, on the toy world.

    python benchmarks/toy_quality.py [--per-caption 8] [--out out/toy_quality] [--json FILE]

Teacher at 25 steps with CFG, the teacher at 1 step, the SDS ablation (no LoRA
teacher) and the VSD student, both distilled with the `toy` preset, each scored
by the toy evaluator (alignment, FD) over the full caption grid. Prints a
Markdown table to paste into benchmarks/RESULTS.md. About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from swiftbrush.config import build_config
from swiftbrush.evaluate import default_guidance_scale, sample_teacher, toy_prompts
from swiftbrush.student import sample_student
from swiftbrush.teacher import load_teacher
from swiftbrush.toy.evaluator import Evaluator
from swiftbrush.train import distill


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-caption", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("out/toy_quality"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    evaluator = Evaluator.load()
    prompts = toy_prompts(args.per_caption)
    teacher = load_teacher("toy")
    scale = default_guidance_scale("toy")
    rows = []
    for name, steps in (("teacher, 25 steps, CFG", 25), ("teacher, 1 step", 1)):
        images = sample_teacher(teacher, prompts, steps=steps, guidance_scale=scale, seed=args.seed)
        s = evaluator.score(images, prompts)
        rows.append({"method": name, "steps": steps, "alignment": s.alignment, "fd": s.fd, "train_seconds": None})
    for name, sds in (("SDS student (no LoRA teacher)", True), ("VSD student (SwiftBrush)", False)):
        config = build_config("toy", "toy", sds=sds)
        start = time.time()
        student = distill("toy", "toy", args.out / ("sds" if sds else "vsd"), config, overwrite=True)
        seconds = time.time() - start
        s = evaluator.score(sample_student(student, prompts, seed=args.seed), prompts)
        rows.append({"method": name, "steps": 1, "alignment": s.alignment, "fd": s.fd, "train_seconds": round(seconds, 1)})

    print(f"\n| method | UNet calls | alignment | FD | distill time |\n|---|---|---|---|---|")
    for r in rows:
        t = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else "—"
        print(f"| {r['method']} | {r['steps']} | {r['alignment']:.3f} | {r['fd']:.1f} | {t} |")
    if args.json:
        args.json.write_text(json.dumps({"images": len(prompts), "guidance_scale": scale, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
