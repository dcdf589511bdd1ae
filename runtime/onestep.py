"""onestep.json: how a student's single UNet call becomes an image.

Written by `swiftbrush distill` into the student directory and copied into ONNX
and engine directories; the runtime reads it for the noise shape, the torch
backend also for the UNet output -> x0 conversion. Pure stdlib, except
`one_step_scheduler`, which imports diffusers when called (the training package, the
export and the torch backend's callers have it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftbrush_runtime.errors import InvalidModelError

ONESTEP = "onestep.json"
PREDICTION_TYPES = ("epsilon", "v_prediction")  # a student predicts what its teacher predicts
MAX_SIDE = 4096  # pixels: the largest height or width an export or a call takes
_ONESTEP_FIELDS = {
    "timestep": int,
    "alpha_T": float,
    "prediction_type": str,
    "resolution": int,
    "latent_channels": int,
    "vae_scale_factor": int,
    "scaling_factor": float,
}


@dataclass(frozen=True)
class OneStep:
    """The one-step conversion: UNet output at `timestep` -> x0 -> VAE latent, from onestep.json."""

    timestep: int  # the fixed input timestep T (999 for SwiftBrush)
    alpha_T: float  # alphas_cumprod[T] of the teacher's schedule
    prediction_type: str  # "epsilon" or "v_prediction": the teacher's (SD 2.1-768 predicts v)
    resolution: int  # native image size in pixels
    latent_channels: int  # 4 for SD-family VAEs
    vae_scale_factor: int  # pixels per latent cell (8)
    scaling_factor: float  # the VAE's latent scaling (0.18215 for SD)
    extra: dict[str, Any]  # teacher, guidance_scale and anything else recorded

    def x0_coefficients(self) -> tuple[float, float]:
        """(k, m) with x0 = (x_T - k * output) * m: the whole one-step sampler after the UNet."""
        return x0_coefficients(self.prediction_type, self.alpha_T)

    def to_json(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in _ONESTEP_FIELDS}
        return {**fields, **self.extra}


def x0_coefficients(prediction_type: str, alpha: float) -> tuple[float, float]:
    """(k, m) with x0 = (x_t - k * output) * m, from x_t = sqrt(a) x0 + sqrt(1 - a) eps.

    epsilon: x0 = (x_t - sqrt(1 - a) eps) / sqrt(a). v_prediction (v = sqrt(a) eps - sqrt(1 - a) x0):
    x0 = sqrt(a) x_t - sqrt(1 - a) v = (x_t - sqrt((1 - a) / a) v) * sqrt(a).
    """
    if prediction_type == "epsilon":
        return math.sqrt(1.0 - alpha), 1.0 / math.sqrt(alpha)
    if prediction_type == "v_prediction":
        return math.sqrt((1.0 - alpha) / alpha), math.sqrt(alpha)
    raise InvalidModelError(f"prediction_type {prediction_type!r} is not supported; one of {', '.join(PREDICTION_TYPES)}")


def read_onestep(path: Path) -> OneStep:
    """Parse and validate onestep.json; InvalidModelError names the bad field."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidModelError(f"{path.parent} has no {ONESTEP}: it is not a one-step student directory (make one with `swiftbrush distill`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"{path} is not valid JSON ({e})") from None
    values: dict[str, Any] = {}
    for name, typ in _ONESTEP_FIELDS.items():
        if name not in data:
            raise InvalidModelError(f"{path} lacks the field {name!r}")
        value = data[name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise InvalidModelError(f"{path}: {name} must be a {typ.__name__}, got {value!r}")
        values[name] = value
    if values["prediction_type"] not in PREDICTION_TYPES:
        raise InvalidModelError(f"{path}: prediction_type {values['prediction_type']!r} is not supported; one of {', '.join(PREDICTION_TYPES)}")
    if not 0.0 < values["alpha_T"] < 1.0 or not math.isfinite(values["alpha_T"]):
        raise InvalidModelError(f"{path}: alpha_T must be in (0, 1), got {values['alpha_T']}")
    if not 0 <= values["timestep"] < 1000:
        raise InvalidModelError(f"{path}: timestep must be in [0, 999], got {values['timestep']}")
    extra = {k: v for k, v in data.items() if k not in _ONESTEP_FIELDS}
    return OneStep(**values, extra=extra)


def one_step_scheduler(config: Any, prediction_type: str | None = None) -> Any:
    """The scheduler a student folder ships: with it `num_inference_steps=1` is exactly the one-step sampler.

    DDIM with trailing spacing runs its single step at t = 999 and, with the final alpha
    set to 1, returns the x0 of `x0_coefficients` (the teacher's own scheduler would run it at t = 1;
    Euler's trailing init_noise_sigma of sigma_T instead of sqrt(sigma_T^2 + 1) is ~1% off).
    `config` is any SD scheduler's config (DDPM, PNDM, DDIM, Euler): the betas and the
    prediction type (eps or v) carry over. `prediction_type="sample"` is for a UNet graph
    that already returns the latent (the ONNX folder).
    """
    from diffusers import DDIMScheduler

    kind = prediction_type or config.get("prediction_type", "epsilon")
    return DDIMScheduler.from_config(config, timestep_spacing="trailing", set_alpha_to_one=True, prediction_type=kind)
