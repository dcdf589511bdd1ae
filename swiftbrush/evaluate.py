"""Score a teacher or a student on the toy world.

    swiftbrush eval --model toy-teacher --steps 25 --json out/teacher.json
    swiftbrush eval --model out/student

Teachers are sampled through diffusers' own StableDiffusionPipeline with DDIM
and classifier-free guidance; "trailing" timestep spacing so that one step
starts at t = 999 (with SD's default "leading" spacing a 1-step sampler would
start at t = 1 and return noise, which is no fair baseline). Students (folders
with onestep.json) are sampled in one UNet call.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from swiftbrush.config import MAX_SEED
from swiftbrush.errors import InvalidArgumentError
from swiftbrush.teacher import TOY_NAMES, Teacher, load_teacher
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.models import TOY_GUIDANCE_SCALE
from swiftbrush_runtime.images import to_uint8
from swiftbrush_runtime.onestep import ONESTEP

SD_GUIDANCE_SCALE = 4.5  # SwiftBrush's CFG for SD teachers
TEACHER_BATCH = 144  # prompts per teacher pipeline call (each batch is seeded by its offset)


def default_guidance_scale(source: str) -> float:
    return TOY_GUIDANCE_SCALE if source in TOY_NAMES else SD_GUIDANCE_SCALE


def sample_teacher(
    teacher: Teacher,
    prompts: Sequence[str],
    steps: int,
    guidance_scale: float,
    seed: int = 0,
    batch_size: int = TEACHER_BATCH,
    progress: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """uint8 NxHxWx3 images from the teacher with DDIM (trailing spacing) and CFG; `progress(1)` after each step of a batch."""
    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
    pipe = teacher.pipeline(scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = []

    def step_done(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if progress is not None:
            progress(1)
        return kwargs

    for i in range(0, len(prompts), batch_size):
        generator = torch.Generator().manual_seed(seed + i)
        images = pipe(
            prompt=list(prompts[i : i + batch_size]),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="np",
            callback_on_step_end=step_done,
        ).images
        out.append(to_uint8(images, signed=False))
    return np.concatenate(out)


def score_fields(scores: Any) -> dict[str, Any]:
    """The report fields of a toy `Scores`, rounded as every report prints them."""
    return {
        "alignment": round(scores.alignment, 4),
        "fd": round(scores.fd, 2),
        "per_attribute": {k: round(v, 4) for k, v in scores.per_attribute.items()},
    }


def toy_prompts(per_caption: int) -> list[str]:
    """Every caption of the grid, `per_caption` times, grouped by caption."""
    return [c.text for c in all_captions() for _ in range(per_caption)]


def evaluate_model(
    model: str,
    steps: int = 25,
    guidance_scale: float | None = None,
    per_caption: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample `per_caption` images for each toy caption and score them; `progress` shows a bar on stderr."""
    from tqdm.auto import tqdm

    from swiftbrush.toy.evaluator import Evaluator
    from swiftbrush_runtime.manifest import read_manifest

    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgumentError(f"--seed must be in 0..{MAX_SEED}, got {seed}")
    prompts = toy_prompts(per_caption)
    path = Path(model)
    student = model not in TOY_NAMES and (path / ONESTEP).is_file()
    if student:
        read_manifest(path, "student", verify=True)  # the check generate and export make: changed files are refused
    else:
        scale = default_guidance_scale(model) if guidance_scale is None else guidance_scale
        if not 0 <= scale < math.inf:  # also refuses nan
            raise InvalidArgumentError(f"--guidance-scale must be a finite number >= 0, got {scale}")
    evaluator = Evaluator.load()
    start = time.time()
    if student:
        from swiftbrush.student import sample_student

        with tqdm(total=len(prompts), desc="sampling", unit="img", file=sys.stderr, disable=not progress) as bar:
            images = sample_student(path, prompts, seed=seed, progress=bar.update)
        info: dict[str, Any] = {"model": model, "kind": "student", "steps": 1}
    else:
        teacher = load_teacher(model)
        calls = math.ceil(len(prompts) / TEACHER_BATCH) * steps
        desc = f"sampling {len(prompts)} images, {steps} steps each"
        with tqdm(total=calls, desc=desc, unit="step", file=sys.stderr, disable=not progress) as bar:
            images = sample_teacher(teacher, prompts, steps=steps, guidance_scale=scale, seed=seed, batch_size=TEACHER_BATCH, progress=bar.update)
        info = {"model": model, "kind": "teacher", "steps": steps, "guidance_scale": scale}
    seconds = time.time() - start
    scores = evaluator.score(images, prompts)
    return {
        **info,
        "images": len(prompts),
        **score_fields(scores),
        "sampling_seconds": round(seconds, 1),
    }
