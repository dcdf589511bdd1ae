"""What a distillation run shows its user: the progress bar, logs/train.jsonl, the loss curve, sample grids.

    swiftbrush distill --teacher toy --prompts toy --out out/toy
    # -> out/toy/logs/train.jsonl, out/toy/logs/loss_curve.png, out/toy/samples/step-<N>.png

The JSONL log is a plain file, written by the main process only: the loss curve is
drawn from it at every checkpoint, and a resumed run cuts it back to its checkpoint's
step. accelerate's trackers (TensorBoard, W&B, ...) would add a package or a service for
no part of this, so none is used.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from swiftbrush_runtime.onestep import STUDENT_TIMESTEP


def progress_bar(total: int, initial: int, main: bool) -> Any:
    """tqdm on the main process: redrawn in place on a terminal; in a log file (make demo > log) one line every 30 s.

    maxinterval too, since tqdm's monitor thread otherwise forces a line every 10 s.
    """
    from tqdm.auto import tqdm

    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, initial=initial, disable=not main, desc="distill", dynamic_ncols=True,
                mininterval=interval, maxinterval=max(interval, 10.0))  # fmt: skip


def show_step(bar: Any, logs: dict[str, float], skipped: int) -> None:
    """One step on the bar: the postfix first and without its own refresh, so the bar redraws only as often as mininterval allows."""
    bar.set_postfix({**{k: f"{v:.4g}" for k, v in logs.items() if k != "grad_abs"}, **({"skipped": skipped} if skipped else {})}, refresh=False)
    bar.update(1)


class RunLog:
    """logs/train.jsonl (main process) and the loss-curve PNG drawn from it."""

    def __init__(self, folder: Path, main: bool, truncate_after: int) -> None:
        self.folder, self.main = folder, main
        self.path = folder / "train.jsonl"
        if main:
            folder.mkdir(parents=True, exist_ok=True)
            # A resumed run rewrites the lines logged after its checkpoint.
            kept = [r for r in self.records() if "event" not in r and r.get("step", 0) <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return out

    def write(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def draw_curve(self) -> None:
        records = [r for r in self.records() if "event" not in r]
        series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                  for k in ("vsd", "sds", "lora")}  # fmt: skip
        draw_curves({k: v for k, v in series.items() if v}, self.folder / "loss_curve.png")


def draw_curves(series: dict[str, list[tuple[float, float]]], path: Path, size: tuple[int, int] = (640, 360)) -> None:
    """Loss curves with Pillow: one panel per series (each on its own log-y scale), step on x, ticks labelled on both axes."""
    from PIL import Image, ImageDraw

    colours = [(200, 40, 40), (40, 90, 200), (40, 150, 60)]
    width, height = size
    panels = max(1, len(series))
    image = Image.new("RGB", (width, height * panels), "white")
    draw = ImageDraw.Draw(image)
    for i, (name, points) in enumerate(series.items()):
        top = i * height
        left, right, bottom, upper = 70, width - 15, top + height - 40, top + 22
        xs = [p[0] for p in points]
        ys = [math.log10(max(p[1], 1e-12)) for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def px(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * (right - left)

        def py(y: float) -> float:
            return bottom - (y - y0) / (y1 - y0) * (bottom - upper)

        draw.rectangle([left, upper, right, bottom], outline=(160, 160, 160))
        draw.text((left, top + 4), f"{name} loss (log scale)", fill=(0, 0, 0))
        for x in nice_ticks(x0, x1):
            draw.line([(px(x), bottom), (px(x), bottom + 4)], fill=(0, 0, 0))
            draw.text((px(x) - 3 * len(f"{x:g}"), bottom + 6), f"{x:g}", fill=(0, 0, 0))
        draw.text(((left + right) // 2 - 12, bottom + 20), "step", fill=(0, 0, 0))
        for k in range(5):  # evenly spaced on the log axis, labelled with the loss itself
            y = y0 + (y1 - y0) * k / 4
            draw.line([(left - 4, py(y)), (left, py(y))], fill=(0, 0, 0))
            draw.text((4, py(y) - 6), f"{10 ** y:.3g}", fill=(0, 0, 0))
        line = [(px(x), py(y)) for x, y in zip(xs, ys)]
        if len(line) > 1:
            draw.line(line, fill=colours[i % len(colours)], width=2)
        else:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colours[i % len(colours)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) between low and high."""
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


@torch.no_grad()
def write_sample_grid(student: Any, ema: Any, teacher: Any, embeddings: Any, prompts: Sequence[str], seed: int, path: Path) -> None:
    """The EMA student's images for the first prompts, fixed noise, as one PNG grid with each prompt under its image."""
    from swiftbrush.student import decode_to_uint8, initial_latents, one_step_x0
    from swiftbrush_runtime.images import prompt_grid

    count = len(prompts)
    size = int(student.config.sample_size)
    latents = torch.from_numpy(initial_latents(seed, count, int(student.config.in_channels), size, size))
    device = next(student.parameters()).device
    params = list(student.parameters())
    ema.store(params)
    ema.copy_to(params)
    try:
        was_training = student.training
        student.eval()
        images = []
        for i in range(0, count, 16):
            emb = embeddings.get(range(i, min(count, i + 16))).to(device)
            x0 = one_step_x0(student, latents[i : i + 16].to(device), emb, STUDENT_TIMESTEP, float(teacher.scheduler.alphas_cumprod[STUDENT_TIMESTEP]),
                              teacher.prediction_type)  # fmt: skip
            teacher.vae.to(device)
            images.append(decode_to_uint8(teacher.vae, x0, float(teacher.vae.config.scaling_factor)))
        student.train(was_training)
    finally:
        ema.restore(params)
    arrays = np.concatenate(images)
    grid = prompt_grid(list(arrays), list(prompts), scale=max(1, 128 // arrays.shape[1]))  # small toy images are enlarged
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' config warnings (logged and FutureWarning) for one known-benign call."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        dlogging.set_verbosity(level)
