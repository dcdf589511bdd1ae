"""Optimiser state as safetensors, so a checkpoint holds no pickles.

accelerate's `save_state` writes optimiser state with `torch.save` (a pickle) and the
RNG states as `random_states_<rank>.pkl`. Neither safetensors nor accelerate offers a
safetensors format for `Optimizer.state_dict()`, so this small one is written by hand:
every tensor of the per-parameter state goes into the safetensors file as
`state.<param index>.<name>`, and the non-tensor parts (param groups, scalar state) go
into its string metadata as JSON. Training randomness needs no saved RNG state: it is
a pure function of (seed, step, rank) (`swiftbrush.train.step_generator`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FORMAT = "swiftbrush-optimizer-state-v1"


def save_optimizer_state(state_dict: dict[str, Any], path: str | Path) -> None:
    """Write `optimizer.state_dict()` to one safetensors file."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            key = f"state.{int(index)}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    try:
        metadata = {"format": FORMAT, "param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    except TypeError as err:  # e.g. a tensor learning rate: not this optimiser family
        raise ValueError(f"optimizer state has a value JSON cannot hold ({err}); cannot write {path}") from err
    save_file(tensors, str(path), metadata=metadata)


def load_optimizer_state(path: str | Path) -> dict[str, Any]:
    """Read a file written by `save_optimizer_state` back into an `Optimizer.load_state_dict` dict."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not an optimizer state written by swiftbrush (format {metadata.get('format')!r})")
        entries: dict[str, Any] = {key: f.get_tensor(key) for key in f.keys()}
    entries.update(json.loads(metadata["scalars"]))
    state: dict[int, dict[str, Any]] = {}
    for key, value in entries.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": dict(sorted(state.items())), "param_groups": json.loads(metadata["param_groups"])}
