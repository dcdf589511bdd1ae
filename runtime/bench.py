"""What `swiftbrush bench` does: ms per image, end to end and per component.

    swiftbrush bench --model out/onnx --batch 1 --iters 20 --warmup 3 --json bench.json
    swiftbrush bench --model out/onnx --compare onnxruntime,torch

Each backend runs `warmup` untimed iterations, then `iters` timed ones of: the text
encoder alone, the UNet alone, the decoder alone, and the whole pipeline (prompt
embedding cache off, so the text encoder runs every time). Reported: p50 / p90 ms
per image (batch time / batch), images per second, peak memory, device, versions.
`--backend` (or auto) runs the folder given, by the rule `generate` uses
(`backends.backend_for`): a backend that reads another kind of folder is refused.
`--compare` runs several backends in one process on the same inputs; each runs the
folder of its kind that `--model` is or was made from, found through the manifests
(an engine directory records its ONNX directory, an ONNX directory its student),
and every row says which folder it ran.
"""

from __future__ import annotations

import gc
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from swiftbrush_runtime import backends as _backends
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.manifest import package_versions, read_manifest

KINDS = ("onnx", "engine", "student")
PROMPT = "a red circle on a blue background"


def model_dir_for(backend: str, path: Path, follow_sources: bool = False) -> Path:
    """The directory `backend` runs: `path` itself (generate's rule), or with `follow_sources` its source of the right kind."""
    path = Path(path)
    manifest = read_manifest(path, KINDS, verify=False)
    if not follow_sources:
        _backends.backend_for(manifest, backend, path)
        return path
    want = _backends.KIND_OF[backend]
    chain = [path]
    while manifest["kind"] != want:
        source = manifest.get("source", {})
        nxt = source.get("onnx") if manifest["kind"] == "engine" else source.get("student") if manifest["kind"] == "onnx" else None
        if not nxt or not Path(nxt).is_dir():
            made_from = " <- ".join(f"{p} ({read_manifest(p, KINDS, verify=False)['kind']})" for p in chain)
            raise InvalidModelError(
                f"--compare {backend}: the {backend} backend runs {_backends.A_KIND[want]} directory, and none is among {made_from}; "
                f"bench it on its own with --model {want.upper()}_DIR"
            )
        path = Path(nxt)
        chain.append(path)
        manifest = read_manifest(path, KINDS, verify=False)
    return path


def _timed(fn: Callable[[], Any], sync: Callable[[], None], iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _stats(ms: Sequence[float], batch: int) -> dict[str, float]:
    per = np.asarray(ms) / batch
    return {"p50_ms": round(float(np.percentile(per, 50)), 3), "p90_ms": round(float(np.percentile(per, 90)), 3)}


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _versions() -> dict[str, str]:
    """Python, numpy and the backend packages this process loaded: what the timed run used."""
    loaded = [name for name in ("onnxruntime", "torch", "tensorrt", "diffusers") if name in sys.modules]
    return {"python": platform.python_version(), **package_versions(["numpy", *loaded])}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_backend(
    model: Path, backend: str, batch: int, iters: int, warmup: int, device: str | None = None, compile: bool = False,
    decoder: str | None = None, follow_sources: bool = False,
) -> dict[str, Any]:
    from swiftbrush_runtime.generator import Generator

    path = model_dir_for(backend, model, follow_sources)
    options: dict[str, Any] = {"compile": True} if compile and backend == "torch" else {}  # the others have nothing to compile
    if decoder:
        options["decoder"] = decoder  # default: the directory's own
    gen = Generator.load(path, backend=backend, device=device, cache_size=0, **options)
    try:
        b = gen.backend
        fix = "rebuild the engines with --batch" if backend == "tensorrt" else "re-export with --batch"
        if b.max_batch is not None and batch > b.max_batch:
            raise InvalidArgumentError(f"--batch {batch} is above the largest batch of {path} ({b.max_batch}); {fix} {batch}")
        if b.static_batch is not None and batch != b.static_batch:  # a padded batch would time work never asked for
            raise InvalidArgumentError(f"{path} has static batch {b.static_batch}: bench it with --batch {b.static_batch}, or {fix} {batch}")
        prompts = [PROMPT] * batch
        ids, _ = gen.tokenizer.encode(prompts)
        z = gen.noise(batch, 0)
        emb = gen.run_batched(b.encode, ids)
        latent = gen.run_batched(b.denoise, z, emb)
        sync = b.synchronize
        parts = {
            "text_encoder": _stats(_timed(lambda: gen.run_batched(b.encode, ids), sync, iters, warmup), batch),
            "unet": _stats(_timed(lambda: gen.run_batched(b.denoise, z, emb), sync, iters, warmup), batch),
            "decoder": _stats(_timed(lambda: gen.run_batched(b.decode, latent), sync, iters, warmup), batch),
        }
        e2e = _timed(lambda: gen.generate(prompts, seed=0), sync, iters, warmup)
        info = gen.info()
        device_name = info.get("gpu") or (cpu_name() if info.get("device") == "cpu" else info.get("device"))
        result = {
            "backend": backend,
            "model": str(path),
            "device": info.get("device"),
            "device_name": device_name,
            "batch": batch,
            "iters": iters,
            "warmup": warmup,
            "height": gen.height,
            "width": gen.width,
            "end_to_end": _stats(e2e, batch),
            "images_per_second": round(batch * 1e3 / float(np.mean(e2e)), 2),
            "components": parts,
            "peak_rss_mb": _peak_rss_mb(),
            "backend_info": info,
            "versions": _versions(),
        }
        mem = getattr(b, "memory", None)
        if callable(mem):
            result["device_memory"] = mem()
        return result
    finally:
        gen.close()
        gc.collect()


def run_bench(
    model: Path | str,
    backends: Sequence[str] = ("auto",),
    batch: int = 1,
    iters: int = 20,
    warmup: int = 3,
    device: str | None = None,
    compile: bool = False,
    decoder: str | None = None,
    follow_sources: bool = False,
) -> dict[str, Any]:
    """Benchmark one or several backends on the same model; returns the JSON report.

    `compile` runs the torch backend through torch.compile (first call pays the compile; warm-up excludes it).
    `follow_sources` (what --compare does) lets a backend run the folder `model` was made from.
    """
    model = Path(model)
    if batch < 1:
        raise InvalidArgumentError(f"--batch must be at least 1, got {batch}")
    if iters < 1 or warmup < 0:
        raise InvalidArgumentError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    names = []
    for name in backends:
        if name == "auto":
            name = _backends.default_backend(read_manifest(model, KINDS, verify=False))
        if name not in _backends.BACKENDS:
            raise InvalidArgumentError(f"unknown backend {name!r}; choose from {', '.join(_backends.BACKENDS)}")
        names.append(name)
    if compile and "torch" not in names:
        raise InvalidArgumentError("--compile applies to the torch backend only: add --backend torch (or torch to --compare)")
    if len(set(names)) < len(names):
        raise InvalidArgumentError(f"--compare names a backend twice: {', '.join(names)}")
    folders = [model_dir_for(name, model, follow_sources) for name in names]  # every folder checked before the first one runs
    results = [
        bench_backend(folder, name, batch, iters, warmup, device, compile=compile, decoder=decoder) for name, folder in zip(names, folders)
    ]
    return {"results": results}


def format_table(report: dict[str, Any]) -> str:
    """A side-by-side text table of the results (ms per image)."""
    head = f"{'backend':<12} {'device':<8} {'batch':>5} {'e2e p50':>9} {'e2e p90':>9} {'text':>8} {'unet':>8} {'decoder':>8} {'img/s':>8}  folder"
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        c = r["components"]
        lines.append(
            f"{r['backend']:<12} {str(r['device']):<8} {r['batch']:>5} {r['end_to_end']['p50_ms']:>9.2f} {r['end_to_end']['p90_ms']:>9.2f} "
            f"{c['text_encoder']['p50_ms']:>8.2f} {c['unet']['p50_ms']:>8.2f} {c['decoder']['p50_ms']:>8.2f} {r['images_per_second']:>8.1f}  {r['model']}"
        )
    lines.append("ms per image (p50 unless marked), warm-up excluded")
    return "\n".join(lines)
