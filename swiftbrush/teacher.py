"""Load an SD-family teacher from a local diffusers folder, a hub id, or `toy`.

    swiftbrush distill --teacher stabilityai/stable-diffusion-2-1-base ...
    swiftbrush distill --teacher ./my-sd15-folder ...
    swiftbrush eval --model toy-teacher

One function, `load_teacher`, resolves the source, checks that it is a latent
diffusion model with SD's structure predicting eps (SD 1.5, SD 2.1 base, SD-Turbo,
the toy teacher) or v (SD 2.x-768), and loads its components from safetensors only.
Everything else is refused by name, before any weights are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from swiftbrush.errors import InvalidModelError, OfflineError, UnsupportedModelError
from swiftbrush_runtime.errors import first_line
from swiftbrush_runtime.manifest import read_json
from swiftbrush_runtime.onestep import COMPONENTS, PREDICTION_TYPES, transformers_dtype
from swiftbrush_runtime.toy_assets import TOY_TEACHER_DIR, TOY_WARM_START_DIR

TOY_NAMES = ("toy", "toy-teacher")
TOY_WARM_START = "toy-warm-start"  # the toy's one-step start (a UNet folder), for --student-init
TOY_TEACHERS = {name: TOY_TEACHER_DIR for name in TOY_NAMES}
TOY_STUDENT_INITS = {**TOY_TEACHERS, TOY_WARM_START: TOY_WARM_START_DIR}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["model_index.json", *(f"{c}/*" for c in COMPONENTS)]
_SUPPORTED_PIPELINES = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "OnnxStableDiffusionPipeline"}


@dataclass
class Teacher:
    """The loaded components of an SD-family teacher and where they came from."""

    source: str  # what the user passed: a path, a hub id or "toy"
    path: Path  # the local diffusers folder the weights were read from
    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    scheduler: Any  # DDPMScheduler built from the teacher's own schedule (training noise)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    @property
    def resolution(self) -> int:
        """Native image size: latent sample size times the VAE's 8x (or other) scale."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def pipeline(self, scheduler: Any = None) -> Any:
        """A diffusers StableDiffusionPipeline over these components (no safety checker)."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler or self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def resolve_teacher_path(source: str | Path, what: str = "teacher", patterns: list[str] = _HUB_PATTERNS,
                         builtin: Mapping[str, Path] = TOY_TEACHERS, kind: str = "diffusers pipeline folder") -> Path:  # fmt: skip
    """A local folder for `source`: itself, a built-in toy asset (`builtin`: name -> folder), or a hub snapshot.

    Hub ids download only `patterns` (for a teacher the five SD components; safetensors, no pickles);
    when the hub cannot be reached the local Hugging Face cache is used, and if the model is
    not there either the error says so and how to fetch it. `what` names the source in errors,
    `kind` the folder it should be.
    """
    text = str(source)
    if text in builtin:
        return builtin[text]
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidModelError(f"{what} {text} is a file; pass a {kind}, a hub id or 'toy'")
        return path
    if not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise InvalidModelError(f"{what} {text} does not exist; pass a {kind}, a hub id or 'toy'")
    return _download(text, what, patterns)


def _download(repo_id: str, what: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = dict(allow_patterns=patterns, ignore_patterns=["*.bin", "*.ckpt", "*.pt", "*.msgpack"])
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        try:
            return Path(snapshot_download(repo_id, **kwargs))
        except Exception:  # no network, unknown repo, gated: fall back to the cache below
            pass
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except Exception:
        raise OfflineError(
            f"{what} {repo_id} is not in the local Hugging Face cache and the hub cannot be reached; "
            f"on a connected machine run `huggingface-cli download {repo_id}` or pass a local diffusers folder"
        ) from None


def check_teacher_folder(path: Path) -> dict[str, Any]:
    """Refuse, by name, anything that is not an SD-family eps- or v-prediction pipeline folder.

    Reads only JSON configs, so a wrong folder is refused before any weights load.
    Returns the scheduler config.
    """
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise InvalidModelError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    index = read_json(index_file)
    name = index.get("_class_name", "?")
    if "text_encoder_2" in index or "XL" in str(name):
        raise UnsupportedModelError(f"{path} is an SDXL pipeline ({name}); supported teachers are SD 1.5, SD 2.1 base and SD-Turbo")
    if name not in _SUPPORTED_PIPELINES:
        raise UnsupportedModelError(f"{path} holds a {name}; supported teachers are StableDiffusionPipeline folders (SD 1.5, SD 2.1 base, SD-Turbo)")
    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise InvalidModelError(f"{path} lacks the component folder(s) {', '.join(missing)}")
    sched = read_json(path / "scheduler" / "scheduler_config.json")
    unet = read_json(path / "unet" / "config.json")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UnsupportedModelError(
            f"{path} predicts {prediction!r}; supported teachers predict eps (SD 1.5, SD 2.1 base, SD-Turbo) or v (SD 2.x-768)"
        )
    if sched.get("rescale_betas_zero_snr"):
        raise UnsupportedModelError(f"{path} uses a zero-terminal-SNR schedule (alphas_cumprod[999] = 0), which the one-step math at T = 999 cannot invert")
    if unet.get("_class_name") != "UNet2DConditionModel" or unet.get("in_channels") != 4:
        raise UnsupportedModelError(f"{path}/unet is not a 4-channel UNet2DConditionModel (found {unet.get('_class_name')}, in_channels {unet.get('in_channels')})")
    if sched.get("num_train_timesteps", 1000) != 1000:
        raise UnsupportedModelError(f"{path} trains with {sched.get('num_train_timesteps')} timesteps; SD-family teachers use 1000")
    return sched


def load_teacher(source: str | Path, *, device: str = "cpu", dtype: Any = None, variant: str | None = None) -> Teacher:
    """Resolve, check and load a teacher; every failure is a typed `InvalidModelError`."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = resolve_teacher_path(source)
    sched_config = check_teacher_folder(path)
    dtype = dtype or torch.float32
    common = dict(torch_dtype=dtype, use_safetensors=True, variant=variant)
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **common)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32, use_safetensors=True, variant=variant)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", use_safetensors=True, variant=variant, **transformers_dtype(dtype))
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    except Exception as e:  # corrupted safetensors, truncated file, wrong shapes: one line, not a traceback
        raise InvalidModelError(f"teacher weights in {path} do not load ({first_line(e)}); re-download or re-export the folder") from None
    scheduler = DDPMScheduler.from_config(sched_config)
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise UnsupportedModelError(
            f"{path}: text encoder width {text_encoder.config.hidden_size} does not match the UNet's cross-attention width {unet.config.cross_attention_dim}"
        )
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return Teacher(str(source), path, unet, vae, text_encoder, tokenizer, scheduler)


def load_student_init(source: str | Path, teacher: Teacher) -> Any:
    """The UNet a student starts from instead of a copy of the teacher's (SwiftBrush v2: SD-Turbo's for SD 2.1 base).

    `source` is a pipeline folder (a student folder too), a hub id (only its unet/ and scheduler/
    are fetched), `toy`, or a bare UNet folder (config.json + weights). It must be the teacher's
    UNet architecture and predict what the teacher predicts: the VSD gradient and the one-step
    map are written in the teacher's parameterisation. Safetensors only.
    """
    import torch
    from diffusers import UNet2DConditionModel

    what = "--student-init"
    path = resolve_teacher_path(source, what, ["model_index.json", "unet/*", "scheduler/*"], builtin=TOY_STUDENT_INITS)
    if (path / "unet" / "model.onnx").is_file():
        raise InvalidModelError(f"{what} {source} is an ONNX export; pass the student or pipeline folder it was made from")
    if (path / "unet" / "config.json").is_file():
        unet_dir = path / "unet"
    elif (path / "config.json").is_file() and read_json(path / "config.json").get("_class_name") == "UNet2DConditionModel":
        unet_dir = path  # a bare UNet folder: it has no scheduler to say what it predicts
    else:
        raise InvalidModelError(f"{what} {source}: {path} holds neither a unet/ folder nor a UNet2DConditionModel config.json")
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.is_file():
        prediction = read_json(sched_file).get("prediction_type", "epsilon")
        if prediction != teacher.prediction_type:
            raise UnsupportedModelError(f"{what} {source} predicts {prediction!r} but the teacher predicts {teacher.prediction_type!r}; start from a model of the teacher's kind")
    try:
        unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch.float32, use_safetensors=True)
    except Exception as e:  # no safetensors, a truncated file: one line
        raise InvalidModelError(f"{what} weights in {unet_dir} do not load ({first_line(e)})") from None
    # Same parameter names and shapes, and the same latent size: compute-only settings (upcast_attention,
    # dropout) may differ, the student keeps its own.
    mine = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in teacher.unet.state_dict().items()}
    differ = [f"{k} {mine.get(k)} vs the teacher's {theirs.get(k)}" for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if unet.config.sample_size != teacher.unet.config.sample_size:
        differ.insert(0, f"sample_size {unet.config.sample_size} vs the teacher's {teacher.unet.config.sample_size}")
    if differ:
        more = f" and {len(differ) - 2} more" if len(differ) > 2 else ""
        raise UnsupportedModelError(f"{what} {source} is not the teacher's UNet architecture ({'; '.join(differ[:2])}{more}); start from a fine-tune of the teacher")
    return unet


def teacher_fingerprint(teacher: Any) -> str:
    """The teacher's identity: UNet and scheduler configs and the sizes of its weight files."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(teacher.unet.config), sort_keys=True, default=str).encode())
    h.update(json.dumps(dict(teacher.scheduler.config), sort_keys=True, default=str).encode())
    for f in sorted(Path(teacher.path).glob("*/*.safetensors")):
        h.update(f"{f.parent.name}/{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]
