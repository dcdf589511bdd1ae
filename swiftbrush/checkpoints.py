"""Checkpoints of a distillation run: written atomically, read back so a resume continues bit for bit.

    swiftbrush distill ... --out out/run --checkpoint-every 100    # writes out/run/checkpoints/checkpoint-<N>/
    swiftbrush distill ... --out out/run --resume                  # reads the newest one

A checkpoint folder holds:

    student/                         the student UNet (diffusers folder, safetensors); a LoRA
                                     student's adapter only (adapter_model.safetensors)
    student_ema/                     its EMA, the weights the finished student gets (a LoRA
                                     student's: ema_adapter.safetensors, the adapter's EMA)
    lora_teacher/                    the teacher UNet's LoRA adapters (none for --sds)
    optimizer_student.safetensors    Adam state (swiftbrush/optim_state.py); optimizer_lora too
    grad_scaler.json                 the fp16 loss scale (only with --mixed-precision fp16 on CUDA)
    trainer_state.json               step, data position, the run's identity and config (and a
                                     LoRA student's `student_base`: its frozen base, see load)

It is filled as `.tmp-checkpoint-<N>/` and renamed once whole, so a folder named
`checkpoint-<N>` is always complete. No RNG state is kept: the randomness of a step is a
pure function of (seed, step, rank) (`swiftbrush.train.step_generator`).

One writer, `Checkpointer`, for every launch. Its `write_models` / `read_models` are also
accelerate's save/load hooks. With one process or DDP it writes the optimisers itself, as
safetensors. Under FSDP each rank holds only shards, which accelerate's `save_state` /
`load_state` gather and split: the folder is then written through them, the models by
the same hooks (same layout), the optimisers as accelerate's FSDP files (torch pickles,
read back with weights_only). FSDP needs GPUs, so that branch does not run in the CPU
test suite.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from swiftbrush.config import DistillConfig
from swiftbrush.errors import InvalidArgumentError
from swiftbrush.optim_state import load_optimizer_state, save_optimizer_state
from swiftbrush.runlog import quiet_diffusers
from swiftbrush_runtime.manifest import atomic_write

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
SCALER_FILE = "grad_scaler.json"  # fp16 loss scale, only with --mixed-precision fp16 on CUDA
LORA_FILE = "adapter_model.safetensors"


class Checkpointer:
    """Writes and reads the checkpoints of one run: its models, the EMA and the optimisers.

    Built before `accelerator.prepare` (it registers accelerate's hooks then) from the bare
    models; prepare wraps those modules without replacing them, so they stay the ones
    trained. `lora_unet` is None for SDS. `optimizers` maps a file stem to a prepared
    optimiser; it is filled after prepare.
    """

    def __init__(self, accelerator: Any, student: Any, lora_unet: Any | None, ema: Any) -> None:
        from accelerate.utils import DistributedType

        from swiftbrush.lora_student import base_identity, is_lora_student

        self.accelerator = accelerator
        self.student, self.lora_unet, self.ema = student, lora_unet, ema
        self.optimizers: dict[str, Any] = {}
        # A LoRA student's checkpoints hold its adapter only; its base is rebuilt on resume and must be the same.
        self.student_base = base_identity(student) if is_lora_student(student) else None
        self.fsdp = accelerator.distributed_type == DistributedType.FSDP
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    def save(self, out: Path, step: int, state: dict[str, Any], keep: int) -> Path:
        """checkpoint-<step>/ under out/checkpoints (all ranks call it); keeps the newest `keep` checkpoints."""
        accelerator, main = self.accelerator, self.accelerator.is_main_process
        root = out / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{step}"
        tmp = root / f".tmp-{CHECKPOINT_PREFIX}{step}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if self.fsdp:
            accelerator.save_state(str(tmp))  # every rank: gathers the shards, calls _save_hook for the models
        elif main:
            self.write_models(tmp)
            for name, opt in self.optimizers.items():
                save_optimizer_state(opt.state_dict(), tmp / f"{name}.safetensors")
            if accelerator.scaler is not None:
                write_json(tmp / SCALER_FILE, accelerator.scaler.state_dict())
        accelerator.wait_for_everyone()
        if main:
            write_json(tmp / STATE_FILE, state if self.student_base is None else {**state, "student_base": self.student_base})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            finished = sorted((int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.name[len(CHECKPOINT_PREFIX):].isdigit())
            for _, old in finished[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load(self, folder: Path) -> None:
        """Models, EMA, optimisers and loss scale from a checkpoint folder written by `save` under the same launch kind."""
        written_by_fsdp = not (folder / "optimizer_student.safetensors").is_file()
        if written_by_fsdp != self.fsdp:
            raise InvalidArgumentError(
                f"{folder} was written {'under' if written_by_fsdp else 'without'} FSDP and this run is "
                f"{'' if self.fsdp else 'not '}under FSDP; resume with the accelerate config the run was started with"
            )
        if self.student_base is not None and read_trainer_state(folder).get("student_base") != self.student_base:
            raise InvalidArgumentError(
                f"{folder} trained a LoRA student on other base weights than this run's (the teacher's UNet or --student-init changed); "
                "resume with the same weights or start a new --out"
            )
        if self.fsdp:
            self.accelerator.load_state(str(folder))  # calls _load_hook for the models
            return
        self.read_models(folder)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(load_optimizer_state(folder / f"{name}.safetensors"))
        if self.accelerator.scaler is not None and (folder / SCALER_FILE).is_file():
            self.accelerator.scaler.load_state_dict(json.loads((folder / SCALER_FILE).read_text()))

    def write_models(self, root: Path) -> None:
        """student/, student_ema/ and lora_teacher/ as safetensors folders (main process)."""
        if self.student_base is not None:
            save_lora(self.accelerator.unwrap_model(self.student), root / "student")
            self.ema.save(root / "student_ema")
        else:
            self.accelerator.unwrap_model(self.student).save_pretrained(root / "student", safe_serialization=True)
            self.ema.save_pretrained(root / "student_ema")
        if self.lora_unet is not None:
            save_lora(self.accelerator.unwrap_model(self.lora_unet), root / "lora_teacher")

    def read_models(self, root: Path) -> None:
        """The models `write_models` wrote, into the run's models (every rank)."""
        from diffusers import UNet2DConditionModel
        from diffusers.training_utils import EMAModel
        from safetensors.torch import load_file

        student = self.accelerator.unwrap_model(self.student)
        if self.student_base is not None:
            load_lora(student, root / "student")
            self.ema.load(root / "student_ema")
        else:
            student.load_state_dict(load_file(root / "student" / "diffusion_pytorch_model.safetensors"))
            with quiet_diffusers():  # EMA bookkeeping rides in the UNet config; diffusers warns about it
                loaded = EMAModel.from_pretrained(root / "student_ema", model_cls=UNet2DConditionModel)
            self.ema.load_state_dict(loaded.state_dict())
        self.ema.to(self.accelerator.device)
        if self.lora_unet is not None:
            load_lora(self.accelerator.unwrap_model(self.lora_unet), root / "lora_teacher")

    def _save_hook(self, models: list[Any], weights: list[Any], output_dir: str) -> None:
        """accelerate's save hook: the models as safetensors folders; emptying `weights` stops accelerate's own pickles."""
        if self.accelerator.is_main_process:
            self.write_models(Path(output_dir))
        weights.clear()

    def _load_hook(self, models: list[Any], input_dir: str) -> None:
        """accelerate's load hook: the models from their folders; emptying `models` stops accelerate loading its own."""
        self.read_models(Path(input_dir))
        models.clear()


def save_lora(unet: Any, folder: Path) -> None:
    """The peft LoRA weights of `unet` as folder/adapter_model.safetensors."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, str(folder / LORA_FILE))


def load_lora(unet: Any, folder: Path) -> None:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(unet, load_file(folder / LORA_FILE))
    assert not getattr(result, "unexpected_keys", None), f"unexpected LoRA keys: {result.unexpected_keys[:5]}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest finished checkpoint (temporary ones are never named checkpoint-<N>)."""
    root = out / "checkpoints"
    found = []
    for p in root.glob(f"{CHECKPOINT_PREFIX}*") if root.is_dir() else []:
        suffix = p.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (p / STATE_FILE).is_file():
            found.append((int(suffix), p))
    return max(found)[1] if found else None


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text())


def check_resume(state: dict[str, Any], config: DistillConfig, teacher_id: str, prompts_digest: str, world_size: int, ckpt: Path) -> None:
    """Refuse a checkpoint made from another teacher, prompt set, config or process count."""
    if state.get("teacher_fingerprint") != teacher_id:
        raise InvalidArgumentError(f"{ckpt} was trained from teacher {state.get('teacher')!r}, not this one; resume with the same --teacher or start a new --out")
    if state.get("prompts_digest") != prompts_digest:
        raise InvalidArgumentError(f"{ckpt} was trained on other prompts ({state.get('prompts')!r}); resume with the same --prompts or start a new --out")
    if state.get("config_fingerprint") != config.fingerprint():
        old = state.get("config", {})
        new = config.to_dict()
        diff = [k for k in new if k not in DistillConfig.RESUMABLE_CHANGES and old.get(k) != new[k]]
        detail = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in diff) or "config changed"
        raise InvalidArgumentError(f"{ckpt} was trained with another config ({detail}); resume with the same flags or start a new --out")
    if state.get("world_size") != world_size:
        raise InvalidArgumentError(f"{ckpt} was trained on {state.get('world_size')} process(es), this run has {world_size}; resume with the same number of processes")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """JSON written through a temporary file and a rename (manifest.atomic_write): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n")
