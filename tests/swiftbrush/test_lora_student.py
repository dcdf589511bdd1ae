"""`swiftbrush distill --student-lora-rank N`: the LoRA student (SwiftBrush v2's resource-efficient model).

Real commands on the tiny teacher, 1-3 steps each: the student folder holds base + adapter
merged in unet/ and the peft adapter in student_lora/, only the adapter trains, a resume
equals an uninterrupted run and refuses another base, eval and export load the student.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush.optim_state import load_optimizer_state

FAST = ["--preset", "toy", "--batch-size", "4", "--student-lora-rank", "4"]


def distill(teacher: Path | str, out: Path, *extra: str):
    args = ["distill", "--teacher", str(teacher), "--prompts", "toy", "--out", str(out), *FAST, *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def lora_run(tiny_teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    result = distill(tiny_teacher, out, "--max-steps", "3", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.output
    return out


def test_the_student_folder_holds_the_merged_weights_and_the_peft_adapter(lora_run, tiny_teacher):
    from diffusers import UNet2DConditionModel
    from peft import PeftModel

    from swiftbrush.config import PRESETS
    from swiftbrush_runtime.manifest import KINDS_OF_OUTPUT, read_manifest

    student = lora_run / "student"
    adapter = json.loads((student / "student_lora" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8.0)  # alpha defaults to 2 x rank
    assert sorted(adapter["target_modules"]) == sorted(PRESETS["toy"].lora_targets)
    assert adapter["base_model_name_or_path"] == str(tiny_teacher)
    manifest = read_manifest(student, "student", verify=True)
    assert {"student_lora/adapter_config.json", "student_lora/adapter_model.safetensors"} <= set(manifest["files"])
    assert KINDS_OF_OUTPUT["student"].recognise(student) is None  # --overwrite knows it for a student folder
    assert manifest["made_from"]["config"]["student_lora_rank"] == 4

    # peft loads the adapter onto the base (the teacher's UNet); merged, it is the student's unet/.
    base = UNet2DConditionModel.from_pretrained(tiny_teacher / "unet")
    merged = PeftModel.from_pretrained(base, student / "student_lora").merge_and_unload().state_dict()
    written = load(student / "unet" / "diffusion_pytorch_model.safetensors")
    assert merged.keys() == written.keys()
    for k in written:
        torch.testing.assert_close(written[k], merged[k], rtol=0, atol=1e-6, msg=k)
    lora_b = [v for k, v in load(student / "student_lora" / "adapter_model.safetensors").items() if ".lora_B." in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # B starts at 0: training moved the adapter


def test_only_the_adapter_trains(lora_run, tiny_teacher):
    from swiftbrush.config import PRESETS

    teacher = load(tiny_teacher / "unet" / "diffusion_pytorch_model.safetensors")
    student = load(lora_run / "student" / "unet" / "diffusion_pytorch_model.safetensors")
    targets = PRESETS["toy"].lora_targets
    adapted = {k for k in student if any(f".{t}." in k for t in targets)}
    assert adapted and all(torch.equal(student[k], teacher[k]) for k in student if k not in adapted)
    assert any(not torch.equal(student[k], teacher[k]) for k in adapted)

    ckpt = lora_run / "checkpoints" / "checkpoint-3"
    assert sorted(p.name for p in (ckpt / "student").iterdir()) == ["adapter_model.safetensors"]
    adapter = load(ckpt / "student" / "adapter_model.safetensors")
    assert all(".lora_A." in k or ".lora_B." in k for k in adapter)
    optimizer = load_optimizer_state(ckpt / "optimizer_student.safetensors")
    assert len(optimizer["state"]) == len(adapter)  # Adam holds moments for the adapter only
    ema = load(ckpt / "student_ema" / "ema_adapter.safetensors")
    assert len(ema) == len(adapter) and all(".lora_" in k for k in ema)
    # The finished adapter is the EMA of the last checkpoint.
    final = load(lora_run / "student" / "student_lora" / "adapter_model.safetensors")
    assert_same(final, {"base_model.model." + k.replace(".default.", "."): v for k, v in ema.items()})
    assert json.loads((ckpt / "trainer_state.json").read_text())["student_base"]


def test_resume_equals_an_uninterrupted_run(lora_run, tiny_teacher, tmp_path):
    out = tmp_path / "split"
    assert distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "2").exit_code == 0
    result = distill(tiny_teacher, out, "--max-steps", "3", "--checkpoint-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    for rel in ("student/unet/diffusion_pytorch_model.safetensors", "student/student_lora/adapter_model.safetensors",
                "checkpoints/checkpoint-3/student/adapter_model.safetensors", "checkpoints/checkpoint-3/student_ema/ema_adapter.safetensors"):  # fmt: skip
        assert_same(load(out / rel), load(lora_run / rel))


def test_a_resume_on_other_base_weights_is_refused(tiny_teacher, tmp_path):
    """--student-init names the same folder, but its weights changed: the adapter belongs to the old base."""
    from safetensors.torch import load_file, save_file

    init = tmp_path / "init"
    shutil.copytree(tiny_teacher, init)
    out = tmp_path / "run"
    assert distill(tiny_teacher, out, "--max-steps", "1", "--checkpoint-every", "1", "--student-init", str(init)).exit_code == 0
    weights_file = init / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights["conv_out.bias"] += 1.0  # same size, same config: only the weights tell
    save_file(weights, weights_file)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    result = distill(tiny_teacher, out, "--max-steps", "2", "--resume")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "other base weights" in lines[0], result.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing lost


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_the_adapter_alone(tiny_teacher, checkpointing):
    """make_models: the student's base is frozen, every adapter weight gets a gradient (with gradient checkpointing too)."""
    from diffusers import UNet2DConditionModel

    from swiftbrush.config import PRESETS
    from swiftbrush.train import make_ema, make_models, make_optimizers

    config = dataclasses.replace(PRESETS["toy"], student_lora_rank=4, gradient_checkpointing=checkpointing)
    teacher_unet = UNet2DConditionModel.from_pretrained(tiny_teacher / "unet")
    student, lora_teacher = make_models(config, teacher_unet, torch.float32)
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with torch.no_grad():  # B = 0 at the start would give A no gradient
        for n, p in student.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    c = student.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size)
    student(x, torch.tensor([999, 999]), torch.randn(2, 3, c.cross_attention_dim)).sample.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in student.parameters() if not p.requires_grad)
    opt_student, _ = make_optimizers(config, student, lora_teacher)
    assert sum(len(g["params"]) for g in opt_student.param_groups) == len(trainable)
    assert len(make_ema(config, student).shadow_params) == len(trainable)


def test_two_processes_agree_on_a_lora_student(tiny_teacher, tmp_path):
    """DDP on CPU (gloo): the frozen base carries no gradient hooks; both ranks end with the same weights."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "swiftbrush.cli"]  # fmt: skip
    args = ["distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(out), *FAST, "--max-steps", "2"]
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((out / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert len(done["weights_fingerprint_per_rank"]) == 2 and len(set(done["weights_fingerprint_per_rank"])) == 1
    assert (out / "student" / "student_lora" / "adapter_model.safetensors").is_file()


def test_eval_and_export_load_the_lora_student(lora_run, tmp_path):
    r = CliRunner().invoke(cli, ["eval", "--model", str(lora_run / "student"), "--per-caption", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kind"] == "student"
    e = CliRunner().invoke(cli, ["export", "onnx", "--student", str(lora_run / "student"), "--out", str(tmp_path / "onnx")])
    assert e.exit_code == 0, e.output
    assert (tmp_path / "onnx" / "unet" / "model.onnx").is_file()


@pytest.mark.parametrize("rank, words", [("-1", "--student-lora-rank must be an integer in 0..1024"),
                                         ("1025", "--student-lora-rank must be an integer in 0..1024"),
                                         ("x", "--student-lora-rank must be an integer")])  # fmt: skip
def test_bad_ranks_are_one_line_exit_2(rank, words, tmp_path):
    args = ["distill", "--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "r"), "--student-lora-rank", rank]
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert not (tmp_path / "r").exists()
