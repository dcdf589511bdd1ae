"""Seeded 64x64 renderer for toy captions.

Each call draws position, size and a small colour jitter from the given numpy
generator, so one caption has a distribution of images and the same seed always
gives the same pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from swiftbrush.toy.grammar import BACKGROUNDS, SHAPE_COLOURS, Caption

RESOLUTION = 64
_SUPERSAMPLE = 4  # draw large, then downsample: anti-aliased edges the VAE can learn
_MIN_SIZE, _MAX_SIZE = 24, 40  # shape extent in pixels; large shapes keep the world learnable
_JITTER = 12  # +- per channel colour jitter


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    out = np.clip(np.asarray(rgb) + rng.integers(-_JITTER, _JITTER + 1, size=3), 0, 255)
    return tuple(int(v) for v in out)  # type: ignore[return-value]


def render(caption: Caption, rng: np.random.Generator) -> np.ndarray:
    """One image of `caption` as uint8 HxWx3, using draws from `rng`."""
    size = int(rng.integers(_MIN_SIZE, _MAX_SIZE + 1))
    half = size / 2
    cx = rng.uniform(half + 2, RESOLUTION - half - 2)
    cy = rng.uniform(half + 2, RESOLUTION - half - 2)
    fg = _jitter(SHAPE_COLOURS[caption.colour], rng)
    bg = _jitter(BACKGROUNDS[caption.background], rng)

    s = _SUPERSAMPLE
    canvas = Image.new("RGB", (RESOLUTION * s, RESOLUTION * s), bg)
    draw = ImageDraw.Draw(canvas)
    box = [(cx - half) * s, (cy - half) * s, (cx + half) * s, (cy + half) * s]
    if caption.shape == "circle":
        draw.ellipse(box, fill=fg)
    elif caption.shape == "square":
        draw.rectangle(box, fill=fg)
    elif caption.shape == "triangle":
        x0, y0, x1, y1 = box
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fg)
    else:  # the grammar is closed; a new shape must be drawn here
        raise AssertionError(f"no drawing for shape {caption.shape!r}")
    image = canvas.resize((RESOLUTION, RESOLUTION), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def render_batch(captions: list[Caption], seed: int) -> np.ndarray:
    """Images for `captions` as uint8 Nx64x64x3; one generator seeded once for the batch."""
    rng = np.random.default_rng(seed)
    return np.stack([render(c, rng) for c in captions])
