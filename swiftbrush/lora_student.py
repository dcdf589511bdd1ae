"""The LoRA student (SwiftBrush v2's resource-efficient model): peft LoRA adapters on a frozen student UNet.

    swiftbrush distill --teacher stabilityai/stable-diffusion-2-1-base --prompts prompts.txt \
        --out out/sd21-lora --student-lora-rank 256                  # SBv2: rank 256, alpha 512

The student UNet (a copy of the teacher's, or `--student-init`) keeps its weights frozen and
trains only LoRA adapters on the modules the LoRA teacher adapts (`config.lora_targets`), so
the optimiser state, the gradients and the EMA cover only the adapter. A finished student
folder holds the merged full weights in unet/ (export, runtime and diffusers load it as any
student) and the adapter beside them in student_lora/, in peft's own format:

    from peft import PeftModel
    # base_unet: the teacher's UNet, or --student-init's (adapter_config.json names it)
    unet = PeftModel.from_pretrained(base_unet, "out/run/student/student_lora").merge_and_unload()

Checkpoints hold the adapter and its EMA only; a resume re-creates the base from the teacher
(or `--student-init`) and refuses one whose weights differ (`base_identity`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from diffusers.training_utils import EMAModel

from swiftbrush.config import DistillConfig

ADAPTER = "default"  # peft's name for the one adapter of the student
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names a wrapped model's weights
EMA_FILE = "ema_adapter.safetensors"
EMA_FORMAT = "swiftbrush-adapter-ema-v1"


def student_lora_alpha(config: DistillConfig) -> float:
    """The adapter's alpha: the configured one, else 2 x rank (SwiftBrush v2's 512 for rank 256)."""
    return float(config.student_lora_alpha) if config.student_lora_alpha is not None else 2.0 * config.student_lora_rank


def add_student_adapter(unet: Any, config: DistillConfig) -> None:
    """Freeze `unet` and add the trainable LoRA adapter (B = 0: the student starts as its base)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    lora = LoraConfig(r=config.student_lora_rank, lora_alpha=student_lora_alpha(config), target_modules=list(config.lora_targets),
                      init_lora_weights=True)  # fmt: skip
    unet.add_adapter(lora, adapter_name=ADAPTER)


def is_lora_student(unet: Any) -> bool:
    return ADAPTER in (getattr(unet, "peft_config", None) or {})


def trainable(parameters: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [p for p in parameters if p.requires_grad]


def base_identity(unet: Any) -> str:
    """A hash of the frozen base weights (names, dtypes, shapes, bytes): a resume must rebuild the same base."""
    h = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        if ".lora_" in name:
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class AdapterEMA(EMAModel):
    """diffusers' EMAModel over the trainable (adapter) parameters of a LoRA student.

    Callers pass the whole model's parameters, as for a full student (the trainer's step,
    the sample grid, the finished student); the frozen base is filtered out here, so it is
    neither copied each step nor held twice in memory.
    """

    def __init__(self, unet: Any, **kwargs: Any) -> None:
        self.names = [n for n, p in unet.named_parameters() if p.requires_grad]
        super().__init__(trainable(unet.parameters()), **kwargs)

    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        super().step(trainable(parameters))

    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        super().copy_to(trainable(parameters))

    def store(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        super().store(trainable(parameters))

    def restore(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        super().restore(trainable(parameters))

    def save(self, folder: Path) -> None:
        """folder/ema_adapter.safetensors: the shadow weights by parameter name, the EMA's counters as metadata."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        shadow = state.pop("shadow_params")
        tensors = {name: t.detach().contiguous().cpu() for name, t in zip(self.names, shadow)}
        save_file(tensors, str(folder / EMA_FILE), metadata={"format": EMA_FORMAT, "state": json.dumps(state)})

    def load(self, folder: Path) -> None:
        """The EMA `save` wrote; the adapter's parameter names must be this student's."""
        from safetensors import safe_open

        with safe_open(str(folder / EMA_FILE), framework="pt") as f:
            metadata = f.metadata() or {}
            assert metadata.get("format") == EMA_FORMAT, f"{folder / EMA_FILE} is not an adapter EMA (format {metadata.get('format')!r})"
            assert sorted(f.keys()) == sorted(self.names), f"{folder / EMA_FILE} holds another adapter's parameters"
            shadow = [f.get_tensor(name) for name in self.names]
        self.load_state_dict({**json.loads(metadata["state"]), "shadow_params": shadow})


@dataclass
class StudentAdapter:
    """A LoRA student's adapter as peft writes it: its LoraConfig and its weights (peft's key names)."""

    config: Any  # peft.LoraConfig
    weights: dict[str, torch.Tensor]

    @classmethod
    def from_unet(cls, unet: Any, base: str | None) -> "StudentAdapter":
        """The adapter of `unet` as it is now; `base` names the UNet it goes onto (recorded in adapter_config.json)."""
        from peft.utils import get_peft_model_state_dict

        config = copy.deepcopy(unet.peft_config[ADAPTER])
        config.base_model_name_or_path = base
        weights = {PEFT_PREFIX + k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}
        return cls(config, weights)

    def save(self, folder: Path) -> None:
        """adapter_config.json + adapter_model.safetensors: what `PeftModel.from_pretrained(base, folder)` reads."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        save_file(self.weights, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def merge_adapter(unet: Any) -> Any:
    """Fold the adapter into the base weights and remove the peft layers, in place; returns the plain UNet."""
    unet.fuse_lora()
    unet.unload_lora()
    return unet
