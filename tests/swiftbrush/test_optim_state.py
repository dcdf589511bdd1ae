"""Optimiser state round-trips through safetensors exactly (checkpoints hold no pickles)."""

from __future__ import annotations

import pytest
import torch

from swiftbrush.optim_state import load_optimizer_state, save_optimizer_state


def _model_and_adam(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99))


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_adam_resumed_from_safetensors_continues_exactly(tmp_path):
    model, opt = _model_and_adam(0)
    for s in range(3):
        _step(model, opt, s)
    save_optimizer_state(opt.state_dict(), tmp_path / "opt.safetensors")

    copy, opt2 = _model_and_adam(1)  # other weights and a fresh optimiser
    copy.load_state_dict(model.state_dict())
    opt2.load_state_dict(load_optimizer_state(tmp_path / "opt.safetensors"))
    assert tuple(opt2.param_groups[0]["betas"]) == (0.9, 0.99) and opt2.param_groups[0]["lr"] == 1e-2
    for s in range(3, 6):
        _step(model, opt, s)
        _step(copy, opt2, s)
    for a, b in zip(model.parameters(), copy.parameters()):
        assert torch.equal(a, b)
    assert int(opt2.state_dict()["state"][0]["step"]) == 6


def test_state_before_the_first_step_round_trips(tmp_path):
    _, opt = _model_and_adam(0)
    save_optimizer_state(opt.state_dict(), tmp_path / "opt.safetensors")
    loaded = load_optimizer_state(tmp_path / "opt.safetensors")
    assert loaded["state"] == {} and loaded["param_groups"][0]["params"] == [0, 1, 2, 3]


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="not an optimizer state"):
        load_optimizer_state(tmp_path / "model.safetensors")
