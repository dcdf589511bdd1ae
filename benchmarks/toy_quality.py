"""The SwiftBrush (v1 and v2) tables in miniature, on the toy world.

    python -m benchmarks.toy_quality [--rows v1,v2,merged ...] [--train-seeds 0,1,2] [--sample-seeds 0,1,2]
                                     [--out out/toy_quality] [--json FILE]

Each row is one recipe, distilled once per training seed with the product's own `distill`
(and `merge`), each student scored by the toy evaluator (alignment, FD over the full caption
grid, 8 images per caption) once per sampling seed; the table gives the mean and the spread
(min-max) over all training x sampling seeds. Rows (`--rows`, default all):

    teacher-25, teacher-1     the teacher at 25 steps (the target) and at 1 step (no distillation)
    sds, v1                   SDS (no LoRA teacher) and SwiftBrush v1, both the `toy` preset from the teacher
    v1-tts                    v1 + DMD2's two-time-scale rule (5 LoRA updates per student update)
    v1-clip                   v1 + SwiftBrush v2's clamped CLIP loss (the toy CLIP, weight 0.1 decayed)
    v1-lora-student           v1 with a LoRA student (rank 64 on the toy)
    start                     the shipped warm start alone (regression on the teacher's own samples)
    start-vsd                 warm start + VSD with the two-time-scale rule (v2's recipe without the CLIP loss)
    v2                        warm start + VSD + clamped CLIP loss (`--recipe swiftbrush-v2`)
    merged                    v2's student merged with its start, weight 0.5 (SwiftBrush v2's last step)

Runs are kept under --out (one folder per row and training seed, reused when already finished),
so an interrupted table resumes. Training time grows with the rows: ~3-5 minutes per run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

ROWS = ("teacher-25", "teacher-1", "sds", "v1", "v1-tts", "v1-clip", "v1-lora-student", "start", "start-vsd", "v2", "merged")
TOY_CLIP = dict(clip_model="toy", clip_decoder="toy", clip_weight=0.1)


def recipe(row: str) -> tuple[str, dict[str, Any]] | None:
    """The (recipe, overrides) a trained row distils with; None for rows that train nothing."""
    return {
        "sds": ("swiftbrush", {"sds": True}),
        "v1": ("swiftbrush", {}),
        "v1-tts": ("swiftbrush", {"lora_updates": 5}),
        "v1-clip": ("swiftbrush", TOY_CLIP),
        "v1-lora-student": ("swiftbrush", {"student_lora_rank": 64}),
        "start-vsd": ("swiftbrush-v2", {"clip_weight": 0.0}),
        "v2": ("swiftbrush-v2", {}),
    }.get(row)


def trained_student(row: str, seed: int, out: Path) -> Path:
    """The student of a trained row for one training seed (distilled once, then reused)."""
    from swiftbrush.config import build_config
    from swiftbrush.train import distill

    name, overrides = recipe(row)  # type: ignore[misc]
    run = out / f"{row}-seed{seed}"
    if not (run / "student" / "manifest.json").is_file():
        config = build_config("toy", "toy", recipe=name, seed=seed, sample_prompts=0, **overrides)
        started = time.time()
        distill("toy", "toy", run, config, overwrite=run.exists())
        (run / "seconds.txt").write_text(f"{time.time() - started:.1f}\n")
    return run / "student"


def start_student(out: Path) -> Path:
    from swiftbrush.demo import write_start_student
    from swiftbrush.teacher import load_teacher

    folder = out / "start"
    if not (folder / "manifest.json").is_file():
        write_start_student(folder, load_teacher("toy"))
    return folder


def merged_student(seed: int, out: Path) -> Path:
    from swiftbrush.demo import MERGE_WEIGHT
    from swiftbrush.merge import merge_students

    folder = out / f"merged-seed{seed}"
    if not (folder / "manifest.json").is_file():
        merge_students(trained_student("v2", seed, out), start_student(out), MERGE_WEIGHT, folder, overwrite=folder.exists())
    return folder


def scores_of(row: str, train_seeds: list[int], sample_seeds: list[int], out: Path, per_caption: int) -> list[dict[str, Any]]:
    from swiftbrush.evaluate import evaluate_model

    def each(model: Callable[[int], str], seeds: list[int], steps: int = 25) -> list[dict[str, Any]]:
        return [{**evaluate_model(model(t), steps=steps, per_caption=per_caption, seed=s), "train_seed": t} for t in seeds for s in sample_seeds]

    if row in ("teacher-25", "teacher-1"):
        return each(lambda t: "toy-teacher", [0], steps=25 if row == "teacher-25" else 1)
    if row == "start":
        return each(lambda t: str(start_student(out)), [0])
    if row == "merged":
        return each(lambda t: str(merged_student(t, out)), train_seeds)
    return each(lambda t: str(trained_student(row, t, out)), train_seeds)


def summary(row: str, results: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    align = [r["alignment"] for r in results]
    fd = [r["fd"] for r in results]
    seconds = [float((out / f"{row}-seed{t}" / "seconds.txt").read_text()) for t in sorted({r["train_seed"] for r in results})
               if (out / f"{row}-seed{t}" / "seconds.txt").is_file()]  # fmt: skip
    return {"row": row, "runs": len({r["train_seed"] for r in results}), "scores": len(results),
            "alignment": statistics.mean(align), "alignment_range": [min(align), max(align)],
            "fd": statistics.mean(fd), "fd_range": [min(fd), max(fd)],
            "train_seconds": statistics.mean(seconds) if seconds else None, "results": results}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--train-seeds", default="0,1,2")
    p.add_argument("--sample-seeds", default="0,1,2")
    p.add_argument("--per-caption", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("out/toy_quality"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(ROWS)}")
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    sample_seeds = [int(s) for s in args.sample_seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    table = []
    for row in rows:
        table.append(summary(row, scores_of(row, train_seeds, sample_seeds, args.out, args.per_caption), args.out))
        r = table[-1]
        print(f"{row}: alignment {r['alignment']:.3f} [{r['alignment_range'][0]:.3f}, {r['alignment_range'][1]:.3f}], "
              f"FD {r['fd']:.1f} [{r['fd_range'][0]:.1f}, {r['fd_range'][1]:.1f}] ({r['runs']} runs x {len(sample_seeds)} sampling seeds)", flush=True)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"train_seeds": train_seeds, "sample_seeds": sample_seeds, "rows": table}, indent=2) + "\n")

    print("\n| method | runs x sampling seeds | alignment (mean, range) | FD (mean, range) | distill time per run |\n|---|---|---|---|---|")
    for r in table:
        t = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else "—"
        print(f"| {r['row']} | {r['runs']} x {len(sample_seeds)} | {r['alignment']:.3f} ({r['alignment_range'][0]:.3f}–{r['alignment_range'][1]:.3f}) "
              f"| {r['fd']:.1f} ({r['fd_range'][0]:.1f}–{r['fd_range'][1]:.1f}) | {t} |")  # fmt: skip


if __name__ == "__main__":
    main()
