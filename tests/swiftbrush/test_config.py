"""DistillConfig: presets, overrides, validation before any model loads."""

from __future__ import annotations

import dataclasses

import pytest

from swiftbrush.config import PRESETS, STUDENT_TIMESTEP, DistillConfig, build_config, default_preset
from swiftbrush.errors import InvalidArgumentError


def test_paper_presets_hold_the_swiftbrush_recipe():
    for name in ("sd21-base", "sd15", "sd-turbo"):
        c = PRESETS[name].validate()
        assert (c.guidance_scale, c.lora_guidance_scale) == (4.5, 4.5)
        assert (c.lora_rank, c.lora_alpha, c.lora_targets) == (64, 108.0, ("to_q", "to_v"))
        assert (c.t_min, c.t_max) == (20, 980)
        assert (c.student_lr, c.lora_lr, c.weight_decay, c.max_grad_norm) == (1e-6, 1e-3, 0.0, 1.0)
        assert c.batch_size == 16 and c.empty_prompt_prob == 0.1 and c.ema_decay > 0


def test_toy_preset_uses_the_toy_teachers_guidance():
    from swiftbrush.toy.models import TOY_VSD_GUIDANCE_SCALE

    toy = PRESETS["toy"].validate()
    assert toy.guidance_scale == TOY_VSD_GUIDANCE_SCALE
    assert toy.student_lr > PRESETS["sd21-base"].student_lr
    assert toy.lora_rank < 64


def test_default_preset_follows_the_teacher():
    assert default_preset("toy") == "toy"
    assert default_preset("stabilityai/sd-turbo") == "sd-turbo"
    assert default_preset("runwayml/stable-diffusion-v1-5") == "sd15"
    assert default_preset("./my-sd21") == "sd21-base"


def test_overrides_apply_and_none_keeps_the_preset():
    c = build_config(None, "toy", max_steps=7, student_lr=None, guidance_scale=2.0)
    assert c.preset == "toy" and c.max_steps == 7 and c.guidance_scale == 2.0
    assert c.student_lr == PRESETS["toy"].student_lr


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("guidance_scale", 0.5, "--guidance-scale"),
        ("lora_rank", 0, "--lora-rank"),
        ("student_lr", 0.0, "--student-lr"),
        ("lora_lr", 2.0, "--lora-lr"),
        ("batch_size", 0, "--batch-size"),
        ("max_steps", 0, "--max-steps"),
        ("lora_updates", 0, "--lora-updates"),
        ("mixed_precision", "fp8", "--mixed-precision"),
        ("checkpoint_every", 0, "--checkpoint-every"),
        ("t_min", 990, "t_min"),
        ("guidance_scale", float("inf"), "guidance_scale must be a finite number, got inf"),  # inf >= 1 passed before
        ("student_lr", float("nan"), "student_lr must be a finite number, got nan"),
        ("seed", -1, "--seed must be in 0..4294967295"),
        ("seed", 2**32, "--seed must be in 0..4294967295"),
        ("student_lora_rank", -1, "--student-lora-rank must be in 0..1024"),
        ("student_lora_rank", 1025, "--student-lora-rank must be in 0..1024"),
        ("student_lora_alpha", 0.0, "student_lora_alpha must be > 0"),
        ("student_lora_alpha", 16.0, "needs a LoRA student: set --student-lora-rank"),
    ],
)
def test_bad_values_are_refused_by_name(field, value, words):
    with pytest.raises(InvalidArgumentError, match=words):
        build_config("toy", "toy", **{field: value})


def test_unknown_preset_is_refused():
    with pytest.raises(InvalidArgumentError, match="--preset must be one of"):
        build_config("sdxl", "toy")


def test_fingerprint_ignores_run_length_but_not_the_math():
    base = PRESETS["toy"]
    assert dataclasses.replace(base, max_steps=9999, checkpoint_every=3).fingerprint() == base.fingerprint()
    assert dataclasses.replace(base, student_lr=1e-4).fingerprint() != base.fingerprint()


def test_round_trip_through_a_dict():
    c = PRESETS["sd15"]
    assert DistillConfig.from_dict(c.to_dict()) == c
    with pytest.raises(InvalidArgumentError, match="unknown config field"):
        DistillConfig.from_dict({**c.to_dict(), "learning_rate": 1})


def test_the_student_timestep_is_fixed_not_a_setting():
    """The student runs at T = 999 (what the student folder's one-step DDIM runs); no config field moves it."""
    assert STUDENT_TIMESTEP == 999
    assert "student_timestep" not in DistillConfig().to_dict()
    with pytest.raises(AssertionError, match="unknown config overrides"):
        build_config("toy", "toy", student_timestep=500)
    recorded = {**PRESETS["toy"].to_dict(), "student_timestep": 999}  # run.json and checkpoints may record it
    assert DistillConfig.from_dict(recorded) == PRESETS["toy"]
    with pytest.raises(InvalidArgumentError, match="unknown config field.*student_timestep"):
        DistillConfig.from_dict({**recorded, "student_timestep": 500})


def test_a_recorded_run_keeps_its_fingerprint():
    """The hash of the math is the one recorded runs carry, so they resume (pinned from a toy run's run.json)."""
    assert build_config(None, "toy", max_steps=6, checkpoint_every=3).fingerprint() == "4b242ffa0069b149"


def test_a_lora_student_changes_the_fingerprint_and_a_full_one_keeps_it():
    """student_lora_rank 0 / alpha None are the full student of recorded runs: left out of the hash."""
    base = PRESETS["toy"]
    assert "student_lora_rank" in base.to_dict() and base.student_lora_rank == 0 and base.student_lora_alpha is None
    lora = build_config("toy", "toy", student_lora_rank=256)
    assert lora.fingerprint() != base.fingerprint()
    assert build_config("toy", "toy", student_lora_rank=256, student_lora_alpha=64.0).fingerprint() != lora.fingerprint()
    assert DistillConfig.from_dict(lora.to_dict()) == lora
