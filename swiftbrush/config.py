"""The distillation configuration: one typed dataclass, presets, validation.

    swiftbrush distill --teacher toy --prompts toy --out out/toy            # preset "toy"
    swiftbrush distill --teacher stabilityai/stable-diffusion-2-1-base \
        --prompts prompts.txt --out out/sd21 --preset sd21-base

`build_config` picks a preset (by name, or from the teacher: "toy" for the toy
teacher, "sd21-base" otherwise), applies the command-line overrides and
validates the result, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from swiftbrush.errors import InvalidArgumentError
from swiftbrush.toy.models import TOY_VSD_GUIDANCE_SCALE
from swiftbrush_runtime.onestep import STUDENT_TIMESTEP  # the student's fixed input timestep, owned with onestep.json

MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adam", "adamw")
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed) takes 32 bits


@dataclass
class DistillConfig:
    """Everything that defines a SwiftBrush run (SwiftBrush v1 defaults; see REFERENCE.md)."""

    preset: str = "sd21-base"  # the preset these values started from
    recipe: str = "swiftbrush"  # the recipe applied on top of the preset: "swiftbrush" (v1) or "swiftbrush-v2"
    guidance_scale: float = 4.5  # CFG scale of the frozen teacher's prediction in the VSD gradient
    lora_guidance_scale: float = 4.5  # CFG scale of the LoRA teacher's prediction in the VSD gradient
    lora_rank: int = 64  # LoRA rank of the LoRA teacher
    lora_alpha: float = 108.0  # LoRA alpha (scale alpha / rank)
    lora_targets: tuple[str, ...] = ("to_q", "to_v")  # attention projections that get LoRA adapters
    student_init: str | None = None  # start the student from this UNet, not the teacher's (SwiftBrush v2: SD-Turbo)
    student_lora_rank: int = 0  # 0: train the whole student UNet; N: train rank-N LoRA adapters on it (SwiftBrush v2: 256)
    student_lora_alpha: float | None = None  # the student LoRA's alpha; None: 2 x rank (SwiftBrush v2: 512 for rank 256)
    t_min: int = 20  # smallest VSD timestep (inclusive)
    t_max: int = 980  # largest VSD timestep (inclusive)
    student_lr: float = 1e-6  # Adam learning rate of the student UNet (constant)
    lora_lr: float = 1e-3  # Adam learning rate of the LoRA teacher (constant)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # Adam betas for both optimisers
    weight_decay: float = 0.0  # Adam weight decay for both optimisers
    max_grad_norm: float = 1.0  # gradient-norm clip on each network
    batch_size: int = 16  # prompts per process per step
    max_steps: int = 65_000  # training steps (one student update and `lora_updates` LoRA updates each)
    lora_updates: int = 1  # LoRA-teacher updates per student update (SwiftBrush: 1; DMD2's two time-scale rule: 5)
    empty_prompt_prob: float = 0.1  # chance that a LoRA step uses the empty prompt for its whole batch
    ema_decay: float = 0.9999  # student EMA decay (the EMA weights become the released student)
    ema_warmup: bool = False  # ramp the EMA decay up from 0 (diffusers' warmup, power 2/3) for short runs
    optimizer: str = "adam"  # "adam" (SwiftBrush) or "adamw" (SwiftBrush v2), for both networks
    clip_model: str | None = None  # CLIP for the clamped CLIP loss (SwiftBrush v2): a CLIPModel folder, hub id, or "toy"
    clip_decoder: str | None = None  # tiny decoder (TAESD) that turns the student's latents into images for CLIP, or "toy"
    clip_weight: float = 0.0  # weight of the clamped CLIP loss at step 0, decayed linearly to 0 at max_steps (SBv2: 0.1)
    clip_tau: float = 0.35  # the CLIP loss is max(0, tau - cos): no push once an image is this close to its prompt
    regression_pairs: str | None = None  # a `swiftbrush pairs` folder: the teacher's own (noise, prompt) -> sample pairs
    regression_steps: int = 0  # the first N steps regress the student onto the pairs only (a warm start, no VSD)
    regression_weight: float = 0.0  # DMD's weighted regression term added to the VSD loss in the later steps
    lora_warmup_steps: int = 0  # steps (after any regression stage) in which only the LoRA teacher learns the student's samples
    sds: bool = False  # ablation: SDS instead of VSD (no LoRA teacher; its prediction is the sampled noise)
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (VAE always fp32)
    gradient_checkpointing: bool = False  # trade compute for memory in both UNets
    seed: int = 0  # everything random derives from this (and the step and the process rank)
    checkpoint_every: int = 1000  # steps between checkpoints
    checkpoints_keep: int = 2  # newest checkpoints kept on disk (--keep-checkpoints)
    log_every: int = 10  # steps between JSONL log lines
    sample_prompts: int = 16  # prompts in the sample grid written at each checkpoint
    nan_patience: int = 20  # consecutive non-finite steps after which the run aborts
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with checkpoints

    # Fields added after runs were first recorded, with the value that reproduces the math before
    # them: at that value a field is left out of the fingerprint, so a recorded run keeps its hash.
    OPTIONAL_FIELDS = {"student_init": None, "student_lora_rank": 0, "student_lora_alpha": None, "recipe": "swiftbrush", "optimizer": "adam",
                       "clip_model": None, "clip_decoder": None, "clip_weight": 0.0, "clip_tau": 0.35, "regression_pairs": None,
                       "regression_steps": 0, "regression_weight": 0.0, "lora_warmup_steps": 0}  # fmt: skip
    # Fields that may change when a run is resumed (they do not change the math of a step).
    RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "checkpoints_keep", "log_every", "sample_prompts", "nan_patience", "extra")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DistillConfig":
        data = dict(data)
        # Recorded configs (run.json, checkpoints) may name the student's timestep, which is fixed at
        # STUDENT_TIMESTEP and so no field; that value is accepted, any other is an unknown setting.
        if data.get("student_timestep") == STUDENT_TIMESTEP:
            del data["student_timestep"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name in ("lora_targets", "adam_betas"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)

    def fingerprint(self) -> str:
        """A hash of the fields that define the training math (resume refuses a mismatch)."""
        core = {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_CHANGES}
        for name, value in self.OPTIONAL_FIELDS.items():
            if core.get(name) == _jsonable(value):
                core.pop(name, None)
        core["student_timestep"] = STUDENT_TIMESTEP  # part of the math, though fixed: recorded runs keep their fingerprint
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> "DistillConfig":
        """Raise InvalidArgumentError naming the first bad field, what it was and what is allowed."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise InvalidArgumentError(msg)

        need(self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        need(self.recipe in RECIPES, f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        for f in dataclasses.fields(self):  # inf and nan pass the range checks below (inf >= 1) or read as "got nan"
            value = getattr(self, f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            bad = [v for v in numbers if isinstance(v, float) and not math.isfinite(v)]
            need(not bad, f"{f.name} must be a finite number, got {value}")
        need(0 <= self.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {self.seed}")
        need(self.guidance_scale >= 1.0, f"--guidance-scale must be >= 1, got {self.guidance_scale}")
        need(self.lora_guidance_scale >= 1.0, f"lora_guidance_scale must be >= 1, got {self.lora_guidance_scale}")
        need(1 <= self.lora_rank <= 1024, f"--lora-rank must be in 1..1024, got {self.lora_rank}")
        need(self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")
        need(len(self.lora_targets) > 0, "lora_targets must name at least one module, e.g. to_q,to_v")
        need(self.student_init is None or (isinstance(self.student_init, str) and self.student_init.strip() != ""),
             f"--student-init must name a model folder or hub id, got {self.student_init!r}")  # fmt: skip
        need(0 <= self.student_lora_rank <= 1024, f"--student-lora-rank must be in 0..1024 (0: a full student), got {self.student_lora_rank}")
        need(self.student_lora_alpha is None or self.student_lora_alpha > 0, f"student_lora_alpha must be > 0, got {self.student_lora_alpha}")
        need(self.student_lora_alpha is None or self.student_lora_rank > 0,
             f"student_lora_alpha {self.student_lora_alpha} needs a LoRA student: set --student-lora-rank too")  # fmt: skip
        need(0 <= self.t_min <= self.t_max <= 999, f"need 0 <= t_min <= t_max <= 999, got t_min {self.t_min}, t_max {self.t_max}")
        for name in ("student_lr", "lora_lr"):
            value = getattr(self, name)
            need(0 < value < 1, f"--{name.replace('_', '-')} must be in (0, 1), got {value}")
        need(all(0 <= b < 1 for b in self.adam_betas), f"adam_betas must be in [0, 1), got {self.adam_betas}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        need(1 <= self.batch_size <= 4096, f"--batch-size must be in 1..4096, got {self.batch_size}")
        need(self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        need(1 <= self.lora_updates <= 100, f"--lora-updates must be in 1..100, got {self.lora_updates}")
        need(0 <= self.empty_prompt_prob <= 1, f"empty_prompt_prob must be in [0, 1], got {self.empty_prompt_prob}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.mixed_precision in MIXED_PRECISION, f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        need(self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        need(self.checkpoints_keep >= 1, f"--keep-checkpoints must be >= 1, got {self.checkpoints_keep}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.sample_prompts >= 0, f"sample_prompts must be >= 0, got {self.sample_prompts}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        need(self.clip_weight >= 0, f"--clip-weight must be >= 0, got {self.clip_weight}")
        need(0 < self.clip_tau <= 1, f"clip_tau must be in (0, 1], got {self.clip_tau}")
        need(self.clip_weight == 0 or (bool(self.clip_model) and bool(self.clip_decoder)),
             "--clip-weight > 0 needs --clip-model (a CLIP folder or hub id) and --clip-decoder (a TAESD folder or hub id)")  # fmt: skip
        need(self.regression_steps >= 0, f"--regression-steps must be >= 0, got {self.regression_steps}")
        need(self.regression_weight >= 0, f"--regression-weight must be >= 0, got {self.regression_weight}")
        need(self.lora_warmup_steps >= 0, f"--lora-warmup-steps must be >= 0, got {self.lora_warmup_steps}")
        need(self.regression_steps + self.lora_warmup_steps <= self.max_steps,
             f"--regression-steps ({self.regression_steps}) + --lora-warmup-steps ({self.lora_warmup_steps}) must be <= --max-steps ({self.max_steps})")  # fmt: skip
        need(not (self.sds and self.lora_warmup_steps), "--lora-warmup-steps needs a LoRA teacher; --sds has none")
        need((self.regression_steps == 0 and self.regression_weight == 0) or bool(self.regression_pairs),
             "--regression-steps/--regression-weight need --regression-pairs (a folder made by `swiftbrush pairs`)")  # fmt: skip
        need(self.nan_patience >= 1, f"nan_patience must be >= 1, got {self.nan_patience}")
        return self


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_PAPER = DistillConfig()  # SwiftBrush v1 on SD 2.1 base: the dataclass defaults

PRESETS: dict[str, DistillConfig] = {
    "sd21-base": dataclasses.replace(_PAPER, preset="sd21-base"),
    "sd15": dataclasses.replace(_PAPER, preset="sd15"),
    # The paper's recipe for an SD-Turbo teacher. SwiftBrush v2 instead keeps SD 2.1 base as the
    # teacher and starts the student from SD-Turbo (`--student-init stabilityai/sd-turbo`).
    "sd-turbo": dataclasses.replace(_PAPER, preset="sd-turbo"),
    # The toy world (8x8x4 latents, 36 captions, 2 CPU cores), tuned on the toy teacher to
    # distil within the demo's 5-minute budget (the runs behind each choice: benchmarks/RESULTS.md,
    # "Figures behind settings"):
    # - CFG 3.0 on both predictions: no scale tried from 2.0 to 4.5 (SD's) gave a better FD.
    # - LoRA on every attention projection and the ResNet convolutions (rank 16): a LoRA teacher
    #   on to_q/to_v alone cannot follow the student, and VSD diverges.
    # - batch 32 for 260 steps: alignment stops rising there, FD is flat from 220 steps on, and
    #   the run fits the budget on 2 cores. Other learning rates, LoRA updates per step, t ranges
    #   and loss weightings were worse or within seed noise.
    # - EMA with warmup, since the run is short.
    "toy": dataclasses.replace(
        _PAPER,
        preset="toy",
        guidance_scale=TOY_VSD_GUIDANCE_SCALE,
        lora_guidance_scale=TOY_VSD_GUIDANCE_SCALE,
        lora_rank=16,
        lora_alpha=16.0,
        lora_targets=("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2"),
        student_lr=5e-5,
        lora_lr=1e-3,
        batch_size=32,
        max_steps=260,
        ema_decay=0.99,
        ema_warmup=True,
        checkpoint_every=100,
        log_every=5,
    ),
}


# Recipes: what each method changes on top of a preset (the teacher's settings). "swiftbrush" is
# SwiftBrush v1, the presets themselves. "swiftbrush-v2" (ECCV 2024; its training code was never
# released, REFERENCE.md lists the paper's facts): AdamW, a LoRA teacher of rank 64 / alpha 128,
# CFG 4.5, the clamped CLIP loss through TAESD (weight 0.1 decayed to 0, tau 0.35) and, when
# given, a student started from a one-step model (--student-init stabilityai/sd-turbo for SD 2.1
# base). Its weight merging is the separate `swiftbrush merge` step. Every part stays a flag.
_SBV2_SD: dict[str, Any] = dict(
    optimizer="adamw", weight_decay=0.01, lora_rank=64, lora_alpha=128.0, guidance_scale=4.5, lora_guidance_scale=4.5,
    clip_model="openai/clip-vit-base-patch32", clip_decoder="madebyollin/taesd", clip_weight=0.1, clip_tau=0.35,
)  # fmt: skip
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "swiftbrush": {},
    "swiftbrush-v2": {
        "sd21-base": _SBV2_SD,
        "sd15": _SBV2_SD,
        "sd-turbo": _SBV2_SD,
        # The toy's v2: the shipped one-step start (swiftbrush/toy/train_warm_start.py, the toy's
        # SD-Turbo), the toy CLIP, and 5 LoRA updates per student update, which keep VSD near a
        # good start where one update pulls it away (benchmarks/RESULTS.md, "SwiftBrush v2 on the toy").
        "toy": dict(
            optimizer="adamw", weight_decay=0.01, student_init="toy-warm-start", lora_updates=5,
            clip_model="toy", clip_decoder="toy", clip_weight=0.1, clip_tau=0.35, max_steps=150,
        ),
    },
}


def recipe_overrides(recipe: str, preset: str) -> dict[str, Any]:
    """The config fields `recipe` sets on top of `preset`."""
    if recipe not in RECIPES:
        raise InvalidArgumentError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return {**RECIPES[recipe].get(preset, {}), "recipe": recipe}


def default_preset(teacher: str) -> str:
    """The preset used when --preset is not given: "toy" for the toy teacher, SD 2.1 base otherwise."""
    text = str(teacher).lower()
    if text in ("toy", "toy-teacher"):
        return "toy"
    if "turbo" in text:
        return "sd-turbo"
    if "1-5" in text or "v1.5" in text or "sd15" in text:
        return "sd15"
    return "sd21-base"


def build_config(preset: str | None, teacher: str, base: dict[str, Any] | None = None, recipe: str | None = None, **overrides: Any) -> DistillConfig:
    """The preset (given or inferred from the teacher), then the recipe's fields, then the non-None overrides, validated.

    `base` is a recorded run's config (`--resume`): it replaces the preset, so what the
    command line does not give keeps the run's value; a given --preset still applies
    (and a resume then refuses it if it differs from the run's).
    """
    name = preset or (base or {}).get("preset") or default_preset(teacher)
    if name not in PRESETS:
        raise InvalidArgumentError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    known = {f.name for f in dataclasses.fields(DistillConfig)}
    bad = sorted(k for k in overrides if k not in known)
    assert not bad, f"unknown config overrides {bad}"
    changes = {k: v for k, v in overrides.items() if v is not None}
    if base is not None:  # a resumed run keeps its recipe's values; naming another recipe changes the math (refused)
        start = DistillConfig.from_dict({**base, "preset": name})
        if recipe is not None and recipe != start.recipe:
            start = dataclasses.replace(start, **recipe_overrides(recipe, name))
    else:
        start = dataclasses.replace(PRESETS[name], **recipe_overrides(recipe or "swiftbrush", name))
    return dataclasses.replace(start, **changes).validate()
