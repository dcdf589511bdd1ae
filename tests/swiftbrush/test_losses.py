"""The SwiftBrush losses on random CPU tensors."""

from __future__ import annotations

import pytest
import torch

from swiftbrush.losses import cfg, clamped_clip_loss, clip_loss_weight, eps_to_x0, lora_denoising_loss, output_to_eps, output_to_x0, sds_loss, vsd_loss


def sd_schedule():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 8, 8)
    return {
        "x0": torch.randn(shape, generator=g),
        "eps_teacher": torch.randn(shape, generator=g),
        "eps_lora": torch.randn(shape, generator=g),
        "alpha": torch.rand(3, generator=g) * 0.9 + 0.05,
    }


def test_vsd_gradient_is_score_difference_over_numel(batch):
    x0 = batch["x0"].clone().requires_grad_(True)
    loss, logs = vsd_loss(x0, batch["eps_teacher"], batch["eps_lora"], batch["alpha"])
    loss.backward()
    w = (1 - batch["alpha"]).view(-1, 1, 1, 1)
    expected = w * (batch["eps_teacher"] - batch["eps_lora"]) / x0.numel()
    torch.testing.assert_close(x0.grad, expected, rtol=1e-5, atol=1e-9)
    assert logs["vsd"] == pytest.approx(0.5 * (expected * x0.numel()).pow(2).mean().item(), rel=1e-5)


def test_vsd_gradient_points_along_the_weighted_score_difference(batch):
    """Descent moves x0 against the teacher's predicted noise and along the LoRA teacher's."""
    x0 = batch["x0"].clone().requires_grad_(True)
    loss, _ = vsd_loss(x0, batch["eps_teacher"], batch["eps_lora"], batch["alpha"])
    loss.backward()
    direction = (batch["eps_teacher"] - batch["eps_lora"]) * (1 - batch["alpha"]).view(-1, 1, 1, 1)
    assert torch.sum(x0.grad * direction) > 0  # descent goes along -(eps_teacher - eps_lora)


def test_vsd_is_zero_when_teacher_equals_lora(batch):
    x0 = batch["x0"].clone().requires_grad_(True)
    loss, _ = vsd_loss(x0, batch["eps_teacher"], batch["eps_teacher"].clone(), batch["alpha"])
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(x0.grad) == 0


def test_vsd_ignores_non_finite_scores(batch):
    eps = batch["eps_teacher"].clone()
    eps[0, 0, 0, 0] = float("nan")
    eps[1, 0, 0, 0] = float("inf")
    x0 = batch["x0"].clone().requires_grad_(True)
    loss, _ = vsd_loss(x0, eps, batch["eps_lora"], batch["alpha"])
    loss.backward()
    assert torch.isfinite(x0.grad).all()


def test_sds_is_vsd_with_the_noise_as_lora_prediction(batch):
    noise = torch.randn_like(batch["x0"])
    a, logs = sds_loss(batch["x0"], batch["eps_teacher"], noise, batch["alpha"])
    b, _ = vsd_loss(batch["x0"], batch["eps_teacher"], noise, batch["alpha"])
    assert a.item() == b.item() and "sds" in logs


def test_eps_to_x0_inverts_add_noise_at_999():
    sched = sd_schedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.full((2,), 999, dtype=torch.long)
    x_t = sched.add_noise(x0, eps, t)
    recovered = eps_to_x0(x_t, eps, sched.alphas_cumprod[t])
    torch.testing.assert_close(recovered, x0, rtol=1e-4, atol=1e-4)
    assert float(sched.alphas_cumprod[999]) == pytest.approx(0.00466, abs=1e-5)  # SD's a_T (REFERENCE.md)


def test_eps_to_x0_accepts_a_scalar_alpha():
    x = torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(eps_to_x0(x, torch.zeros_like(x), 0.25), x / 0.5)


def test_cfg_formula():
    u, c = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(cfg(u, c, 1.0), c)
    torch.testing.assert_close(cfg(u, c, 0.0), u)
    torch.testing.assert_close(cfg(u, c, 4.5), u + 4.5 * (c - u))


def test_lora_loss_is_alpha_weighted_eps_mse():
    g = torch.Generator().manual_seed(2)
    pred, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    alpha = torch.tensor([0.0, 0.5])
    loss, logs = lora_denoising_loss(pred, noise, alpha)
    expected = 0.5 * ((pred[1] - noise[1]) ** 2).mean() / 2  # sample 0 has weight 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["lora"] == pytest.approx(loss.item())


@pytest.mark.parametrize("t", [1, 250, 999])
def test_v_prediction_outputs_invert_diffusers_velocity(t):
    """For a v teacher (SD 2.x-768), v = get_velocity(x0, noise, t) maps back to diffusers' x0 and noise."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction")
    g = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    ts = torch.full((2,), t)
    x_t, v = sched.add_noise(x0, noise, ts), sched.get_velocity(x0, noise, ts)
    a = sched.alphas_cumprod[ts]
    torch.testing.assert_close(output_to_x0(v, x_t, a, "v_prediction"), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output_to_eps(v, x_t, a, "v_prediction"), noise, rtol=1e-4, atol=1e-4)
    # an eps teacher's output is its eps, and its x0 is eps_to_x0
    torch.testing.assert_close(output_to_eps(noise, x_t, a, "epsilon"), noise)
    torch.testing.assert_close(output_to_x0(noise, x_t, a, "epsilon"), eps_to_x0(x_t, noise, a))
    with pytest.raises(ValueError, match="sample"):
        output_to_eps(v, x_t, a, "sample")


def test_cfg_commutes_with_the_v_to_eps_map():
    """Guiding v and then converting equals converting both predictions and guiding eps."""
    g = torch.Generator().manual_seed(1)
    x_t, v_u, v_c = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    a = torch.tensor([0.3, 0.9])
    guided_then_eps = output_to_eps(cfg(v_u, v_c, 4.5), x_t, a, "v_prediction")
    eps_then_guided = cfg(output_to_eps(v_u, x_t, a, "v_prediction"), output_to_eps(v_c, x_t, a, "v_prediction"), 4.5)
    torch.testing.assert_close(guided_then_eps, eps_then_guided, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_runtime_x0_coefficients_are_the_training_map(kind):
    """The torch-free runtime and the ONNX graph use (k, m) with x0 = (z - k out) m: the trainer's map."""
    from swiftbrush_runtime.onestep import x0_coefficients

    a_T = float(sd_schedule().alphas_cumprod[999])
    g = torch.Generator().manual_seed(2)
    z, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    k, m = x0_coefficients(kind, a_T)
    torch.testing.assert_close((z - k * out) * m, output_to_x0(out, z, a_T, kind), rtol=1e-5, atol=1e-5)


def test_clamped_clip_loss_is_zero_with_zero_gradient_above_tau():
    g = torch.Generator().manual_seed(3)
    text = torch.randn(4, 16, generator=g)
    image = (text + 0.1 * torch.randn(4, 16, generator=g)).requires_grad_(True)  # cos near 1
    loss, logs = clamped_clip_loss(image, text, tau=0.35)
    loss.backward()
    assert loss.item() == 0.0 and logs["clip"] == 0.0
    assert logs["clip_cos"] > 0.35
    assert torch.count_nonzero(image.grad) == 0


def test_clamped_clip_loss_value_below_tau_normalises_inside():
    """Unnormalised inputs: the loss is mean(relu(tau - cos)) of the unit vectors; only pairs below tau count."""
    text = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    image = torch.tensor([[5.0, 5.0], [-1.0, 0.0]])  # cos 1/sqrt(2) (above tau), cos 0 (below)
    loss, logs = clamped_clip_loss(image, text, tau=0.35)
    assert loss.item() == pytest.approx(0.35 / 2)
    assert logs["clip_cos"] == pytest.approx((2**-0.5 + 0.0) / 2)
    assert clamped_clip_loss(image, text, tau=0.9)[0].item() == pytest.approx(((0.9 - 2**-0.5) + 0.9) / 2)


def test_clamped_clip_loss_gradient_flows_only_through_the_image():
    g = torch.Generator().manual_seed(4)
    image = torch.randn(3, 8, generator=g).requires_grad_(True)
    text = (-image.detach() + 0.1 * torch.randn(3, 8, generator=g)).requires_grad_(True)  # cos near -1: all below tau
    loss, _ = clamped_clip_loss(image, text)
    loss.backward()
    assert text.grad is None
    assert image.grad is not None and image.grad.abs().sum() > 0
    # A step against the gradient raises the cosine.
    stepped = clamped_clip_loss(image.detach() - 0.1 * image.grad, text.detach())[1]["clip_cos"]
    assert stepped > clamped_clip_loss(image.detach(), text.detach())[1]["clip_cos"]


def test_clip_loss_weight_decays_linearly_to_zero():
    assert clip_loss_weight(0, 1000, 0.1) == pytest.approx(0.1)
    assert clip_loss_weight(500, 1000, 0.1) == pytest.approx(0.05)
    assert clip_loss_weight(1000, 1000, 0.1) == 0.0
    assert clip_loss_weight(1200, 1000, 0.1) == 0.0  # past the end: never negative
