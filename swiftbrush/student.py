"""The one-step student: its directory, its pipeline, and sampling for evaluation.

    from swiftbrush.student import OneStepPipeline
    pipe = OneStepPipeline.from_pretrained("out/toy/student")
    images = pipe(["a red circle on a blue background"], seed=0).images

    swiftbrush eval --model out/toy/student

The student directory is a diffusers `StableDiffusionPipeline` folder (the unet is
the distilled student, EMA weights; vae, text encoder, tokenizer and scheduler are
the teacher's) plus `onestep.json`, which makes the one-step conversion explicit:
a multi-step scheduler must never drive this UNet. Math, with a_T = alphas_cumprod[T]:

    z ~ N(0, I);  eps = unet(z, T, text);  x0 = (z - sqrt(1 - a_T) eps) / sqrt(a_T)
    image = vae.decode(x0 / scaling_factor)

(a v-prediction teacher's student predicts v: x0 = sqrt(a_T) z - sqrt(1 - a_T) v; onestep.json
says which.)

Its scheduler is `one_step_scheduler(...)` (DDIM, trailing spacing, final alpha 1), so
diffusers' own pipeline makes the same image, bit for bit, as SD-Turbo users call it:

    pipe = StableDiffusionPipeline.from_pretrained("out/toy/student")
    image = pipe(prompt, num_inference_steps=1, guidance_scale=0.0).images[0]

A LoRA student (`--student-lora-rank`) has the same folder, its unet/ holding base + adapter
merged, plus `student_lora/` (peft's adapter_config.json and adapter_model.safetensors).
`manifest.json` is written last, inside an atomic directory write.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from PIL import Image

from swiftbrush.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.errors import first_line
from swiftbrush_runtime.generator import initial_latents
from swiftbrush_runtime.images import to_uint8
from swiftbrush_runtime.manifest import package_versions
from swiftbrush_runtime.onestep import ONESTEP, STUDENT_TIMESTEP, OneStep, load_student_modules, one_step_scheduler, write_onestep
from swiftbrush_runtime.onestep import read_onestep as parse_onestep
from swiftbrush.losses import output_to_x0
from swiftbrush.prompts import encode_text

LATENT_CHANNELS = 4
STUDENT_LORA = "student_lora"  # a LoRA student's adapter (peft format) beside its merged unet/
VERSIONED = ("swiftbrush", "torch", "diffusers", "transformers", "peft", "accelerate")  # what a student manifest's versions list


def read_onestep(student_dir: Path) -> dict[str, Any]:
    """The one-step config of a finished student directory, as a dict: the runtime's parser and checks."""
    return parse_onestep(Path(student_dir) / ONESTEP).to_json()


def one_step_x0(unet: Any, latents: Any, text_emb: Any, timestep: int, alpha_T: float, prediction_type: str = "epsilon") -> Any:
    """The student's whole sampler: one UNet call at T, its eps (or v) converted to x0 (float32)."""
    t = torch.full((latents.shape[0],), timestep, device=latents.device, dtype=torch.long)
    out = unet(latents.to(unet.dtype), t, text_emb.to(unet.dtype)).sample
    return output_to_x0(out.float(), latents.float(), alpha_T, prediction_type)


def decode_to_uint8(vae: Any, x0: Any, scaling_factor: float) -> np.ndarray:
    """Latents -> uint8 NxHxWx3 images through the (fp32) VAE decoder."""
    return to_uint8(vae.decode((x0 / scaling_factor).to(vae.dtype)).sample.float().cpu().numpy())


class OneStepPipeline(DiffusionPipeline):
    """SwiftBrush's one-step text-to-image pipeline (one text encoder, one UNet, one VAE call)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, onestep: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        alphas = scheduler.alphas_cumprod
        self.onestep = onestep or {
            "timestep": STUDENT_TIMESTEP,
            "alpha_T": float(alphas[STUDENT_TIMESTEP]),
            "prediction_type": str(scheduler.config.get("prediction_type", "epsilon")),
            "resolution": int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1),
            "latent_channels": int(unet.config.in_channels),
            "vae_scale_factor": 2 ** (len(vae.config.block_out_channels) - 1),
            "scaling_factor": float(vae.config.scaling_factor),
        }

    @classmethod
    def from_pretrained(cls, student_dir: str | Path, torch_dtype: Any = None, device: Any = None, **_: Any) -> "OneStepPipeline":  # type: ignore[override]
        """Load a student directory written by `swiftbrush distill` (safetensors only)."""
        from diffusers import DDIMScheduler
        from transformers import CLIPTokenizer

        from swiftbrush_runtime.manifest import read_manifest

        path = Path(student_dir)
        read_manifest(path, "student", verify=False)
        onestep = read_onestep(path)
        dtype = torch_dtype or torch.float32
        try:
            modules = load_student_modules(path, dtype, vae_dtype=torch.float32)
            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
            scheduler = one_step_scheduler(DDIMScheduler.load_config(path, subfolder="scheduler"))
        except Exception as e:  # truncated or foreign files: one line, not a traceback
            raise InvalidModelError(f"student in {path} does not load ({first_line(e)}); rebuild it with `swiftbrush distill`") from None
        pipe = cls(**modules, tokenizer=tokenizer, scheduler=scheduler, onestep=onestep)
        return pipe.to(device) if device is not None else pipe

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        generator: Any = None,
        latents: Any = None,
        output_type: str = "pil",
        return_dict: bool = True,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 1,
        guidance_scale: float = 0.0,
    ) -> Any:
        """Images for `prompt`; `seed` draws the noise with numpy (as the runtime does), else `generator`.

        `num_inference_steps` and `guidance_scale` are accepted as StableDiffusionPipeline
        callers pass them; only one step and no guidance (0 or 1) are what the student is.
        """
        from diffusers.utils.torch_utils import randn_tensor

        if num_inference_steps != 1:
            raise InvalidArgumentError(f"a one-step student makes its image in one UNet call; num_inference_steps must be 1, got {num_inference_steps}")
        if guidance_scale > 1:
            raise InvalidArgumentError(f"the guidance is distilled into the student; guidance_scale must be 0 or 1, got {guidance_scale}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        cfg = self.onestep
        factor = int(cfg["vae_scale_factor"])
        h, w = height or int(cfg["resolution"]), width or int(cfg["resolution"])
        if h % factor or w % factor or h <= 0 or w <= 0:
            raise InvalidArgumentError(f"height and width must be positive multiples of {factor}, got {h}x{w}")
        shape = (len(prompts), int(cfg.get("latent_channels", LATENT_CHANNELS)), h // factor, w // factor)
        device = self._execution_device
        if latents is None:
            if seed is not None:
                latents = torch.from_numpy(initial_latents(seed, *shape))
            else:
                latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device, torch.float32)
        emb = encode_text(self.tokenizer, self.text_encoder, prompts).to(device)
        x0 = one_step_x0(self.unet, latents, emb, int(cfg["timestep"]), float(cfg["alpha_T"]), cfg.get("prediction_type", "epsilon"))
        if output_type == "latent":
            images: Any = x0
        else:
            image = self.vae.decode((x0 / float(cfg["scaling_factor"])).to(self.vae.dtype)).sample.float()
            if output_type == "pil":
                images = [Image.fromarray(a) for a in to_uint8(image.cpu().numpy())]
            else:
                image = (image / 2 + 0.5).clamp(0, 1)
                images = image if output_type == "pt" else image.permute(0, 2, 3, 1).cpu().numpy()
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)



def sample_student(
    student: str | Path | Any, prompts: Sequence[str], seed: int = 0, batch_size: int = 64, progress: Callable[[int], Any] | None = None
) -> np.ndarray:
    """uint8 NxHxWx3 images, one per prompt, from a student directory or a loaded OneStepPipeline.

    The noise for all N images is drawn at once from `seed` (numpy), so a prompt's
    image does not depend on the batch size. `progress` is called with each batch's image count.
    """
    pipe = OneStepPipeline.from_pretrained(student) if isinstance(student, (str, Path)) else student
    cfg = pipe.onestep
    size = int(cfg["resolution"]) // int(cfg["vae_scale_factor"])
    noise = torch.from_numpy(initial_latents(seed, len(prompts), int(cfg.get("latent_channels", LATENT_CHANNELS)), size, size))
    device = pipe.unet.device
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            emb = encode_text(pipe.tokenizer, pipe.text_encoder, prompts[i : i + batch_size]).to(device)
            x0 = one_step_x0(pipe.unet, noise[i : i + batch_size].to(device), emb, int(cfg["timestep"]), float(cfg["alpha_T"]), cfg.get("prediction_type", "epsilon"))
            out.append(decode_to_uint8(pipe.vae, x0, float(cfg["scaling_factor"])))
            if progress is not None:
                progress(len(out[-1]))
    return np.concatenate(out)


def write_student(out: Path, unet: Any, teacher: Any, guidance_scale: float, made_from: dict[str, Any], overwrite: bool = True,
                  adapter: Any = None) -> Path:  # fmt: skip
    """Write the student directory (contract in the module docstring), atomically, manifest last.

    `adapter` (a LoRA student's `swiftbrush.lora_student.StudentAdapter`, whose merged weights
    `unet` holds) goes to student_lora/, listed in the manifest like every other file.
    """
    from diffusers import StableDiffusionPipeline

    from swiftbrush_runtime.manifest import atomic_dir, write_manifest

    onestep = OneStep(
        timestep=STUDENT_TIMESTEP,
        alpha_T=float(teacher.scheduler.alphas_cumprod[STUDENT_TIMESTEP]),
        prediction_type=teacher.prediction_type,
        resolution=int(teacher.resolution),
        latent_channels=int(unet.config.in_channels),
        vae_scale_factor=int(teacher.vae_scale_factor),
        scaling_factor=float(teacher.vae.config.scaling_factor),
        extra={"teacher": str(teacher.source), "guidance_scale": float(guidance_scale)},
    )
    with atomic_dir(Path(out), overwrite=overwrite, kind="student") as tmp:
        pipe = StableDiffusionPipeline(
            vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer, unet=unet,
            scheduler=one_step_scheduler(teacher.scheduler.config), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipe.save_pretrained(tmp, safe_serialization=True)
        # The teacher's own tokenizer files (they include tokenizer.json, which the torch-free runtime reads).
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(Path(teacher.path) / "tokenizer", tmp / "tokenizer")
        if adapter is not None:
            adapter.save(tmp / STUDENT_LORA)
        write_onestep(tmp, onestep)
        write_manifest(tmp, "student", made_from=made_from, onestep=onestep.to_json(), versions=package_versions(VERSIONED))
    return Path(out)

