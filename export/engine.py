"""ONNX directory -> TensorRT engines, built on the machine (GPU + TensorRT) that runs them.

    swiftbrush export engine --onnx out/onnx --out out/engine [--static | --dynamic]
                             [--batch B] [--timing-cache FILE] [--workspace-gb 4]

One engine per graph, named by what it is bound to
(`unet.fp16.trt10.14.sm90.plan`); an optimisation profile per input from the ONNX
manifest's min/opt/max (static by default: min = opt = max, fastest and CUDA-graph
friendly); a workspace limit; a timing cache reused across builds. Precision
follows the ONNX: fp16 ONNX builds strongly typed where TensorRT wants it (10.12+,
11) and with the FP16 flag plus fp32-pinned normalisations on 8.5 / 8.6 / 10.3
(JetPack 5 / 6.0 / 6.1-6.2); the branches live in swiftbrush_runtime.trt_compat.
The engine manifest records the TensorRT version, GPU name and compute capability,
the ONNX hashes and the shapes; the runtime refuses engines from elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks the build against tensorrt-stubs; tensorrt itself is imported lazily
    from tensorrt import Builder, IBuilderConfig, INetworkDefinition, IOptimizationProfile, ITimingCache, OnnxParser

from swiftbrush_runtime import trt_compat
from swiftbrush_runtime.backends.trt import import_tensorrt
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, SwiftBrushError
from swiftbrush_runtime.manifest import MANIFEST, atomic_dir, check_out_dir, read_manifest, sha256_file, write_manifest

logger = logging.getLogger(__name__)

STAGES = ("text_encoder", "unet", "vae_decoder", "taesd_decoder")


def stages(onnx_manifest: dict[str, Any]) -> list[str]:
    """The graphs to build: all of the ONNX directory's (taesd_decoder only when exported)."""
    return [s for s in STAGES if s in onnx_manifest["graphs"]]


class EngineBuildError(SwiftBrushError):
    """The TensorRT builder failed (out of memory, unsupported layer)."""


def engine_profiles(onnx_manifest: dict[str, Any], dynamic: bool, batch: int | None) -> tuple[dict[str, dict[str, dict[str, list[int]]]], dict[str, int]]:
    """Per graph, per input: {"min", "opt", "max"} shapes for the engine; and the batch range.

    Static engines take the ONNX opt shapes with the batch replaced by `batch`; dynamic
    engines take the ONNX ranges (which must be dynamic).
    """
    b = onnx_manifest["batch"]
    if dynamic and not onnx_manifest.get("dynamic"):
        raise InvalidArgumentError("--dynamic needs an ONNX directory exported with --dynamic; re-export it or build --static")
    if batch is not None and not b["min"] <= batch <= b["max"]:
        raise InvalidArgumentError(f"--batch {batch} is outside the ONNX directory's batch range {b['min']}..{b['max']}; re-export with --batch {batch}")
    chosen = batch if batch is not None else b["opt"]
    out: dict[str, dict[str, dict[str, list[int]]]] = {}
    for name in stages(onnx_manifest):
        graph = onnx_manifest["graphs"][name]
        out[name] = {}
        for inp, s in graph["inputs"].items():
            if dynamic:
                out[name][inp] = {"min": s["min"], "opt": s["opt"], "max": s["max"]}
            else:
                shape = [chosen] + list(s["opt"][1:])
                out[name][inp] = {"min": shape, "opt": shape, "max": shape}
    rng = {"min": b["min"], "opt": b["opt"], "max": b["max"]} if dynamic else {"min": chosen, "opt": chosen, "max": chosen}
    return out, rng


def _onnx_bytes_without_unused_inputs(path: Path) -> bytes | None:
    """The graph proto minus declared-but-unused inputs (the UNet's optimum `timestep`).

    Loaded without external data, so it stays small; TensorRT parses it with the
    file's path so external weights still resolve (onnx-tensorrt #818). None when
    nothing needed stripping (then TensorRT parses the file itself).
    """
    import onnx

    from swiftbrush_export.graphs import strip_unused_inputs

    model = onnx.load(str(path), load_external_data=False)
    if not strip_unused_inputs(model):
        return None
    return model.SerializeToString()


def build_engines(
    onnx_dir: Path | str,
    out: Path | str,
    *,
    dynamic: bool = False,
    batch: int | None = None,
    timing_cache: Path | str | None = None,
    workspace_gb: float = 4.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the three engines; returns the engine manifest. Checks everything before building."""
    onnx_dir, out = Path(onnx_dir), Path(out)
    if workspace_gb <= 0:
        raise InvalidArgumentError(f"--workspace-gb must be positive, got {workspace_gb}")
    check_out_dir(out, overwrite, kind="engine", inputs=(("--onnx", onnx_dir), ("--timing-cache", timing_cache)))
    onnx_manifest = read_manifest(onnx_dir, "onnx", verify=True)
    profiles, batch_range = engine_profiles(onnx_manifest, dynamic, batch)
    trt = import_tensorrt()
    from swiftbrush_runtime.cuda import gpu_identity

    gpu = gpu_identity(0)
    dtype = onnx_manifest["dtype"]
    tag = f"{dtype}.{trt_compat.version_tag(trt)}.sm{gpu['compute_capability']}"
    trt_logger = trt.Logger(trt.Logger.WARNING)
    cache_path = Path(timing_cache) if timing_cache else None
    started = time.perf_counter()
    with atomic_dir(out, overwrite, kind="engine") as tmp:
        engines: dict[str, Any] = {}
        cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
        for name in stages(onnx_manifest):
            file = f"{name}.{tag}.plan"
            t0 = time.perf_counter()
            mode, cache_bytes = _build_one(
                trt, trt_logger, onnx_dir / onnx_manifest["graphs"][name]["path"], tmp / file, profiles[name], dtype, int(workspace_gb * (1 << 30)), cache_bytes
            )
            engines[name] = {
                "file": file,
                "inputs": profiles[name],
                "precision": mode,
                "onnx_sha256": onnx_manifest["files"][onnx_manifest["graphs"][name]["path"]],
                "build_seconds": round(time.perf_counter() - t0, 1),
            }
        if cache_path and cache_bytes:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(cache_bytes)
        shutil.copytree(onnx_dir / "tokenizer", tmp / "tokenizer")
        shutil.copy2(onnx_dir / "onestep.json", tmp / "onestep.json")
        manifest = write_manifest(
            tmp,
            "engine",
            source={"onnx": str(onnx_dir.resolve()), "onnx_manifest_sha256": sha256_file(onnx_dir / MANIFEST)},
            tensorrt_version=trt.__version__,
            gpu_name=gpu["name"],
            compute_capability=gpu["compute_capability"],
            dtype=dtype,
            decoder=onnx_manifest.get("decoder", "vae"),
            dynamic=dynamic,
            batch=batch_range,
            height=onnx_manifest["height"],
            width=onnx_manifest["width"],
            engines=engines,
            build_seconds=round(time.perf_counter() - started, 1),
        )
    return manifest


def _build_one(trt: Any, trt_logger: Any, onnx_path: Path, plan: Path, profile: dict[str, dict[str, list[int]]], dtype: str, workspace: int, cache_bytes: bytes) -> tuple[str, bytes]:
    builder: Builder = trt.Builder(trt_logger)
    strongly_typed = trt_compat.use_strongly_typed(trt, dtype)
    network: INetworkDefinition = builder.create_network(trt_compat.network_flags(trt, strongly_typed))
    parser: OnnxParser = trt.OnnxParser(network, trt_logger)
    if not trt_compat.parse_onnx(parser, str(onnx_path), _onnx_bytes_without_unused_inputs(onnx_path)):
        errors = "; ".join(trt_compat.parser_errors(parser)[:3])
        raise InvalidModelError(f"TensorRT cannot parse {onnx_path} ({errors}); re-export with a supported --opset")
    config: IBuilderConfig = builder.create_builder_config()
    trt_compat.set_workspace(trt, config, workspace)
    mode = trt_compat.set_precision(trt, config, network, dtype, strongly_typed)
    opt_profile: IOptimizationProfile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        opt_profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(opt_profile)
    cache: ITimingCache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    blob = trt_compat.build(builder, network, config)
    if blob is None:
        raise EngineBuildError(
            f"TensorRT could not build {onnx_path.parent.name} (often out of GPU memory): close other GPU programs, "
            "lower --workspace-gb, or build --static with a smaller --batch"
        )
    plan.write_bytes(blob)
    return mode, bytes(cache.serialize())


def describe(manifest: dict[str, Any]) -> str:
    return json.dumps({k: manifest[k] for k in ("tensorrt_version", "gpu_name", "compute_capability", "dtype", "dynamic", "batch")})
