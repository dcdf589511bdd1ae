"""`--recipe swiftbrush-v2` end to end on the committed toy world, and its bad input.

The issue's bar: `swiftbrush distill --teacher toy --prompts toy --recipe swiftbrush-v2 --max-steps 3
--out D` writes a student that `swiftbrush eval` scores. The run starts from the shipped warm start,
trains with the toy CLIP's clamped loss and the two-time-scale rule, and logs each part.
"""

from __future__ import annotations

import json

import pytest

from cli_checks import invoke, one_line_exit_2


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2") / "run"
    result = invoke("distill", "--teacher", "toy", "--prompts", "toy", "--recipe", "swiftbrush-v2", "--max-steps", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_the_v2_toy_run_writes_a_student_that_eval_scores(v2_run):
    result = invoke("eval", "--model", str(v2_run / "student"), "--per-caption", "2")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output[result.output.index("{") :])
    assert scores["kind"] == "student" and scores["images"] == 72 and 0 <= scores["alignment"] <= 1 and scores["fd"] > 0


def test_the_v2_toy_run_records_its_recipe_and_logs_the_clip_term(v2_run):
    config = json.loads((v2_run / "run.json").read_text())["config"]
    assert config["recipe"] == "swiftbrush-v2" and config["student_init"] == "toy-warm-start" and config["optimizer"] == "adamw"
    assert config["clip_model"] == "toy" and config["clip_weight"] == 0.1 and config["lora_updates"] == 5
    last = [json.loads(line) for line in (v2_run / "logs" / "train.jsonl").read_text().splitlines() if '"event"' not in line][-1]
    assert {"vsd", "clip", "clip_cos", "lora"} <= set(last)


def test_the_v2_student_starts_from_the_shipped_start_not_the_teacher(v2_run):
    """Three small steps from the warm start stay far closer to it than to the teacher's UNet."""
    import torch
    from safetensors.torch import load_file

    from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR, TOY_WARM_START_DIR

    student = load_file(v2_run / "student" / "unet" / "diffusion_pytorch_model.safetensors")
    start = load_file(TOY_WARM_START_DIR / "diffusion_pytorch_model.safetensors")
    teacher = load_file(TOY_TEACHER_DIR / "unet" / "diffusion_pytorch_model.safetensors")

    def distance(other: dict) -> float:
        return sum(float((student[k] - other[k].float()).norm()) for k in student)

    assert distance(start) < 0.2 * distance(teacher)
    assert any(not torch.equal(student[k], start[k].float()) for k in student)  # it trained


def test_a_clip_model_that_is_not_a_clip_is_refused_before_anything_is_written(tmp_path):
    from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR

    out = tmp_path / "run"
    message = one_line_exit_2(invoke("distill", "--teacher", "toy", "--prompts", "toy", "--out", str(out), "--max-steps", "1",
                                     "--clip-model", str(TOY_TEACHER_DIR), "--clip-decoder", "toy", "--clip-weight", "0.1"))  # fmt: skip
    assert "CLIP" in message and not out.exists()
    assert "needs --clip-model" in one_line_exit_2(invoke("distill", "--teacher", "toy", "--prompts", "toy", "--out", str(out), "--clip-weight", "0.1"))


def test_lora_warmup_steps_train_the_lora_teacher_alone(tiny_teacher, tmp_path):
    """During --lora-warmup-steps the student keeps its weights and the LoRA teacher learns; VSD follows."""
    import torch
    from safetensors.torch import load_file

    from swiftbrush.checkpoints import LORA_FILE
    from swiftbrush.config import build_config
    from swiftbrush.teacher import load_teacher
    from swiftbrush.train import distill

    out = tmp_path / "run"
    config = build_config("toy", str(tiny_teacher), batch_size=2, max_steps=3, checkpoint_every=2, log_every=1, sample_prompts=0,
                          lora_warmup_steps=2, lora_updates=2)  # fmt: skip
    distill(str(tiny_teacher), "toy", out, config)
    ckpt = out / "checkpoints" / "checkpoint-2"
    student = load_file(next((ckpt / "student").glob("*.safetensors")))
    start = load_teacher(tiny_teacher).unet.state_dict()
    assert all(torch.equal(student[k], start[k]) for k in start)
    assert any(float(v.abs().sum()) > 0 for k, v in load_file(ckpt / "lora_teacher" / LORA_FILE).items() if "lora_B" in k)
    steps = {r["step"]: r for r in map(json.loads, (out / "logs" / "train.jsonl").read_text().splitlines()) if "event" not in r}
    assert "vsd" not in steps[2] and "lora" in steps[2] and "vsd" in steps[3]
