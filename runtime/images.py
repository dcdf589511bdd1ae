"""Image helpers shared by `generate` and the demo: arrays to PIL, labelled grids.

Pillow and numpy only, so the slim runtime can write grids too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [-1, 1] (NCHW or NHWC) -> uint8 NHWC, rounding as diffusers does."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    return (np.clip(x / 2 + 0.5, 0.0, 1.0) * 255).round().astype(np.uint8)


def labelled_grid(
    rows: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    scale: int = 2,
    label_width: int = 150,
) -> Image.Image:
    """A grid of uint8 HxWx3 images, one list per row, with optional text labels.

    Column labels wrap onto two lines: toy captions are longer than a tile.
    """
    font = ImageFont.load_default()
    h, w = rows[0][0].shape[:2]
    th, tw = h * scale, w * scale
    n_cols = max(len(r) for r in rows)
    left = label_width if row_labels else 0
    top = 28 if col_labels else 0
    grid = Image.new("RGB", (left + n_cols * (tw + 2), top + len(rows) * (th + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, text in enumerate(col_labels):
        words = text.split()
        lines = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
        for k, line in enumerate(lines):
            draw.text((left + j * (tw + 2) + 2, 2 + 12 * k), line, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        y = top + i * (th + 2)
        if row_labels:
            draw.text((4, y + th // 2 - 6), row_labels[i], fill=(0, 0, 0), font=font)
        for j, img in enumerate(row):
            tile = Image.fromarray(img).resize((tw, th), Image.Resampling.NEAREST)
            grid.paste(tile, (left + j * (tw + 2), y))
    return grid
