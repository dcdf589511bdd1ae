"""The toy world's judge: a small classifier of (colour, shape, background).

`alignment` is the share of images whose three classified attributes all match
their prompt (the toy analogue of CLIP score); `fd` is the Fréchet distance
between the classifier's penultimate features of generated images and of fresh
renders of the same prompts (the toy analogue of FID).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from swiftbrush.errors import InvalidArgumentError, InvalidModelError
from swiftbrush.toy.grammar import BACKGROUND_NAMES, COLOUR_NAMES, SHAPES, Caption, parse_caption
from swiftbrush.toy.render import RESOLUTION, render_batch
from swiftbrush_runtime.toy_assets import TOY_EVALUATOR_DIR as EVALUATOR_DIR

FEATURE_DIM = 128


class AttributeClassifier(nn.Module):
    """Four strided convolutions, global pooling, three linear heads."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(4 * w, feature_dim, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.colour = nn.Linear(feature_dim, len(COLOUR_NAMES))
        self.shape = nn.Linear(feature_dim, len(SHAPES))
        self.background = nn.Linear(feature_dim, len(BACKGROUND_NAMES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """images: Nx3xHxW in [-1, 1] -> (features, [colour, shape, background] logits)."""
        f = self.features(images)
        return f, [self.colour(f), self.shape(f), self.background(f)]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 -> float Nx3xHxW in [-1, 1], resized to the evaluator's 64x64."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (RESOLUTION, RESOLUTION):
        x = nn.functional.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True)
    return x


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a and b (as FID does)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # No `disp=`: SciPy 1.16 deprecated it and 1.18 removed it (a TypeError there).
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean))


@dataclass
class Scores:
    alignment: float
    fd: float
    per_attribute: dict[str, float]


class Evaluator:
    """Loads the committed classifier and scores images against their prompts."""

    def __init__(self, model: AttributeClassifier) -> None:
        self.model = model.eval()

    @classmethod
    def load(cls, path: Path = EVALUATOR_DIR) -> "Evaluator":
        from safetensors.torch import load_file

        weights, config = path / "model.safetensors", path / "config.json"
        if not weights.is_file() or not config.is_file():
            raise InvalidModelError(f"toy evaluator not found in {path}; run `python -m swiftbrush.toy.train_evaluator`")
        model = AttributeClassifier(**json.loads(config.read_text())["model"])
        try:
            model.load_state_dict(load_file(weights))
        except Exception as e:  # corrupted or foreign file: name it, do not trace back
            raise InvalidModelError(f"toy evaluator weights in {weights} do not load: {e}") from None
        return cls(model)

    @torch.no_grad()
    def classify(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(features Nx128, predicted labels Nx3) for uint8 NxHxWx3 images."""
        feats, labels = [], []
        for i in range(0, len(images), batch_size):
            f, logits = self.model(to_tensor(images[i : i + batch_size]))
            feats.append(f.numpy())
            labels.append(torch.stack([l.argmax(1) for l in logits], 1).numpy())
        return np.concatenate(feats), np.concatenate(labels)

    def score(self, images: np.ndarray, prompts: Sequence[str], reference_seed: int = 1234) -> Scores:
        """Alignment and FD of `images` (uint8 NxHxWx3) generated for `prompts`."""
        captions = _parse_all(prompts)
        feats, pred = self.classify(images)
        truth = np.array([c.labels for c in captions])
        hits = pred == truth
        reference = render_batch(captions, seed=reference_seed)
        ref_feats, _ = self.classify(reference)
        return Scores(
            alignment=float(hits.all(1).mean()),
            fd=frechet_distance(feats.astype(np.float64), ref_feats.astype(np.float64)),
            per_attribute={n: float(hits[:, i].mean()) for i, n in enumerate(("colour", "shape", "background"))},
        )

    def alignment(self, images: np.ndarray, prompts: Sequence[str]) -> float:
        truth = np.array([c.labels for c in _parse_all(prompts)])
        return float((self.classify(images)[1] == truth).all(1).mean())

    def fd(self, images: np.ndarray, prompts: Sequence[str], reference_seed: int = 1234) -> float:
        return self.score(images, prompts, reference_seed).fd


def _parse_all(prompts: Sequence[str]) -> list[Caption]:
    captions = []
    for p in prompts:
        c = parse_caption(p)
        if c is None:
            raise InvalidArgumentError(f"prompt {p!r} is not a toy caption; the toy evaluator scores only its grammar")
        captions.append(c)
    return captions
