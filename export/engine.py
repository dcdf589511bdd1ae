"""ONNX directory -> TensorRT (or TensorRT for RTX) engines.

    swiftbrush export engine --onnx out/onnx --out out/engine [--static | --dynamic] [--batch B]
                             [--timing-cache FILE] [--workspace-gb GB]
    swiftbrush export engine --onnx out/onnx --out out/engine-rtx --backend tensorrt-rtx [--arch sm86]

TensorRT builds on the GPU that will run the engines (an engine is bound to one GPU
model and TensorRT version). TensorRT for RTX builds ahead of time for a named
compute capability (`--arch`), with no GPU needed; it compiles its kernels at the
first run and keeps them in a runtime cache beside the engines.

One engine per graph, named by what it is bound to (`unet.fp16.trt10.14.sm90.plan`,
`unet.fp16.rtx1.7.sm86.plan`); an optimisation profile per input from the ONNX
manifest's min/opt/max (static by default: min = opt = max, fastest and CUDA-graph
friendly); a workspace limit; a timing cache reused across builds. Precision follows
the ONNX graph's own types (trt_compat.set_precision: strongly typed where the
version has it, emulated on 8.5 / 8.6; TF32 off). Needs no `onnx` package (JetPack's
Python has none): the parsed network drops the UNet's optimum-only `timestep` input.
The engine manifest records the backend and its version, the GPU (name, compute
capability, SM count) and the ONNX hashes; the runtime refuses engines from elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks the build against tensorrt-stubs; tensorrt itself is imported lazily
    from tensorrt import Builder, IBuilderConfig, INetworkDefinition, IOptimizationProfile, OnnxParser

from swiftbrush_export import trt_targets
from swiftbrush_runtime import trt_compat
from swiftbrush_runtime.backends.trt import ENGINE_BACKENDS, import_engine_module
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, SwiftBrushError, first_line
from swiftbrush_runtime.manifest import MANIFEST, atomic_dir, atomic_write, check_out_dir, read_manifest, sha256_file, write_manifest
from swiftbrush_runtime.onestep import ONESTEP

logger = logging.getLogger(__name__)

STAGES = ("text_encoder", "unet", "vae_decoder", "taesd_decoder")
DEFAULT_WORKSPACE_GB = 4.0  # the ceiling of the automatic workspace; a quarter of the GPU's memory below it


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


def check_build_options(backend: str, arch: str | None, timing_cache: Path | str | None, workspace_gb: float | None) -> None:
    """Flags that contradict the backend, refused before anything is imported or read."""
    if backend not in ENGINE_BACKENDS:
        raise InvalidArgumentError(f"--backend must be one of {', '.join(ENGINE_BACKENDS)}, got {backend!r}")
    if workspace_gb is not None and workspace_gb <= 0:
        raise InvalidArgumentError(f"--workspace-gb must be positive, got {workspace_gb}")
    if backend == "tensorrt" and arch is not None:
        raise InvalidArgumentError("--arch is for --backend tensorrt-rtx; TensorRT builds for the GPU it runs on (run the build on that GPU)")
    if backend == "tensorrt-rtx" and timing_cache is not None:
        raise InvalidArgumentError(
            "--timing-cache does nothing with --backend tensorrt-rtx (it compiles kernels at the first run and keeps "
            "them in the engine folder's runtime cache); leave it out"
        )


def check_export_target(onnx_manifest: dict[str, Any], onnx_dir: Path, trt: Any, backend: str) -> None:
    """Refuse, before parsing, an ONNX folder with an opset or op the installed TensorRT's parser does not take.

    Reads the ops the exporter recorded per graph against the parser tables of the
    installed version's target (trt_targets), so no `onnx` package is needed.
    """
    installed = trt_targets.target_for_tensorrt_version(trt.__version__, backend)
    target = trt_targets.TARGETS[installed]
    parser = trt_targets.PARSERS[target.tensorrt]
    problems = []
    opset = onnx_manifest.get("opset")
    if isinstance(opset, int) and opset > target.max_opset:
        problems.append(f"opset {opset} (it parses up to {target.max_opset})")
    for name, graph in onnx_manifest["graphs"].items():
        problems += [f"{op} in {name}" for op in graph.get("ops", ()) if parser["ops"].get(op) is None]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InvalidModelError(
            f"{onnx_dir} has what {trt_compat.flavour(trt)} {trt.__version__} cannot parse ({', '.join(problems[:3])}{more}); "
            f"re-export it with swiftbrush export onnx --target {installed}"
        )


def target_identity(trt: Any, backend: str, arch: str | None) -> dict[str, Any]:
    """What the engines are bound to: the GPU present (with its memory in bytes), or (TensorRT for RTX with --arch) a compute capability alone."""
    if backend == "tensorrt-rtx":
        known = trt_compat.rtx_architectures(trt)
        if arch is not None:
            if arch.lower() not in known:
                raise InvalidArgumentError(
                    f"--arch {arch} is not a compute capability TensorRT for RTX {trt.__version__} builds for; "
                    f"choose one of {', '.join(known)} (or leave --arch out to build for the GPU present)"
                )
            return {"name": None, "compute_capability": arch.lower()[2:], "multiprocessor_count": None, "memory_bytes": None}
    from swiftbrush_runtime.backends.base import BackendUnavailableError
    from swiftbrush_runtime.cuda import Cuda

    try:
        cuda = Cuda(0)
        gpu = {**cuda.identity(), "memory_bytes": cuda.mem_info()[1]}
    except BackendUnavailableError as e:
        if backend != "tensorrt-rtx":
            raise
        raise BackendUnavailableError(f"{first_line(e).split(':')[0]}: pass --arch (e.g. --arch sm86) to build TensorRT for RTX engines ahead of time") from None
    if backend == "tensorrt-rtx" and f"sm{gpu['compute_capability']}" not in trt_compat.rtx_architectures(trt):
        raise InvalidArgumentError(
            f"TensorRT for RTX {trt.__version__} does not build for this GPU ({gpu['name']}, sm{gpu['compute_capability']}); "
            "use --backend tensorrt"
        )
    return gpu


def workspace_bytes(workspace_gb: float | None, gpu_memory: int | None) -> int:
    """--workspace-gb, or min(4 GiB, a quarter of the GPU's memory): an 8 GB Orin Nano shares it with the OS.

    `gpu_memory` is None when building ahead of time (TensorRT for RTX with --arch): no GPU to ask.
    """
    if workspace_gb is not None:
        return int(workspace_gb * (1 << 30))
    ceiling = int(DEFAULT_WORKSPACE_GB * (1 << 30))
    return ceiling if gpu_memory is None else min(ceiling, gpu_memory // 4)


def build_engines(
    onnx_dir: Path | str,
    out: Path | str,
    *,
    backend: str = "tensorrt",
    arch: str | None = None,
    dynamic: bool = False,
    batch: int | None = None,
    timing_cache: Path | str | None = None,
    workspace_gb: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build one engine per graph; returns the engine manifest. Checks everything before building."""
    onnx_dir, out = Path(onnx_dir), Path(out)
    check_build_options(backend, arch, timing_cache, workspace_gb)
    check_out_dir(out, overwrite, kind="engine", inputs=(("--onnx", onnx_dir), ("--timing-cache", timing_cache)))
    onnx_manifest = read_manifest(onnx_dir, "onnx", verify=True)
    profiles, batch_range = engine_profiles(onnx_manifest, dynamic, batch)
    trt = import_engine_module(backend)
    check_export_target(onnx_manifest, onnx_dir, trt, backend)
    gpu = target_identity(trt, backend, arch)
    workspace = workspace_bytes(workspace_gb, gpu["memory_bytes"])
    dtype = onnx_manifest["dtype"]
    tag = f"{dtype}.{trt_compat.version_tag(trt)}.sm{gpu['compute_capability']}"
    trt_logger = trt.Logger(trt.Logger.WARNING)
    trt_compat.init_plugins(trt, trt_logger)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_in = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    started = time.perf_counter()
    with atomic_dir(out, overwrite, kind="engine") as tmp:
        engines: dict[str, Any] = {}
        cache_bytes = cache_in
        for name in stages(onnx_manifest):
            file = f"{name}.{tag}.plan"
            t0 = time.perf_counter()
            record, cache_bytes = _build_one(
                trt, trt_logger, onnx_dir / onnx_manifest["graphs"][name]["path"], tmp / file, profiles[name], dtype, workspace, cache_bytes, arch
            )
            engines[name] = {
                "file": file,
                "inputs": profiles[name],
                **record,
                "onnx_sha256": onnx_manifest["files"][onnx_manifest["graphs"][name]["path"]],
                "build_seconds": round(time.perf_counter() - t0, 1),
            }
        shutil.copytree(onnx_dir / "tokenizer", tmp / "tokenizer")
        shutil.copy2(onnx_dir / ONESTEP, tmp / ONESTEP)  # the export's, byte for byte (written by write_onestep)
        manifest = write_manifest(
            tmp,
            "engine",
            source={"onnx": str(onnx_dir.resolve()), "onnx_manifest_sha256": sha256_file(onnx_dir / MANIFEST)},
            backend=backend,
            backend_version=trt.__version__,
            **({"tensorrt_version": trt.__version__} if backend == "tensorrt" else {}),
            gpu_name=gpu["name"],
            compute_capability=gpu["compute_capability"],
            multiprocessor_count=gpu.get("multiprocessor_count"),
            built_for="the GPU present" if gpu["name"] else f"sm{gpu['compute_capability']} (ahead of time)",
            dtype=dtype,
            decoder=onnx_manifest.get("decoder", "vae"),
            dynamic=dynamic,
            batch=batch_range,
            height=onnx_manifest["height"],
            width=onnx_manifest["width"],
            workspace_bytes=workspace,
            engines=engines,
            build_seconds=round(time.perf_counter() - started, 1),
        )
    if cache_path and cache_bytes and cache_bytes != cache_in:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, cache_bytes)
    return manifest


def _build_one(
    trt: Any, trt_logger: Any, onnx_path: Path, plan: Path, profile: dict[str, dict[str, list[int]]], dtype: str, workspace: int,
    cache_bytes: bytes, arch: str | None,
) -> tuple[dict[str, Any], bytes]:
    """One engine; returns what its manifest entry records and the updated timing cache."""
    builder: Builder = trt.Builder(trt_logger)
    strongly_typed = trt_compat.use_strongly_typed(trt)
    network: INetworkDefinition = builder.create_network(trt_compat.network_flags(trt, strongly_typed))
    parser: OnnxParser = trt.OnnxParser(network, trt_logger)
    parser_flags = trt_compat.configure_parser(trt, parser)
    if not trt_compat.parse_onnx(parser, str(onnx_path)):
        errors = "; ".join(e.replace("\n", " ") for e in trt_compat.parser_errors(parser)[:3])
        raise InvalidModelError(
            f"{trt_compat.flavour(trt)} {trt.__version__} cannot parse {onnx_path} ({errors}); "
            "re-export the ONNX folder for this TensorRT (swiftbrush export onnx --target, see --help)"
        )
    removed = trt_compat.remove_unused_inputs(network)
    config: IBuilderConfig = builder.create_builder_config()
    trt_compat.set_workspace(trt, config, workspace)
    mode = trt_compat.set_precision(trt, config, network, dtype, strongly_typed)
    if trt_compat.is_rtx(trt):
        trt_compat.set_target_architecture(trt, config, arch)
    opt_profile: IOptimizationProfile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        opt_profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(opt_profile)
    cache = None
    if not trt_compat.is_rtx(trt):  # TensorRT for RTX keeps no timing cache (its kernels compile at run time)
        cache, reused = trt_compat.attach_timing_cache(config, cache_bytes)
        if cache_bytes and not reused:
            logger.warning("the timing cache was made on another GPU or TensorRT version; starting a new one")
    blob = trt_compat.build(builder, network, config)
    if blob is None:
        raise EngineBuildError(
            f"TensorRT could not build {onnx_path.parent.name} (often out of GPU memory): close other GPU programs, "
            "lower --workspace-gb, or build --static with a smaller --batch"
        )
    plan.write_bytes(blob)
    record = {"precision": mode, "tf32": False, "parser_flags": parser_flags, "removed_inputs": removed}
    return record, (bytes(cache.serialize()) if cache is not None else cache_bytes)


def describe(manifest: dict[str, Any]) -> str:
    keys = ("backend", "backend_version", "gpu_name", "compute_capability", "dtype", "dynamic", "batch")
    return json.dumps({k: manifest.get(k) for k in keys})
