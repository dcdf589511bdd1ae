"""The frozen models behind SwiftBrush v2's clamped CLIP loss: a CLIP and a tiny decoder.

    guidance = ClipGuidance.load("openai/clip-vit-base-patch32", "madebyollin/taesd", device="cuda")  # or ("toy", "toy")
    text, truncated = guidance.encode_prompts(prompts)
    loss, logs = clamped_clip_loss(guidance.image_embeddings(x0), text)   # x0: one_step_x0's latents

`ClipGuidance.load` resolves and checks both sources (local folder, hub id or `toy`), reading
only JSON before any weights, and loads them from safetensors only. `encode_prompts` gives the
text targets with the CLIP's own tokenizer; `image_embeddings` decodes the student's latents
with the tiny decoder (as the runtime's `--decoder taesd` does), applies CLIP's preprocessing
as differentiable tensor ops, and embeds: the student's gradient flows through all of it.
`swiftbrush.losses.clamped_clip_loss` turns the two into the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from swiftbrush.errors import InvalidModelError
from swiftbrush.teacher import resolve_teacher_path
from swiftbrush_runtime.errors import first_line
from swiftbrush_runtime.manifest import read_json
from swiftbrush_runtime.onestep import transformers_dtype
from swiftbrush_runtime.toy_assets import TOY_CLIP_DIR, TOY_TAESD_DIR

TOY = "toy"
# What a CLIP repo needs: config, safetensors weights, the tokenizer and the image processor; never pickles.
CLIP_PATTERNS = [
    "config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
    "special_tokens_map.json", "preprocessor_config.json",
]  # fmt: skip
DECODER_PATTERNS = ["config.json", "*.safetensors"]
_TOKENIZER_FILES = ("vocab.json", "merges.txt")  # what CLIPTokenizer reads


def check_clip_folder(path: Path, what: str = "CLIP model") -> None:
    """Refuse, from its JSON and file names alone, a folder that is not a complete transformers CLIPModel."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidModelError(f"{what} {path} has no config.json; pass a transformers CLIPModel folder or hub id (e.g. openai/clip-vit-base-patch32) or 'toy'")
    config = read_json(config_file)
    kind, architectures = config.get("model_type"), config.get("architectures") or []
    if kind != "clip" or (architectures and "CLIPModel" not in architectures):
        raise InvalidModelError(
            f"{what} {path} is not a CLIPModel (model_type {kind!r}, architectures {architectures}); "
            "pass a transformers CLIPModel folder with both towers (e.g. openai/clip-vit-base-patch32) or 'toy'"
        )
    missing = [name for name in _TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise InvalidModelError(f"{what} {path} has no tokenizer ({', '.join(missing)} missing); the text side must use the CLIP's own tokenizer")
    if not (path / "preprocessor_config.json").is_file():
        raise InvalidModelError(f"{what} {path} has no preprocessor_config.json; CLIP's image size, mean and std come from it")


def check_decoder_folder(path: Path, what: str = "tiny decoder") -> None:
    """Refuse a folder that is not a diffusers AutoencoderTiny (TAESD), from its config alone."""
    config_file = path / "config.json"
    name = read_json(config_file).get("_class_name") if config_file.is_file() else None
    if name != "AutoencoderTiny":
        found = f"a {name}" if name else "no diffusers config.json"
        raise InvalidModelError(f"{what} {path} is not an AutoencoderTiny (found {found}); pass a TAESD folder or hub id (madebyollin/taesd for SD 1.x/2.x) or 'toy'")


@dataclass
class ImagePreprocessing:
    """CLIP's image preprocessing as read from a CLIPImageProcessor config."""

    resize: int | tuple[int, int] | None  # shortest edge, or exact (height, width); None: no resize
    crop: tuple[int, int] | None  # centre crop (height, width); None: no crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, processor: Any) -> "ImagePreprocessing":
        size = processor.size if processor.do_resize else None
        resize: int | tuple[int, int] | None = None
        if size:
            resize = int(size["shortest_edge"]) if "shortest_edge" in size else (int(size["height"]), int(size["width"]))
        crop_size = processor.crop_size if getattr(processor, "do_center_crop", False) else None
        crop = (int(crop_size["height"]), int(crop_size["width"])) if crop_size else None
        mean = tuple(processor.image_mean) if processor.do_normalize else (0.0, 0.0, 0.0)
        std = tuple(processor.image_std) if processor.do_normalize else (1.0, 1.0, 1.0)
        return cls(resize, crop, mean, std)  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Nx3xHxW images in [-1, 1] -> CLIP pixel values, differentiably (what the processor does to uint8 pixels)."""
        x = (images.float() / 2 + 0.5).clamp(0, 1)  # the processor sees 0..255 pixels: out-of-range values saturate
        h, w = x.shape[-2:]
        if isinstance(self.resize, int):  # shortest edge to `resize`, the long one scaled and truncated as transformers does
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(self.resize * long / short)
            size = (self.resize, new_long) if h <= w else (new_long, self.resize)
        else:
            size = self.resize or (h, w)
        if tuple(size) != (h, w):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:  # the processor pads; a decoder's images are never that small
                raise InvalidModelError(f"the CLIP crop {ch}x{cw} is larger than the {h}x{w} image after resizing")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class ClipGuidance:
    """A frozen CLIP (both towers, its tokenizer and preprocessing) and a frozen tiny decoder.

    Everything is in eval mode without parameter gradients; gradients reach only the
    latents given to `image_embeddings`.
    """

    def __init__(self, clip: Any, tokenizer: Any, preprocess: ImagePreprocessing, decoder: Any, clip_path: Path, decoder_path: Path) -> None:
        self.clip, self.tokenizer, self.preprocess, self.decoder = clip, tokenizer, preprocess, decoder
        self.clip_path, self.decoder_path = clip_path, decoder_path
        for module in (clip, decoder):
            module.eval().requires_grad_(False)
        # The text tower's positions bound the prompt length, whatever the tokenizer's own limit says.
        self.max_length = min(int(tokenizer.model_max_length), int(clip.config.text_config.max_position_embeddings))

    @classmethod
    def load(cls, clip_source: str, decoder_source: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "ClipGuidance":
        """Resolve, check and load both models; every failure is one line of `InvalidModelError`."""
        from diffusers import AutoencoderTiny
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        clip_path = resolve_teacher_path(clip_source, "CLIP model", CLIP_PATTERNS, builtin={TOY: TOY_CLIP_DIR}, kind="transformers CLIPModel folder")
        check_clip_folder(clip_path)
        decoder_path = resolve_teacher_path(decoder_source, "tiny decoder", DECODER_PATTERNS, builtin={TOY: TOY_TAESD_DIR}, kind="diffusers AutoencoderTiny folder")
        check_decoder_folder(decoder_path)
        try:
            tokenizer = CLIPTokenizer.from_pretrained(clip_path)
            processor = CLIPImageProcessor.from_pretrained(clip_path)
        except Exception as e:
            raise InvalidModelError(f"CLIP model {clip_path}: tokenizer or preprocessor config does not load ({first_line(e)})") from None
        try:
            clip = CLIPModel.from_pretrained(clip_path, use_safetensors=True, **transformers_dtype(dtype))
        except Exception as e:  # no safetensors, a truncated file, wrong shapes
            raise InvalidModelError(f"CLIP weights in {clip_path} do not load ({first_line(e)}); the folder needs model.safetensors") from None
        try:
            decoder = AutoencoderTiny.from_pretrained(decoder_path, torch_dtype=dtype, use_safetensors=True)
        except Exception as e:
            raise InvalidModelError(f"tiny decoder weights in {decoder_path} do not load ({first_line(e)})") from None
        if len(tokenizer) > clip.config.text_config.vocab_size:
            raise InvalidModelError(f"CLIP model {clip_path}: its tokenizer has {len(tokenizer)} tokens but the text tower {clip.config.text_config.vocab_size}")
        decoder.encoder = None  # only decoding is needed: the encoder is dead weight
        return cls(clip.to(device), tokenizer, ImagePreprocessing.from_processor(processor), decoder.to(device), clip_path, decoder_path)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def count_truncated(self, prompts: Sequence[str], chunk: int = 4096) -> int:
        """How many prompts are longer than CLIP's context and get cut (tokenizer only: cheap for a whole prompt set)."""
        prompts = list(prompts)
        return sum(len(ids) > self.max_length for i in range(0, len(prompts), chunk) for ids in self.tokenizer(prompts[i : i + chunk], truncation=False).input_ids)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, int]:
        """Unit-norm CLIP text embeddings (N x D, float32, no grad), and how many prompts were truncated.

        Prompts longer than CLIP's context (77 tokens for OpenAI's CLIPs) are cut, as every
        SD pipeline cuts them, and counted so the caller can report it.
        """
        prompts = list(prompts)
        truncated = self.count_truncated(prompts)
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt").input_ids
        features = self.clip.get_text_features(input_ids=ids.to(self.device))
        return F.normalize(features.float(), dim=-1), truncated

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Student latents in UNet space (x0 of `one_step_x0`) -> images in about [-1, 1] through the tiny decoder.

        TAESD reads the scaled latent the UNet works in (the KL VAE's latent x scaling_factor),
        so x0 goes in as it is: the runtime's `--decoder taesd` path decodes the same tensor.
        """
        return self.decoder.decode(x0.to(self.decoder.dtype)).sample

    def image_embeddings(self, x0: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLIP image embeddings (B x D, float32) of the decoded latents, differentiable w.r.t. x0."""
        pixels = self.preprocess(self.decode(x0))
        features = self.clip.get_image_features(pixel_values=pixels.to(self.clip.dtype))
        return F.normalize(features.float(), dim=-1)
