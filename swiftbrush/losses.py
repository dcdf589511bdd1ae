"""The SwiftBrush losses as pure functions on tensors.

Each returns `(loss, logs)`: the scalar to backpropagate and a small dict of
floats for the progress bar and the JSONL log. The trainer only weights, sums,
backpropagates and steps; everything here is testable on random CPU tensors.

Shapes: latents and eps are BxCxHxW; `alpha_t` is the teacher schedule's
`alphas_cumprod[t]` per sample, shape B (broadcast over C, H, W here).
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

Logs = Dict[str, float]


def _per_sample(alpha_t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """alpha_t as a tensor broadcastable against `like` (B -> Bx1x1x1)."""
    a = torch.as_tensor(alpha_t, dtype=like.dtype, device=like.device)
    return a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim else a


def eps_to_x0(latents: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor | float) -> torch.Tensor:
    """Invert `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps` for x0 (the one-step student's output map)."""
    a = _per_sample(alpha_t, latents)
    return (latents - (1 - a).sqrt() * eps) / a.sqrt()


def output_to_eps(output: torch.Tensor, latents: torch.Tensor, alpha_t: torch.Tensor | float, prediction_type: str) -> torch.Tensor:
    """The UNet's output as eps: itself for an eps teacher, sqrt(1 - a) x_t + sqrt(a) v for a v teacher.

    The map is affine in the output with x_t fixed, so CFG gives the same result before or after it.
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        a = _per_sample(alpha_t, latents)
        return (1 - a).sqrt() * latents + a.sqrt() * output
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def output_to_x0(output: torch.Tensor, latents: torch.Tensor, alpha_t: torch.Tensor | float, prediction_type: str) -> torch.Tensor:
    """The UNet's output as x0 (the one-step student's output map): eps or v, as its teacher predicts."""
    if prediction_type == "v_prediction":
        a = _per_sample(alpha_t, latents)
        return a.sqrt() * latents - (1 - a).sqrt() * output
    return eps_to_x0(latents, output_to_eps(output, latents, alpha_t, prediction_type), alpha_t)


def cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond); scale 1 is the conditional model."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def vsd_loss(
    x0: torch.Tensor, eps_teacher: torch.Tensor, eps_lora: torch.Tensor, alpha_t: torch.Tensor
) -> tuple[torch.Tensor, Logs]:
    """Variational score distillation (SwiftBrush eq. 5 with w(t) = 1 - a_t).

    The score difference is turned into a regression target so that the gradient
    of the loss with respect to x0 is exactly `grad / x0.numel()` (mean reduction):
    autograd never goes through either teacher.
    """
    w = 1 - _per_sample(alpha_t, x0)
    grad = torch.nan_to_num(w * (eps_teacher - eps_lora).to(x0.dtype))
    loss = 0.5 * F.mse_loss(x0.float(), (x0 - grad).detach().float(), reduction="mean")
    return loss, {"vsd": loss.item(), "grad_abs": grad.abs().mean().item()}


def sds_loss(
    x0: torch.Tensor, eps_teacher: torch.Tensor, noise: torch.Tensor, alpha_t: torch.Tensor
) -> tuple[torch.Tensor, Logs]:
    """Score distillation sampling: VSD with the LoRA teacher replaced by the sampled noise (the ablation)."""
    loss, logs = vsd_loss(x0, eps_teacher, noise, alpha_t)
    return loss, {"sds": logs["vsd"], "grad_abs": logs["grad_abs"]}


def lora_denoising_loss(
    eps_pred: torch.Tensor, noise: torch.Tensor, alpha_t: torch.Tensor
) -> tuple[torch.Tensor, Logs]:
    """The LoRA teacher's eps-prediction loss on the student's samples, weighted by a_t per sample."""
    a = _per_sample(alpha_t, eps_pred)
    loss = (a * (eps_pred.float() - noise.float()) ** 2).mean()
    return loss, {"lora": loss.item()}


def clamped_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, tau: float = 0.35) -> tuple[torch.Tensor, Logs]:
    """SwiftBrush v2's clamped CLIP loss: mean over the batch of max(0, tau - cos(image, text)).

    The clamp stops the push once an image matches its prompt well enough (cos >= tau), so the
    loss steers alignment without dragging the student towards CLIP's adversarial optimum.
    Embeddings are BxD and normalised here; the text side is a fixed target (detached).
    """
    image = F.normalize(image_emb.float(), dim=-1)
    text = F.normalize(text_emb.detach().float(), dim=-1)
    cos = (image * text).sum(dim=-1)
    loss = F.relu(tau - cos).mean()
    return loss, {"clip": loss.item(), "clip_cos": cos.mean().item()}


def clip_loss_weight(step: int, max_steps: int, weight: float) -> float:
    """The CLIP loss weight at `step`: `weight` decayed linearly to 0 at `max_steps` (never below 0).

    SwiftBrush v2 anneals the term so that the end of training is pure distillation.
    """
    if max_steps <= 0:
        return 0.0
    return max(0.0, weight * (1.0 - step / max_steps))
