"""The loss curve has labelled axis ticks; sample grids carry each image's prompt."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from swiftbrush.runlog import draw_curves, nice_ticks
from swiftbrush_runtime.images import prompt_grid


def _dark(image: np.ndarray) -> np.ndarray:
    return image.min(axis=-1) < 128


def test_loss_curve_has_tick_labels(tmp_path: Path):
    path = tmp_path / "loss.png"
    draw_curves({"vsd": [(s, 0.5 * math.exp(-s / 100)) for s in range(0, 261, 5)]}, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    h = image.shape[0]
    left_margin = _dark(image[:, :60])  # the plot box starts at x=70: only y tick labels live here
    rows_with_text = np.flatnonzero(left_margin.any(axis=1))
    assert len(rows_with_text) and np.ptp(rows_with_text) > h // 2, "no y tick labels spread along the axis"
    below = _dark(image[h - 38 : h - 24, :])  # between the box's bottom and the "step" label: the x tick labels
    columns = np.flatnonzero(below.any(axis=0))
    assert len(columns) and np.ptp(columns) > image.shape[1] // 2, "no x tick labels spread along the axis"


def testnice_ticks():
    assert nice_ticks(0, 260) == [0, 50, 100, 150, 200, 250]
    assert nice_ticks(10, 65000) == [20000, 40000, 60000]


def test_prompt_grid_labels_every_tile():
    tiles = [np.full((64, 64, 3), 255, np.uint8) for _ in range(3)]  # white tiles: any dark pixel is text
    prompts = ["a red circle on a blue background", "", "a green square on a white background"]
    grid = np.asarray(prompt_grid(tiles, prompts, columns=2))
    rows = 2
    cell_h = grid.shape[0] // rows
    cell_w = grid.shape[1] // 2
    for i in range(3):
        r, c = divmod(i, 2)
        caption = grid[r * cell_h + 64 : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w]
        assert _dark(caption).any(), f"tile {i} has no caption"
    empty_cell = grid[cell_h:, cell_w:]
    assert not _dark(empty_cell).any()
