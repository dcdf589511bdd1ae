"""What `swiftbrush generate` does, as one importable function.

    swiftbrush generate --model out/onnx --prompt "a red circle" --prompt "" --seed 0 --out out/images
    swiftbrush generate --model out/engine --prompts prompts.txt --out out/images

Writes 0000.png, 0001.png, ... in prompt order and grid.png, each PNG through a
temporary name and a rename, so an interrupted run never leaves a truncated image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from swiftbrush_runtime.errors import InvalidArgumentError

def read_prompts(path: Path | str) -> list[str]:
    """generate's --prompts: the one reader every command uses (swiftbrush_runtime.prompts)."""
    from swiftbrush_runtime.prompts import read_prompts as read_prompt_file

    return read_prompt_file(path).prompts


def prepare_out_dir(out: Path | str, flag: str = "--out") -> Path:
    """Create the directory `flag` names and check it is writable, before any model loads."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{flag} {out} is a file; pass a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {out} is not writable ({e.strerror}); choose another directory") from None
    return out


def _save_png(image: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_to_dir(
    model: Path | str,
    prompts: Sequence[str],
    out: Path | str,
    seed: int = 0,
    backend: str = "auto",
    device: str | None = None,
    height: int | None = None,
    width: int | None = None,
    decoder: str | None = None,
) -> list[Path]:
    """Generate one image per prompt into `out`; returns the PNG paths (grid last)."""
    from PIL import Image

    from swiftbrush_runtime.generator import Generator
    from swiftbrush_runtime.images import labelled_grid

    if not prompts:
        raise InvalidArgumentError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    created = not Path(out).exists()
    out = prepare_out_dir(out)
    options = {"decoder": decoder} if decoder else {}  # default: the directory's own decoder
    try:
        with Generator.load(model, backend=backend, device=device, **options) as gen:
            arrays = gen.generate(list(prompts), seed=seed, height=height, width=width)
    except BaseException:
        if created and not any(out.iterdir()):  # a refused call leaves no empty folder behind
            out.rmdir()
        raise
    paths = []
    for i, a in enumerate(arrays):
        p = out / f"{i:04d}.png"
        _save_png(Image.fromarray(a), p)
        paths.append(p)
    cols = min(8, len(arrays))
    rows = [list(arrays[i : i + cols]) for i in range(0, len(arrays), cols)]
    grid = labelled_grid(rows, scale=max(1, 256 // arrays.shape[1]))  # small toy images are enlarged
    _save_png(grid, out / "grid.png")
    paths.append(out / "grid.png")
    return paths
