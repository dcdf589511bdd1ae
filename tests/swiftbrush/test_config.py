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


def test_recipe_swiftbrush_is_the_preset_and_v2_sets_its_parts():
    """--recipe swiftbrush (the default) changes nothing; swiftbrush-v2 sets SBv2's values, each still overridable."""
    for name in PRESETS:
        assert build_config(name, "x", recipe="swiftbrush") == build_config(name, "x") == PRESETS[name]
    v2 = build_config("sd21-base", "stabilityai/stable-diffusion-2-1-base", recipe="swiftbrush-v2")
    assert (v2.optimizer, v2.lora_rank, v2.lora_alpha, v2.guidance_scale, v2.clip_weight, v2.clip_tau) == ("adamw", 64, 128.0, 4.5, 0.1, 0.35)
    assert v2.clip_model == "openai/clip-vit-base-patch32" and v2.clip_decoder == "madebyollin/taesd" and v2.student_init is None
    assert v2.fingerprint() != PRESETS["sd21-base"].fingerprint()
    assert build_config("sd21-base", "x", recipe="swiftbrush-v2", clip_weight=0.0, optimizer="adam").clip_weight == 0.0
    toy = build_config(None, "toy", recipe="swiftbrush-v2")
    assert toy.student_init == "toy-warm-start" and toy.clip_model == "toy" and toy.lora_updates > 1 and toy.preset == "toy"


def test_a_resumed_run_keeps_its_recipe_values():
    recorded = build_config("sd21-base", "x", recipe="swiftbrush-v2", clip_weight=0.2).to_dict()
    assert build_config(None, "x", base=recorded, recipe="swiftbrush-v2").clip_weight == 0.2  # not reset to the recipe's 0.1
    assert build_config(None, "x", base=recorded).clip_weight == 0.2
    other = build_config(None, "x", base=recorded, recipe="swiftbrush")  # another recipe: another fingerprint, which resume refuses
    assert other.recipe == "swiftbrush" and other.fingerprint() != DistillConfig.from_dict(recorded).fingerprint()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"clip_weight": 0.1}, "needs --clip-model"),
        ({"clip_weight": -1.0}, "--clip-weight must be >= 0"),
        ({"optimizer": "sgd"}, "--optimizer must be one of"),
        ({"regression_steps": 5}, "need --regression-pairs"),
        ({"regression_weight": 0.5}, "need --regression-pairs"),
        ({"regression_pairs": "p", "regression_steps": 9000}, "must be <= --max-steps"),
        ({"clip_tau": 0.0, "clip_model": "toy", "clip_decoder": "toy"}, "clip_tau must be in"),
    ],
)
def test_v2_fields_are_validated(overrides, message):
    with pytest.raises(InvalidArgumentError, match=message):
        build_config("toy", "toy", **overrides)


def test_v2_fields_at_their_defaults_leave_recorded_fingerprints_alone():
    base = build_config(None, "toy", max_steps=6, checkpoint_every=3)
    assert dataclasses.replace(base, recipe="swiftbrush", optimizer="adam", clip_weight=0.0, regression_steps=0).fingerprint() == "4b242ffa0069b149"
    assert dataclasses.replace(base, optimizer="adamw").fingerprint() != "4b242ffa0069b149"
