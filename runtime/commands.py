"""What `swiftbrush generate` does, as one importable function.

    swiftbrush generate --model out/onnx --prompt "a red circle" --prompt "" --seed 0 --out out/images
    swiftbrush generate --model out/engine --prompts prompts.txt --out out/images

Writes 0000.png, 0001.png, ... in prompt order (at least four digits, more for longer
lists), each batch as it finishes and each PNG through a temporary name and a rename,
so an interrupted run keeps every image already made and never a truncated one;
images.jsonl (one line per image: file, prompt, seed, index, backend, model), grid.png
(the first 64 images, at most a screenful) and a manifest.json of kind "images" that
marks the folder as generate's own output (`--overwrite` may replace it).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.manifest import OutputKind, atomic_dir, atomic_write, check_out_dir, make_dirs, manifest_kind, remove_if_empty, write_manifest

RECORD = "images.jsonl"
GRID = "grid.png"
GRID_MAX_IMAGES = 64  # grid.png shows the first 64 images: 8 x 8 tiles
GRID_MAX_SIZE = (1920, 1080)  # and fits one screen (pixels, width x height)


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
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def image_name(index: int, count: int) -> str:
    """0000.png ...: zero-padded to at least 4 digits, more when the list is longer, so names sort in prompt order."""
    return f"{index:0{max(4, len(str(count - 1)))}d}.png"


def _recorded_files(root: Path) -> set[str]:
    """The image files images.jsonl names (a line cut short by a kill is skipped)."""
    names = set()
    path = root / RECORD
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            names.add(entry["file"])
    return names


def _recognise_images(root: Path) -> str | None:
    """None for generate's own output: an "images" manifest, and only files it or images.jsonl names.

    An interrupted run's manifest lists no images yet; its images.jsonl does.
    """
    recorded = _recorded_files(root)
    temporary = re.compile(r"\.[^/]+\.png\.tmp-\d+")  # a PNG whose write a kill cut short
    return manifest_kind("images", allowed=lambda rel: rel in recorded or rel in (RECORD, GRID) or bool(temporary.fullmatch(rel))).recognise(root)


IMAGES = OutputKind("`generate` output", _recognise_images)


def grid_image(arrays: Sequence[Any], prompts: Sequence[str]) -> Any:
    """The first GRID_MAX_IMAGES images, 8 per row, each with its prompt under it, within GRID_MAX_SIZE.

    Small (toy) images are enlarged up to 256 px a side; large ones shrink to fit.
    """
    import numpy as np
    from PIL import Image

    from swiftbrush_runtime.images import prompt_grid

    tiles = list(arrays[:GRID_MAX_IMAGES])
    cols = min(8, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    caption = 28  # prompt_grid's two caption lines and gap
    fit = min((GRID_MAX_SIZE[0] // cols - 2) / w, (GRID_MAX_SIZE[1] // rows - 2 - caption) / h)
    scale = min(max(1, 256 // h), fit)
    if scale < 1:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.Resampling.LANCZOS)) for t in tiles]
    return prompt_grid(tiles, list(prompts[: len(tiles)]), columns=cols, scale=max(1, int(scale)), min_width=min(124, GRID_MAX_SIZE[0] // cols - 2))


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
    overwrite: bool = False,
    prompts_file: Path | str | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int | None = None,
) -> list[Path]:
    """Generate one image per prompt into `out`; returns the PNG paths (grid last).

    A new or empty `out` is written in place, batch by batch, so Ctrl-C keeps the images
    made so far (images.jsonl lists them; the manifest says complete: false). With
    `overwrite`, an earlier generate output is replaced: the new images go to a hidden
    sibling that is swapped in at the end, so an interrupted run leaves the earlier ones
    as they were. `progress(n)` is called after each batch with its number of images.
    """
    if not prompts:
        raise InvalidArgumentError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    target = check_out_dir(out, overwrite, kind=IMAGES, inputs=(("--model", model), ("--prompts", prompts_file)))
    if target.is_dir() and any(target.iterdir()):  # an earlier generate output, replaced at the end
        with atomic_dir(target, overwrite, kind=IMAGES) as tmp:
            return _generate_into(tmp, target, model, prompts, seed, backend, device, height, width, decoder, progress, batch_size)
    try:
        created = make_dirs(target)
        tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-", delete=True).close()
    except OSError as e:
        raise InvalidArgumentError(f"--out {out} is not writable ({e.strerror}); choose another directory") from None
    try:
        return _generate_into(target, target, model, prompts, seed, backend, device, height, width, decoder, progress, batch_size)
    except BaseException:
        remove_if_empty(created)  # a refused call leaves no empty folder behind; images already written stay
        raise


def _generate_into(folder: Path, final: Path, model: Path | str, prompts: Sequence[str], seed: int, backend: str, device: str | None,
                   height: int | None, width: int | None, decoder: str | None, progress: Callable[[int], None] | None,
                   batch_size: int | None) -> list[Path]:  # fmt: skip
    """Write the images, images.jsonl, grid.png and the manifest into `folder` (which becomes `final`)."""
    from PIL import Image

    from swiftbrush_runtime.generator import Generator

    options = {"decoder": decoder} if decoder else {}  # default: the directory's own decoder
    model_path = str(Path(model).resolve())
    paths: list[Path] = []
    shown: list[Any] = []
    with Generator.load(model, backend=backend, device=device, **options) as gen:
        batches = gen.generate_batches(list(prompts), seed=seed, height=height, width=width, batch_size=batch_size)
        first = next(batches)  # size and prompts checked: nothing is written for a refused call
        used = gen.backend.name
        fields = {"model": model_path, "backend": used, "seed": seed, "count": len(prompts)}
        write_manifest(folder, "images", complete=False, **fields)
        with open(folder / RECORD, "w", encoding="utf-8") as record:
            for start, arrays in itertools.chain([first], batches):
                for k, image in enumerate(arrays):
                    name = image_name(start + k, len(prompts))
                    _save_png(Image.fromarray(image), folder / name)
                    entry = {"file": name, "prompt": prompts[start + k], "seed": seed, "index": start + k, "backend": used, "model": model_path}
                    record.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    paths.append(final / name)
                    if len(shown) < GRID_MAX_IMAGES:
                        shown.append(image)
                record.flush()
                if progress is not None:
                    progress(len(arrays))
    _save_png(grid_image(shown, prompts), folder / GRID)
    paths.append(final / GRID)
    write_manifest(folder, "images", complete=True, **fields, grid_images=len(shown))
    return paths
