"""The student folder's format: onestep.json (how one UNet call becomes an image) and its components.

`write_onestep` is the one writer (`swiftbrush distill` into the student directory, the
export into ONNX and engine directories, the test fixtures) and `read_onestep` the one
reader; the runtime reads it for the noise shape, the torch backend also for the UNet
output -> x0 conversion. Pure stdlib, except `one_step_scheduler` and
`load_student_modules`, which import diffusers / transformers when called (the training
package, the export and the torch backend's callers have them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from swiftbrush_runtime.errors import InvalidModelError
from swiftbrush_runtime.manifest import atomic_write, read_json

ONESTEP = "onestep.json"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # the diffusers subfolders of a teacher or student folder
STUDENT_TIMESTEP = 999  # SwiftBrush's student runs its one UNet call at the last training timestep
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
    missing = f"{path.parent} has no {ONESTEP}: it is not a one-step student directory (make one with `swiftbrush distill`)"
    data = read_json(path, missing=missing)
    if not isinstance(data, dict):
        raise InvalidModelError(f"{path} is not a JSON object")
    return parse_onestep(data, str(path))


def parse_onestep(data: Mapping[str, Any], where: str = ONESTEP) -> OneStep:
    """A OneStep from onestep.json's fields, checked; `where` names the source in the errors."""
    values: dict[str, Any] = {}
    for name, typ in _ONESTEP_FIELDS.items():
        if name not in data:
            raise InvalidModelError(f"{where} lacks the field {name!r}")
        value = data[name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise InvalidModelError(f"{where}: {name} must be a {typ.__name__}, got {value!r}")
        values[name] = value
    if values["prediction_type"] not in PREDICTION_TYPES:
        raise InvalidModelError(f"{where}: prediction_type {values['prediction_type']!r} is not supported; one of {', '.join(PREDICTION_TYPES)}")
    if not 0.0 < values["alpha_T"] < 1.0 or not math.isfinite(values["alpha_T"]):
        raise InvalidModelError(f"{where}: alpha_T must be in (0, 1), got {values['alpha_T']}")
    if not 0 <= values["timestep"] < 1000:
        raise InvalidModelError(f"{where}: timestep must be in [0, 999], got {values['timestep']}")
    extra = {k: v for k, v in data.items() if k not in _ONESTEP_FIELDS}
    return OneStep(**values, extra=extra)


def write_onestep(folder: Path, onestep: OneStep | Mapping[str, Any]) -> OneStep:
    """Write folder/onestep.json (atomically), checked by the reader's rules first: a writer never makes a file the reader refuses."""
    checked = parse_onestep(onestep.to_json() if isinstance(onestep, OneStep) else onestep, str(Path(folder) / ONESTEP))
    atomic_write(Path(folder) / ONESTEP, json.dumps(checked.to_json(), indent=2) + "\n")
    return checked


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


def transformers_dtype(dtype: Any) -> dict[str, Any]:
    """The from_pretrained keyword for a transformers model's dtype: 4.56 renamed `torch_dtype` to `dtype` and warns on the old name."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def load_student_modules(folder: Path | str, dtype: Any, *, vae_dtype: Any = None, decoder: str = "vae") -> dict[str, Any]:
    """A student folder's text encoder, UNet and decoder from safetensors, in eval mode without gradients.

    The one loader of student weights (training's pipeline, the export, the torch backend),
    so transformers' dtype keyword is handled in one place. `vae_dtype` defaults to `dtype`;
    `decoder="taesd"` loads the tiny decoder of the `taesd/` subfolder instead of the KL VAE.
    Loading errors propagate: each caller words its own one-line message.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)  # each model from its own subfolder's path, so its config's _name_or_path names that folder
    decoder_class, subfolder = (AutoencoderTiny, "taesd") if decoder == "taesd" else (AutoencoderKL, "vae")
    modules = {
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True, **transformers_dtype(dtype)),
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, use_safetensors=True),
        "vae": decoder_class.from_pretrained(folder / subfolder, torch_dtype=vae_dtype or dtype, use_safetensors=True),
    }
    for module in modules.values():
        module.eval().requires_grad_(False)
    return modules
