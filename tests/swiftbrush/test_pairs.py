"""`swiftbrush pairs` and the trainer's regression onto them (SwiftBrush v2's image-free warm start).

A tiny random teacher, a few pairs: the folder contract (plan first, manifest last, atomic
shards), pairs independent of sharding and of interruptions, the teacher's own deterministic
sample as x0, refusals of unfinished and foreign folders, and the regression stage and term.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_checks import invoke, one_line_exit_2

FAST = ["--per-prompt", "2", "--steps", "2", "--batch-size", "16"]


def make_pairs(teacher: Path, out: Path, *extra: str) -> Path:
    result = invoke("pairs", "--teacher", str(teacher), "--prompts", "toy", "--out", str(out), *FAST, *extra)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def pairs_dir(tiny_teacher, tmp_path_factory) -> Path:
    return make_pairs(tiny_teacher, tmp_path_factory.mktemp("pairs") / "p", "--shard-size", "20")


def all_pairs(folder: Path) -> dict[str, torch.Tensor]:
    shards = sorted(folder.glob("shard-*.safetensors"))
    parts = [load_file(s) for s in shards]
    return {k: torch.cat([p[k] for p in parts]) for k in ("z", "x0", "prompt")}


def test_folder_layout_and_reader(pairs_dir, tiny_teacher):
    from swiftbrush.pairs import read_pairs
    from swiftbrush.teacher import load_teacher, teacher_fingerprint

    plan = json.loads((pairs_dir / "pairs.json").read_text())
    assert plan["count"] == 72 and plan["shards"] == 4 and plan["steps"] == 2 and plan["scheduler"] == "ddim-trailing"
    assert sorted(p.name for p in pairs_dir.iterdir()) == ["manifest.json", "pairs.json", "prompts.json", *[f"shard-{k:05d}.safetensors" for k in range(4)]]
    pairs = read_pairs(pairs_dir, teacher_fingerprint(load_teacher(tiny_teacher)))
    z, x0, prompt = pairs.batch([0, 1, 45, 71])
    assert z.shape == x0.shape == (4, 4, 8, 8) and prompt.tolist() == [0, 0, 22, 35]
    everything = all_pairs(pairs_dir)
    assert torch.equal(z[2], everything["z"][45]) and torch.equal(x0[3], everything["x0"][71])


def test_x0_is_the_teachers_own_ddim_sample(pairs_dir, tiny_teacher):
    from diffusers import DDIMScheduler

    from swiftbrush.teacher import load_teacher

    teacher = load_teacher(tiny_teacher)
    everything = all_pairs(pairs_dir)
    prompts = json.loads((pairs_dir / "prompts.json").read_text())
    pipe = teacher.pipeline(DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    plan = json.loads((pairs_dir / "pairs.json").read_text())
    i = [5, 6]
    x0 = pipe(prompt=[prompts[int(everything["prompt"][k])] for k in i], latents=everything["z"][i].clone(), num_inference_steps=2,
              guidance_scale=plan["guidance_scale"], output_type="latent").images  # fmt: skip
    assert torch.allclose(x0, everything["x0"][i], atol=1e-5)


def test_pairs_do_not_depend_on_interruptions(pairs_dir, tiny_teacher, tmp_path):
    """An interrupted folder (two shards missing, no manifest) is finished by the same command, to the same pairs."""
    from swiftbrush.pairs import read_pairs

    half = tmp_path / "half"
    shutil.copytree(pairs_dir, half)
    for name in ("manifest.json", "shard-00001.safetensors", "shard-00003.safetensors"):
        (half / name).unlink()
    message = one_line_exit_2(invoke("distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(tmp_path / "run"),
                                     "--regression-pairs", str(half), "--regression-steps", "1", "--max-steps", "1"))  # fmt: skip
    assert "unfinished (2 of 4 shards)" in message and not (tmp_path / "run").exists()
    make_pairs(tiny_teacher, half, "--shard-size", "20")
    a, b = all_pairs(pairs_dir), all_pairs(half)
    assert all(torch.equal(a[k], b[k]) for k in a)
    read_pairs(half)


def test_refusals(pairs_dir, tiny_teacher, tmp_path):
    # A finished folder is not resampled without --overwrite; another plan is not mixed into an unfinished one.
    assert "already holds finished pairs" in one_line_exit_2(invoke("pairs", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(pairs_dir), *FAST, "--shard-size", "20"))
    half = tmp_path / "half"
    shutil.copytree(pairs_dir, half)
    (half / "manifest.json").unlink()
    assert "another plan" in one_line_exit_2(invoke("pairs", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(half), *FAST, "--seed", "3"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "not a pairs folder" in one_line_exit_2(invoke("pairs", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(foreign), *FAST, "--overwrite"))
    assert (foreign / "notes.txt").read_text() == "mine"
    # Pairs of another teacher are refused by the trainer before it trains.
    other = json.loads((pairs_dir / "pairs.json").read_text())
    moved = tmp_path / "other"
    shutil.copytree(pairs_dir, moved)
    other["teacher_fingerprint"] = "0" * 16
    (moved / "pairs.json").write_text(json.dumps(other))
    from swiftbrush_runtime.manifest import write_manifest

    write_manifest(moved, "pairs", plan="pairs.json")
    message = one_line_exit_2(invoke("distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(tmp_path / "r2"), "--preset", "toy",
                                     "--batch-size", "2", "--regression-pairs", str(moved), "--regression-weight", "0.5", "--max-steps", "1"))  # fmt: skip
    assert "another teacher" in message and not (tmp_path / "r2").exists()
    assert "need --regression-pairs" in one_line_exit_2(invoke("distill", "--teacher", str(tiny_teacher), "--prompts", "toy", "--out", str(tmp_path / "r3"),
                                                               "--regression-steps", "2"))  # fmt: skip


def test_overwrite_keeps_the_old_pairs_until_the_new_are_complete(pairs_dir, tiny_teacher, tmp_path):
    out = tmp_path / "p"
    shutil.copytree(pairs_dir, out)
    make_pairs(tiny_teacher, out, "--overwrite", "--seed", "5")
    assert json.loads((out / "pairs.json").read_text())["seed"] == 5 and json.loads((out / "pairs.json").read_text())["shards"] == 1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_regression_stage_then_vsd_with_the_regression_term(pairs_dir, tiny_teacher, tmp_path):
    """Steps before --regression-steps train the student on the pairs only (the LoRA teacher does not move);
    after them VSD runs with the weighted regression term in the log."""
    from swiftbrush.checkpoints import LORA_FILE
    from swiftbrush.config import build_config
    from swiftbrush.train import distill

    out = tmp_path / "run"
    config = build_config("toy", str(tiny_teacher), batch_size=4, max_steps=3, checkpoint_every=2, log_every=1, sample_prompts=0,
                          regression_pairs=str(pairs_dir), regression_steps=2, regression_weight=0.5)  # fmt: skip
    distill(str(tiny_teacher), "toy", out, config)
    log = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in log if "event" not in r}
    assert set(steps[1]) >= {"regression"} and not {"vsd", "lora"} & set(steps[2])
    assert {"regression", "vsd", "lora"} <= set(steps[3])
    lora_at_2 = load_file(out / "checkpoints" / "checkpoint-2" / "lora_teacher" / LORA_FILE)
    assert all(float(v.abs().sum()) == 0 for k, v in lora_at_2.items() if "lora_B" in k)  # peft starts B at zero; no LoRA step ran
    student_at_2 = load_file(next((out / "checkpoints" / "checkpoint-2" / "student").glob("*.safetensors")))
    from swiftbrush.teacher import load_teacher

    start = load_teacher(tiny_teacher).unet.state_dict()
    assert any(not torch.equal(student_at_2[k], start[k]) for k in start)  # the regression steps trained the student
