"""`swiftbrush distill` end to end on a tiny random teacher and on the committed toy teacher.

Real commands, 2-8 steps each: the student directory contract, checkpoint + resume
equal to an uninterrupted run, SIGKILL and resume, bad input -> exit 2 with one line,
NaN handling, two processes agreeing, the SD 2.1-structured benchmark at tiny size.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush.errors import InvalidArgumentError
from swiftbrush.optim_state import load_optimizer_state

ROOT = Path(__file__).parents[2]
FAST = ["--preset", "toy", "--batch-size", "4"]


def distill(teacher: Path | str, out: Path, *extra: str) -> "CliRunner.invoke":
    args = ["distill", "--teacher", str(teacher), "--prompts", "toy", "--out", str(out), *FAST, *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def unet_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "diffusion_pytorch_model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = unet_weights(a), unet_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), k


@pytest.fixture(scope="module")
def finished_run(tiny_teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    result = distill(tiny_teacher, out, "--max-steps", "4", "--checkpoint-every", "2")
    assert result.exit_code == 0, result.output
    return out


def test_student_directory_contract(finished_run, tiny_teacher):
    from swiftbrush_runtime.manifest import read_manifest

    student = finished_run / "student"
    index = json.loads((student / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (student / sub).is_dir(), sub
    assert (student / "tokenizer" / "tokenizer.json").read_bytes() == (tiny_teacher / "tokenizer" / "tokenizer.json").read_bytes()
    assert not list(student.rglob("*.bin")) and not list(student.rglob("*.pt")) and not list(student.rglob("*.pkl"))
    onestep = json.loads((student / "onestep.json").read_text())
    assert onestep["timestep"] == 999 and onestep["prediction_type"] == "epsilon"
    assert onestep["alpha_T"] == pytest.approx(0.00466, abs=1e-5)
    assert onestep["resolution"] == 64 and onestep["latent_channels"] == 4 and onestep["vae_scale_factor"] == 8
    assert onestep["teacher"] == str(tiny_teacher) and onestep["guidance_scale"] > 1
    manifest = read_manifest(student, "student", verify=True)
    assert "onestep.json" in manifest["files"] and manifest["made_from"]["steps"] == 4


def test_run_folder_has_logs_curve_samples_and_checkpoints(finished_run):
    records = [json.loads(line) for line in (finished_run / "logs" / "train.jsonl").read_text().splitlines()]
    steps = [r for r in records if "event" not in r]
    # the toy preset logs every 5 steps and always the last one: 4 steps log once, at step 4
    assert [r["step"] for r in steps] == [4]
    assert all(isinstance(r[k], float) and math.isfinite(r[k]) for r in steps for k in ("vsd", "lora")), steps
    assert records[-1]["event"] == "done"
    assert (finished_run / "logs" / "loss_curve.png").is_file()
    assert sorted(p.name for p in (finished_run / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    ckpt = finished_run / "checkpoints" / "checkpoint-4"
    for part in ("student", "student_ema", "lora_teacher", "optimizer_student.safetensors", "optimizer_lora.safetensors"):
        assert (ckpt / part).exists(), part
    pickles = [p.name for p in ckpt.rglob("*") if p.suffix in (".bin", ".pkl", ".pt", ".pth")]
    assert not pickles, f"checkpoint holds pickles: {pickles}"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["data_position"] == 16 and state["config"]["preset"] == "toy"
    assert not list((finished_run / "checkpoints").glob(".tmp-*"))


def test_the_student_is_the_ema(finished_run):
    assert_same_weights(finished_run / "student" / "unet", finished_run / "checkpoints" / "checkpoint-4" / "student_ema")


def test_one_step_pipeline_and_sample_student(finished_run):
    import torch

    from swiftbrush.student import OneStepPipeline, initial_latents, sample_student

    pipe = OneStepPipeline.from_pretrained(finished_run / "student")
    prompts = ["a red circle on a black background", "a blue square on a white background"]
    a = pipe(prompts, seed=3, output_type="np").images
    b = pipe(prompts, seed=3, output_type="np").images
    assert a.shape == (2, 64, 64, 3) and np.array_equal(a, b)
    pil = pipe(prompts[0], generator=torch.Generator().manual_seed(0)).images
    assert pil[0].size == (64, 64)
    images = sample_student(finished_run / "student", prompts, seed=3)
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    assert np.abs(images.astype(float) - np.round(a * 255)).max() <= 1
    # StableDiffusionPipeline callers' arguments: one step, no guidance, another size
    c = pipe(prompts, seed=3, output_type="np", num_inference_steps=1, guidance_scale=0.0).images
    assert np.array_equal(a, c)
    assert pipe(prompts[0], seed=3, output_type="np", height=32, width=48).images.shape == (1, 32, 48, 3)
    from swiftbrush.errors import InvalidArgumentError

    for bad in (dict(num_inference_steps=4), dict(guidance_scale=7.5), dict(height=60)):
        with pytest.raises(InvalidArgumentError):
            pipe(prompts[0], seed=3, **bad)
    # the numpy noise is what the torch-free runtime draws
    z = initial_latents(3, 2, 4, 8, 8)
    assert z.dtype == np.float32 and np.array_equal(z, np.random.default_rng(3).standard_normal((2, 4, 8, 8), dtype=np.float32))


def test_diffusers_pipeline_makes_the_student_image_in_one_step(finished_run):
    """diffusers' own pipeline on the student folder, called as for SD-Turbo, is the one-step student."""
    import torch
    from diffusers import DDPMScheduler, DiffusionPipeline

    from swiftbrush.student import OneStepPipeline, initial_latents

    student = finished_run / "student"
    prompts = ["a red circle on a black background", "a blue square on a white background"]
    z = torch.from_numpy(initial_latents(5, 2, 4, 8, 8))
    ours = OneStepPipeline.from_pretrained(student)(prompts, latents=z, output_type="latent").images
    pipe = DiffusionPipeline.from_pretrained(student)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    theirs = pipe(prompts, num_inference_steps=1, guidance_scale=0.0, latents=z, output_type="latent").images
    assert torch.equal(theirs, ours)
    # the teacher's scheduler (leading spacing) would have run the single step at t = 1
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading", steps_offset=1)
    wrong = pipe(prompts, num_inference_steps=1, guidance_scale=0.0, latents=z, output_type="latent").images
    assert (wrong - ours).abs().max() > 0.1


def test_resume_equals_an_uninterrupted_run(tiny_teacher, finished_run, tmp_path):
    out = tmp_path / "split"
    assert distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "2").exit_code == 0
    result = distill(tiny_teacher, out, "--max-steps", "4", "--checkpoint-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert_same_weights(out / "student" / "unet", finished_run / "student" / "unet")
    assert_same_weights(out / "checkpoints" / "checkpoint-4" / "student", finished_run / "checkpoints" / "checkpoint-4" / "student")


def test_sigkill_then_resume_gives_the_same_weights(tiny_teacher, tmp_path):
    args = ["distill", "--teacher", str(tiny_teacher), "--prompts", "toy", *FAST, "--max-steps", "30", "--checkpoint-every", "5"]
    # All three runs in subprocesses with one thread: bitwise equality needs the same reduction order.
    reference = tmp_path / "reference"
    assert run_cli(*args, "--out", str(reference)).returncode == 0

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "swiftbrush.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while not (out / "checkpoints" / "checkpoint-5").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "student").exists()
    result = run_cli(*args, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_weights(out / "student" / "unet", reference / "student" / "unet")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "swiftbrush.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_existing_out_without_resume_or_overwrite(finished_run, tiny_teacher):
    line = one_error_line(run_cli("distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(finished_run)))
    assert "--resume" in line and "--overwrite" in line


def test_bad_prompts_and_teacher(tmp_path, tiny_teacher):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    (tmp_path / "afile").write_text("x")  # a folder under a file cannot be made, not even by root
    for args, words in [
        (["--teacher", str(tiny_teacher), "--prompts", str(empty), "--out", str(tmp_path / "a")], "no prompts"),
        (["--teacher", str(tmp_path / "nope"), "--prompts", "toy", "--out", str(tmp_path / "b")], "does not exist"),
        (["--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "c"), "--lora-rank", "0"], "--lora-rank"),
        (["--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "d"), "--seed", "-1"], "--seed must be in 0.."),
        (["--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "afile" / "e")], "not writable"),
    ]:
        result = CliRunner().invoke(cli, ["distill", *args], catch_exceptions=False)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


class _MainRankOfTwo:
    """The main rank of a two-rank run whose other rank reports that it cannot see the folder."""

    num_processes, is_main_process, device = 2, True, torch.device("cpu")

    def wait_for_everyone(self) -> None:
        pass

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, torch.zeros_like(tensor)])  # rank 1 did not find the marker


def test_an_out_folder_other_machines_cannot_see_is_refused(tmp_path):
    """Multi-machine runs need one --out (checkpoints, prompt cache); a node-local disk is refused by rank."""
    from swiftbrush.run_dir import check_out_is_shared

    with pytest.raises(InvalidArgumentError, match=r"rank\(s\) 1 cannot see .*filesystem all machines share"):
        check_out_is_shared(_MainRankOfTwo(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the marker is gone
    seen = _MainRankOfTwo()
    seen.gather = lambda t: torch.cat([t, t])  # type: ignore[method-assign]
    check_out_is_shared(seen, tmp_path)  # both ranks see it: no error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU fp16 mixed precision is allowed")
def test_fp16_mixed_precision_on_cpu_is_refused_before_anything_is_written(tmp_path):
    """accelerate silently drops fp16 autocast on CPU, and the run would crash in the first student call."""
    result = CliRunner().invoke(cli, ["distill", "--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "r"), "--mixed-precision", "fp16"])
    assert result.exit_code == 2 and "--mixed-precision fp16 needs a GPU" in result.output, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the FSDP hint is for machines without a GPU")
def test_an_accelerate_config_this_machine_cannot_run_is_one_line(tmp_path, monkeypatch):
    """accelerate refuses FSDP without a GPU by raising from Accelerator() (as under
    `accelerate launch --config_file <FSDP, 2 CPU processes>`); the CLI says so in one line."""
    import accelerate

    def refuse(*args, **kwargs):
        raise RuntimeError("There are currently no available devices found, must be one of 'XPU', 'CUDA', 'MLU', 'NPU', 'MUSA', or 'HPU'.")

    monkeypatch.setattr(accelerate, "Accelerator", refuse)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    result = CliRunner().invoke(cli, ["distill", "--teacher", "toy", "--prompts", "toy", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "accelerate cannot set up this launch (There are currently no available devices" in result.output
    assert "FSDP needs GPUs" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_resume_with_another_config_or_teacher_is_refused(finished_run, tiny_teacher, tmp_path):
    before = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    result = distill(tiny_teacher, finished_run, "--max-steps", "6", "--resume", "--student-lr", "1e-2")
    assert result.exit_code == 2 and "another config" in result.output and "student_lr" in result.output
    other = tmp_path / "other-teacher"
    shutil.copytree(tiny_teacher, other)
    cfg = json.loads((other / "unet" / "config.json").read_text())
    (other / "unet" / "config.json").write_text(json.dumps({**cfg, "attention_head_dim": 2}))
    result = distill(other, finished_run, "--max-steps", "6", "--resume")
    assert result.exit_code == 2 and "teacher" in result.output
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == before  # nothing lost


def test_overwrite_starts_over(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    assert distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "1").exit_code == 0
    assert distill(tiny_teacher, out, "--max-steps", "1", "--overwrite").exit_code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1"]


def test_nan_losses_are_skipped_then_abort(tiny_teacher, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-teacher"
    shutil.copytree(tiny_teacher, bad)
    weights_file = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights["conv_out.bias"][:] = float("nan")
    save_file(weights, weights_file)
    out = tmp_path / "run"
    result = distill(bad, out, "--max-steps", "50")
    assert result.exit_code == 2
    assert "diverged" in result.output and "20 consecutive" in result.output
    assert not (out / "student").exists()


def test_sds_ablation_runs_without_a_lora_teacher(tiny_teacher, tmp_path):
    out = tmp_path / "sds"
    assert distill(tiny_teacher, out, "--max-steps", "2", "--sds").exit_code == 0
    assert not (out / "checkpoints" / "checkpoint-2" / "lora_teacher").exists()
    assert "sds" in (out / "logs" / "train.jsonl").read_text()


def _accelerate_distill(mode: str, teacher: Path, out: Path, steps: int) -> subprocess.CompletedProcess:
    """`accelerate launch <mode> --num_processes 2 -m swiftbrush.cli distill ...`, asserted to succeed."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", mode, "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "swiftbrush.cli"]  # fmt: skip
    args = ["distill", "--teacher", str(teacher), "--prompts", "toy", "--out", str(out), *FAST, "--max-steps", str(steps)]
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_agree_on_one_student(tiny_teacher, tmp_path):
    """DDP on CPU (gloo) through accelerate's torchrun launcher; both ranks end with the same weights."""
    out = tmp_path / "ddp"
    _accelerate_distill("--multi_gpu", tiny_teacher, out, steps=3)
    done = json.loads((out / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert len(done["weights_fingerprint_per_rank"]) == 2 and len(set(done["weights_fingerprint_per_rank"])) == 1
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "student" / "manifest.json").is_file()


def test_accelerate_cpu_launch_runs_two_ranks_that_agree(tiny_teacher, tmp_path):
    """`accelerate launch --cpu --num_processes 2` (one process from accelerate without MPI) trains on two ranks."""
    out = tmp_path / "cpu"
    proc = _accelerate_distill("--cpu", tiny_teacher, out, steps=3)
    assert "starting them with torch.distributed.run" in proc.stderr
    assert proc.stdout.count("student: ") == 1  # the main rank reports the student, not every rank
    done = json.loads((out / "logs" / "train.jsonl").read_text().splitlines()[-1])
    assert len(done["weights_fingerprint_per_rank"]) == 2 and len(set(done["weights_fingerprint_per_rank"])) == 1
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


def test_sd21_structured_benchmark_at_tiny_size():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import train_sd_size
    finally:
        sys.path.pop(0)
    result = train_sd_size.run(tiny=True, batch_size=2, steps=2, warmup=0, mixed_precision="no", gradient_checkpointing=True)
    assert result["finite_steps"] == 2 and result["it_per_s"] > 0


def test_distill_the_toy_teacher_for_two_steps(tmp_path):
    result = distill("toy", tmp_path / "toy", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    onestep = json.loads((tmp_path / "toy" / "student" / "onestep.json").read_text())
    assert onestep["teacher"] == "toy"


def test_several_lora_updates_per_student_update(tiny_teacher, tmp_path):
    """--lora-updates N: the LoRA teacher's optimiser steps N times per training step."""
    out = tmp_path / "ttur"
    assert distill(tiny_teacher, out, "--max-steps", "2", "--checkpoint-every", "2", "--lora-updates", "3").exit_code == 0
    ckpt = out / "checkpoints" / "checkpoint-2"
    student_opt, lora_opt = (load_optimizer_state(ckpt / f"optimizer_{n}.safetensors") for n in ("student", "lora"))
    assert {int(s["step"]) for s in student_opt["state"].values()} == {2}
    assert {int(s["step"]) for s in lora_opt["state"].values()} == {6}


def test_student_init_starts_the_student_from_another_unet(tiny_teacher, tmp_path):
    """--student-init (SwiftBrush v2's SD-Turbo start): the student begins at that UNet, the teacher stays the teacher."""
    from tiny_models import make_tiny_teacher

    init = make_tiny_teacher(tmp_path / "init", seed=1)  # same architecture, other weights
    out = tmp_path / "run"
    result = distill(tiny_teacher, out, "--max-steps", "1", "--student-init", str(init))
    assert result.exit_code == 0, result.output
    student, start, teacher = (unet_weights(p / "unet") for p in (out / "student", init, tiny_teacher))
    to_start = sum((student[k] - start[k]).abs().sum().item() for k in student)
    to_teacher = sum((student[k] - teacher[k]).abs().sum().item() for k in student)
    assert to_start < 0.01 * to_teacher, (to_start, to_teacher)  # one small step away from the init, far from the teacher
    made_from = json.loads((out / "student" / "manifest.json").read_text())["made_from"]
    assert made_from["config"]["student_init"] == str(init) and made_from["teacher"] == str(tiny_teacher)
    # A resume must start from the same UNet: another --student-init is another config.
    other = distill(tiny_teacher, out, "--max-steps", "2", "--resume", "--student-init", str(tiny_teacher))
    assert other.exit_code == 2 and "student_init" in other.output, other.output


def test_student_init_of_another_architecture_or_parameterisation_is_refused(tiny_teacher, tmp_path):
    from tiny_models import make_tiny_teacher

    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in json.loads((tiny_teacher / "unet" / "config.json").read_text()).items() if not k.startswith("_")}
    wide, small = tmp_path / "wide", tmp_path / "small"  # bare UNet folders
    UNet2DConditionModel(**{**cfg, "block_out_channels": [16, 48]}).save_pretrained(wide)
    UNet2DConditionModel(**{**cfg, "sample_size": 16}).save_pretrained(small)
    v_model = make_tiny_teacher(tmp_path / "v", seed=1, prediction_type="v_prediction")
    onnx_dir = tmp_path / "onnx"
    (onnx_dir / "unet").mkdir(parents=True)
    (onnx_dir / "unet" / "model.onnx").write_bytes(b"onnx")
    for init, words in [(wide, "not the teacher's UNet architecture ("), (small, "(sample_size 16 vs the teacher's 8"),
                        (v_model, "predicts 'v_prediction'"),
                        (tmp_path / "missing", "does not exist"), (onnx_dir, "is an ONNX export")]:  # fmt: skip
        line = one_error_line(run_cli("distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(tmp_path / "r"),
                                      "--max-steps", "1", "--student-init", str(init)))  # fmt: skip
        assert words in line, line
    assert not (tmp_path / "r" / "student").exists()


def test_the_driver_reads_top_to_bottom():
    """distill() and its steps define no functions inside them: checkpoints and logs are modules of their own."""
    import ast
    import inspect

    from swiftbrush import train

    for func in (train.distill, train._train):
        body = ast.parse(inspect.getsource(func)).body[0]
        nested = [getattr(n, "name", "lambda") for n in ast.walk(body) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and n is not body]
        assert not nested, f"{func.__name__} defines {nested}"
