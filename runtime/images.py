"""Image helpers shared by `generate` and the demo: arrays to PIL, labelled grids.

Pillow and numpy only, so the slim runtime can write grids too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: np.ndarray, signed: bool = True) -> np.ndarray:
    """Float images in [-1, 1] (a decoder's output; [0, 1] with signed=False), NCHW or NHWC -> uint8 NHWC, rounding as diffusers does."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    return (np.clip(x / 2 + 0.5 if signed else x, 0.0, 1.0) * 255).round().astype(np.uint8)


def _tile(image: np.ndarray, width: int, height: int) -> Image.Image:
    """A uint8 HxWx3 image as a grid tile, enlarged without smoothing (toy images are 64 px)."""
    return Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST)


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
            grid.paste(_tile(img, tw, th), (left + j * (tw + 2), y))
    return grid


def prompt_grid(images: Sequence[np.ndarray], prompts: Sequence[str], columns: int = 8, scale: int = 1, min_width: int = 124) -> Image.Image:
    """uint8 HxWx3 images in rows of `columns`, each with its prompt under it (two lines, cut to fit).

    What generate's and distill's sample grids show: which prompt made which tile.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    font = ImageFont.load_default()
    h, w = images[0].shape[:2]
    th, tw = h * scale, w * scale
    cell_w = max(tw, min_width)  # a toy tile is narrower than its caption
    per_line = (cell_w - 4) // 6  # the default font's characters are about 6 px wide
    caption = 26
    cols = max(1, min(columns, len(images)))
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * (cell_w + 2), rows * (th + caption + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, (img, text) in enumerate(zip(images, prompts)):
        r, c = divmod(i, cols)
        x, y = c * (cell_w + 2), r * (th + caption + 2)
        grid.paste(_tile(img, tw, th), (x + (cell_w - tw) // 2, y))
        for k, line in enumerate(_two_lines(text or "(empty prompt)", per_line)):
            draw.text((x + 2, y + th + 2 + 12 * k), line, fill=(0, 0, 0), font=font)
    return grid


def _two_lines(text: str, width: int) -> list[str]:
    """Word-wrap into at most two lines of `width` characters, the second cut with an ellipsis."""
    lines: list[str] = [""]
    for word in text.split():
        if len(lines[-1]) + len(word) + (1 if lines[-1] else 0) <= width or not lines[-1]:
            lines[-1] = f"{lines[-1]} {word}".strip()
        elif len(lines) < 2:
            lines.append(word)
        else:
            lines[-1] = lines[-1][: width - 3] + "..."
            break
    return [line if len(line) <= width else line[: width - 3] + "..." for line in lines]
