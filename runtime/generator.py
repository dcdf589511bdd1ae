"""The one-step pipeline users call: prompts + seed -> images, on any backend.

    from swiftbrush_runtime import Generator
    gen = Generator.load("out/onnx")                       # backend from the directory kind
    images = gen(["a red circle on a blue background"], seed=0)  # list of PIL images
    arrays = gen.generate(["..."], seed=0)                  # uint8 [B, H, W, 3], no PIL
    for start, batch in gen.generate_batches(prompts, seed=0): ...  # the same images, batch by batch

The noise is `numpy.random.default_rng(seed).standard_normal((B, C, h, w))` for the
whole prompt list, so every backend starts from the same latents and a prompt's
image does not depend on how the list is split into batches. Calls are serialised
by a lock (backends hold one stream / session set), so one Generator is safe to
share between threads; prompt embeddings are cached (LRU).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from swiftbrush_runtime import backends as _backends
from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.manifest import read_manifest
from swiftbrush_runtime.onestep import MAX_SIDE, ONESTEP, read_onestep
from swiftbrush_runtime.tokenizer import ClipTokenizer

logger = logging.getLogger(__name__)

KINDS = ("onnx", "engine", "student")
BACKEND_CHOICES = ("auto", *_backends.BACKENDS)
DEFAULT_BATCH = 16  # images per generate_batches() step on a backend with no batch limit (torch)


def initial_latents(seed: int | np.random.Generator, batch: int, channels: int, h: int, w: int) -> np.ndarray:
    """The initial noise of a one-step call: float32 standard normal [batch, channels, h, w] from numpy.

    Drawn with numpy, not torch, so every backend, the training sampler and the
    evaluation start from the same latents for a seed; pass a Generator to draw a list
    batch by batch from one stream.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.standard_normal((batch, channels, h, w), dtype=np.float32)


class Generator:
    """Prompts -> images with one UNet call; thread-safe; see the module docstring."""

    def __init__(self, path: Path, manifest: dict[str, Any], backend: _backends.Backend, cache_size: int = 256) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.backend = backend
        onestep = read_onestep(self.path / ONESTEP)
        self.onestep = onestep
        self.height = int(manifest.get("height", onestep.resolution))
        self.width = int(manifest.get("width", onestep.resolution))
        self.latent_channels = onestep.latent_channels
        self.vae_scale_factor = onestep.vae_scale_factor
        self.tokenizer = ClipTokenizer(self.path / "tokenizer")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # re-entrant: generate() holds it and calls encode()
        self.last_timings: dict[str, float] = {}  # ms per stage of the last call
        self.last_truncated: list[int] = []

    @classmethod
    def load(
        cls,
        path: Path | str,
        backend: str = "auto",
        device: str | None = None,
        verify: bool = True,
        cache_size: int = 256,
        **options: Any,
    ) -> "Generator":
        """Open an onnx, engine or student directory; the backend defaults to the kind's own.

        `options` go to the backend: `providers`/`threads` (onnxruntime), `compile`
        (torch). `verify` re-hashes every file against the manifest.
        """
        path = Path(path)
        if backend not in BACKEND_CHOICES:
            raise InvalidArgumentError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
        manifest = read_manifest(path, KINDS, verify=verify)
        chosen = _backends.backend_for(manifest, backend, path)
        return cls(path, manifest, _backends.create(chosen, path, manifest, device=device, **options), cache_size=cache_size)

    # --- the pipeline ----------------------------------------------------------

    def resolution_range(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """((min height, min width), (max height, max width)) in pixels the graphs take.

        A static export takes only its own size; a dynamic one the range it was exported
        (or its engines built) for; None for a student directory (torch takes any size).
        """
        graphs = self.manifest.get("graphs") or self.manifest.get("engines")
        if not graphs:
            return None
        sample = graphs["unet"]["inputs"]["sample"]
        f = self.vae_scale_factor
        return (sample["min"][2] * f, sample["min"][3] * f), (sample["max"][2] * f, sample["max"][3] * f)

    def check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """The (height, width) of a call: the export's own by default; else validated against what the graphs take."""
        h = self.height if height is None else height
        w = self.width if width is None else width
        f = self.vae_scale_factor
        for name, v in (("height", h), ("width", w)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0 or v % f:
                raise InvalidArgumentError(f"{name} must be a positive multiple of {f}, got {v!r}")
            if v > MAX_SIDE:  # the largest export too; a student directory would try to allocate it
                raise InvalidArgumentError(f"{name} must be at most {MAX_SIDE}, got {v}")
        rng = self.resolution_range()
        if rng is not None:
            (h0, w0), (h1, w1) = rng
            if not (h0 <= h <= h1 and w0 <= w <= w1):
                takes = f"only {h0}x{w0}" if (h0, w0) == (h1, w1) else f"{h0}x{w0} to {h1}x{w1}"
                raise InvalidArgumentError(
                    f"{self.path} takes {takes} (height x width), not {h}x{w}; "
                    f"re-export with --height {h} --width {w}, or --dynamic for a range"
                )
        return int(h), int(w)

    def noise(self, batch: int, seed: int, height: int | None = None, width: int | None = None) -> np.ndarray:
        return self._draw_noise(np.random.default_rng(seed), batch, height, width)

    def _draw_noise(self, rng: np.random.Generator, batch: int, height: int | None, width: int | None) -> np.ndarray:
        h = (height or self.height) // self.vae_scale_factor
        w = (width or self.width) // self.vae_scale_factor
        return initial_latents(rng, batch, self.latent_channels, h, w)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """Text embeddings [B, 77, D], from the cache where the prompt was seen before."""
        prompts = _check_prompts(prompts)
        with self._lock:
            fresh: dict[str, np.ndarray] = {}
            missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
            if missing:
                ids, dropped = self.tokenizer.encode(missing)
                self.last_truncated = dropped
                fresh = dict(zip(missing, self.run_batched(self.backend.encode, ids)))
            out = np.stack([fresh[p] if p in fresh else self._cache[p] for p in prompts])
            for p in prompts:  # most recently used last; the oldest are evicted first
                if p in fresh:
                    self._cache[p] = fresh[p]
                self._cache.move_to_end(p)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out

    def generate(
        self, prompts: Sequence[str] | str, seed: int = 0, output: str = "uint8", height: int | None = None, width: int | None = None
    ) -> np.ndarray:
        """uint8 [B, H, W, 3] images (output="uint8") or float [B, 3, H, W] in [-1, 1] ("float").

        `height`/`width` default to the export's size; a dynamic export (or a student
        directory) takes others within its range (`resolution_range()`).
        """
        prompts = _check_prompts(prompts)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
        if output not in ("uint8", "float"):
            raise InvalidArgumentError(f"output must be 'uint8' or 'float', got {output!r}")
        height, width = self.check_size(height, width)
        with self._lock:
            t0 = time.perf_counter()
            emb = self.encode(prompts)
            t1 = time.perf_counter()
            z = self.noise(len(prompts), int(seed), height, width)
            images = self.run_batched(self.backend.run_uint8 if output == "uint8" else self.backend.run, z, emb)
            self.backend.synchronize()
            t2 = time.perf_counter()
            self.last_timings = {"text_encoder_ms": (t1 - t0) * 1e3, "image_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3}
        return images

    def generate_batches(
        self, prompts: Sequence[str] | str, seed: int = 0, height: int | None = None, width: int | None = None, batch_size: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index of its first prompt, uint8 [b, H, W, 3]) batch by batch: the images of generate().

        For long prompt lists: a caller writes each batch as it comes, so memory stays
        one batch and an interruption keeps what was made. The noise is drawn from one
        numpy stream in order, which fills the same values as generate()'s single draw.
        `batch_size` defaults to the backend's largest batch (else DEFAULT_BATCH).
        """
        prompts = _check_prompts(prompts)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1):
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        height, width = self.check_size(height, width)
        rng = np.random.default_rng(int(seed))
        step = int(batch_size or self.backend.max_batch or DEFAULT_BATCH)
        for start in range(0, len(prompts), step):
            chunk = prompts[start : start + step]
            with self._lock:
                emb = self.encode(chunk)
                z = self._draw_noise(rng, len(chunk), height, width)
                images = self.run_batched(self.backend.run_uint8, z, emb)
                self.backend.synchronize()
            yield start, images

    def __call__(self, prompts: Sequence[str] | str, seed: int = 0, height: int | None = None, width: int | None = None) -> list[Any]:
        """PIL images, one per prompt, in order."""
        from PIL import Image

        return [Image.fromarray(a) for a in self.generate(prompts, seed, height=height, width=width)]

    def run_batched(self, fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
        """Call fn on chunks of at most max_batch rows, padding to a static batch."""
        n = arrays[0].shape[0]
        step = self.backend.max_batch or n
        outs = []
        for i in range(0, n, step):
            chunk = [a[i : i + step] for a in arrays]
            m = chunk[0].shape[0]
            static = self.backend.static_batch
            if static and m < static:  # a static graph takes exactly its batch: pad by repeating
                chunk = [np.concatenate([c, np.repeat(c[-1:], static - m, axis=0)]) for c in chunk]
            outs.append(fn(*chunk)[:m])
        return np.concatenate(outs)

    def info(self) -> dict[str, Any]:
        return {**self.backend.info(), "model": str(self.path), "kind": self.manifest["kind"], "height": self.height, "width": self.width}

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_prompts(prompts: Sequence[str] | str) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Iterable):
        raise InvalidArgumentError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise InvalidArgumentError("no prompts given; pass at least one (an empty string is a valid, unconditional prompt)")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise InvalidArgumentError(f"prompts must be strings, got {bad[0]!r}")
    return prompts
