"""`make demo` / `swiftbrush demo`: the whole chain on the built-in toy world.

    swiftbrush demo --out out/demo

Offline, CPU, minutes: the toy teacher at 25 steps and at 1 step, scored by the
toy evaluator (alignment and FD), a labelled image grid and `report.json`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from swiftbrush.evaluate import default_guidance_scale, sample_teacher, toy_prompts
from swiftbrush.teacher import load_teacher
from swiftbrush.toy.grammar import all_captions
from swiftbrush_runtime.images import labelled_grid

GRID_CAPTIONS = 12  # columns of grid.png: every 3rd caption covers each colour, shape and background


def _grid_columns(images: np.ndarray, per_caption: int) -> list[np.ndarray]:
    """The first image of every 3rd caption (images are grouped by caption)."""
    step = max(1, len(all_captions()) // GRID_CAPTIONS)
    return [images[i * per_caption] for i in range(0, len(all_captions()), step)][:GRID_CAPTIONS]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run_demo(out: Path, per_caption: int = 8, seed: int = 0) -> dict[str, Any]:
    """Run every stage, write out/report.json and out/grid.png, print a table."""
    from swiftbrush.toy.evaluator import Evaluator

    out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator.load()
    prompts = toy_prompts(per_caption)
    teacher = load_teacher("toy")
    scale = default_guidance_scale("toy")
    report: dict[str, Any] = {"world": "toy", "images_per_method": len(prompts), "guidance_scale": scale}
    rows: list[tuple[str, list[np.ndarray]]] = []

    for key, steps in (("teacher_multistep", 25), ("teacher_onestep", 1)):
        start = time.time()
        images = sample_teacher(teacher, prompts, steps=steps, guidance_scale=scale, seed=seed)
        scores = evaluator.score(images, prompts)
        report[key] = {
            "steps": steps,
            "alignment": round(scores.alignment, 4),
            "fd": round(scores.fd, 2),
            "per_attribute": {k: round(v, 4) for k, v in scores.per_attribute.items()},
            "seconds": round(time.time() - start, 1),
        }
        rows.append((f"teacher {steps} step{'s' if steps > 1 else ''}", _grid_columns(images, per_caption)))
        print(f"[demo] {key}: alignment {scores.alignment:.3f}, FD {scores.fd:.1f} ({time.time() - start:.0f}s)", flush=True)

    columns = [all_captions()[i].text.removeprefix("a ").removesuffix(" background") for i in range(0, 36, 3)]
    grid = labelled_grid([r for _, r in rows], [label for label, _ in rows], columns)
    grid.save(out / "grid.png")
    _write_json(out / "report.json", report)
    _print_table(report)
    print(f"[demo] wrote {out / 'report.json'} and {out / 'grid.png'}")
    return report


def _print_table(report: dict[str, Any]) -> None:
    print(f"\n{'method':<20}{'steps':>6}{'alignment':>11}{'FD':>9}")
    for key in ("teacher_multistep", "teacher_onestep", "student"):
        if key in report:
            r = report[key]
            print(f"{key:<20}{r['steps']:>6}{r['alignment']:>11.3f}{r['fd']:>9.1f}")
    print()
