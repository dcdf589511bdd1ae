"""Checkpointer: one writer for checkpoint-<N>/, read back exactly; accelerate's hooks write the same folders.

The real run's kill-and-resume equality is in test_distill.py; these check the module on
its own, with a tiny UNet and an accelerator stand-in for one CPU process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from swiftbrush.checkpoints import Checkpointer, latest_checkpoint
from swiftbrush.errors import InvalidArgumentError


class OneProcess:
    """What Checkpointer asks of an accelerate.Accelerator, for one CPU process (FSDP when asked)."""

    is_main_process, device, scaler = True, torch.device("cpu"), None

    def __init__(self, fsdp: bool = False) -> None:
        from accelerate.utils import DistributedType

        self.distributed_type = DistributedType.FSDP if fsdp else DistributedType.NO
        self.save_hooks: list[Any] = []
        self.load_hooks: list[Any] = []

    def register_save_state_pre_hook(self, hook: Any) -> None:
        self.save_hooks.append(hook)

    def register_load_state_pre_hook(self, hook: Any) -> None:
        self.load_hooks.append(hook)

    def wait_for_everyone(self) -> None:
        pass

    def unwrap_model(self, model: Any) -> Any:
        return model


def parts(seed: int) -> tuple[Any, Any, Any, dict[str, torch.optim.Optimizer]]:
    """A tiny student, the same UNet with LoRA adapters, the student's EMA and both Adams, after one step."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from peft import LoraConfig

    torch.manual_seed(seed)
    config = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                  cross_attention_dim=8, attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))  # fmt: skip
    student = UNet2DConditionModel(**config)
    lora_unet = UNet2DConditionModel(**config).requires_grad_(False)
    lora_unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights="gaussian"))
    ema = EMAModel(student.parameters(), decay=0.9, model_cls=UNet2DConditionModel, model_config=student.config)
    opts = {"optimizer_student": torch.optim.Adam(student.parameters(), lr=1e-3),
            "optimizer_lora": torch.optim.Adam([p for p in lora_unet.parameters() if p.requires_grad], lr=1e-3)}  # fmt: skip
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 3, 8)
    (student(x, t, cond).sample.square().mean() + lora_unet(x, t, cond).sample.square().mean()).backward()
    for opt in opts.values():
        opt.step()
    ema.step(student.parameters())
    return student, lora_unet, ema, opts


def tensors(module: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_checkpoint_reads_back_into_other_models_exactly(tmp_path: Path):
    student, lora_unet, ema, opts = parts(seed=0)
    saver = Checkpointer(OneProcess(), student, lora_unet, ema)
    saver.optimizers = opts
    final = saver.save(tmp_path, 3, {"step": 3}, keep=2)

    assert final == tmp_path / "checkpoints" / "checkpoint-3" == latest_checkpoint(tmp_path)
    names = sorted(p.name for p in final.iterdir())
    assert names == ["lora_teacher", "optimizer_lora.safetensors", "optimizer_student.safetensors", "student", "student_ema", "trainer_state.json"]
    assert json.loads((final / "trainer_state.json").read_text()) == {"step": 3}
    assert not [p for p in final.rglob("*") if p.suffix in (".bin", ".pkl", ".pt", ".pth")]

    other_student, other_lora, other_ema, other_opts = parts(seed=1)  # other weights, other Adam moments
    loader = Checkpointer(OneProcess(), other_student, other_lora, other_ema)
    loader.optimizers = other_opts
    loader.load(final)
    a, b = tensors(student), tensors(other_student)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = ({k: v for k, v in tensors(m).items() if "lora_" in k} for m in (lora_unet, other_lora))  # the frozen base is the teacher's
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, other_ema.shadow_params)) and other_ema.optimization_step == 1
    for name, opt in opts.items():
        mine, theirs = opt.state_dict(), other_opts[name].state_dict()
        assert json.dumps(mine["param_groups"]) == json.dumps(theirs["param_groups"])  # JSON has no tuples
        assert all(torch.equal(mine["state"][i][k], theirs["state"][i][k]) for i in mine["state"] for k in mine["state"][i])


def test_old_checkpoints_are_pruned_and_a_partial_one_is_never_the_latest(tmp_path: Path):
    student, _, ema, opts = parts(seed=0)
    saver = Checkpointer(OneProcess(), student, None, ema)  # SDS: no LoRA teacher
    saver.optimizers = {"optimizer_student": opts["optimizer_student"]}
    for step in (1, 2, 3):
        saver.save(tmp_path, step, {"step": step}, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert not (root / "checkpoint-3" / "lora_teacher").exists()
    (root / ".tmp-checkpoint-4" / "student").mkdir(parents=True)  # a save killed half way
    (root / "checkpoint-5").mkdir()  # no trainer_state.json: not a finished checkpoint
    assert latest_checkpoint(tmp_path) == root / "checkpoint-3"


def test_accelerates_hooks_write_the_same_model_folders(tmp_path: Path):
    """Under FSDP accelerate's save_state calls the hook: the models land as the plain path writes them."""
    student, lora_unet, ema, _ = parts(seed=0)
    accelerator = OneProcess()
    checkpointer = Checkpointer(accelerator, student, lora_unet, ema)
    assert len(accelerator.save_hooks) == len(accelerator.load_hooks) == 1
    weights = [tensors(student)]
    accelerator.save_hooks[0]([student], weights, str(tmp_path / "hooked"))
    assert weights == []  # accelerate then writes no model files of its own
    checkpointer.write_models(tmp_path / "plain")
    for sub in ("student/diffusion_pytorch_model.safetensors", "student_ema/diffusion_pytorch_model.safetensors",
                "lora_teacher/adapter_model.safetensors"):  # fmt: skip
        assert (tmp_path / "hooked" / sub).read_bytes() == (tmp_path / "plain" / sub).read_bytes(), sub
    models = [student]
    accelerator.load_hooks[0](models, str(tmp_path / "hooked"))
    assert models == []


def test_a_checkpoint_from_another_launch_kind_is_refused_in_one_line(tmp_path: Path):
    student, _, ema, opts = parts(seed=0)
    saver = Checkpointer(OneProcess(), student, None, ema)
    saver.optimizers = {"optimizer_student": opts["optimizer_student"]}
    final = saver.save(tmp_path, 1, {"step": 1}, keep=1)
    under_fsdp = Checkpointer(OneProcess(fsdp=True), student, None, ema)
    with pytest.raises(InvalidArgumentError, match="written without FSDP and this run is under FSDP; resume with the accelerate config"):
        under_fsdp.load(final)
    (final / "optimizer_student.safetensors").unlink()  # what an FSDP save leaves: accelerate's optimiser files instead
    with pytest.raises(InvalidArgumentError, match="written under FSDP and this run is not under FSDP"):
        saver.load(final)
