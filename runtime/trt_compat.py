"""Every TensorRT version branch, in one place (8.5 / 8.6 / 10.x / 11.x, and TensorRT for RTX 1.x).

    swiftbrush export engine --onnx out/onnx --out out/engine [--backend tensorrt-rtx --arch sm86]   (build side)
    Generator.load("out/engine")                                                                      (run side)

The name-based tensor API (set_input_shape, set_tensor_address, execute_async_v3)
exists since 8.5, so the run path is one code path; only these differ:

| call               | 8.5 / 8.6 (JetPack 5, 6.0)               | 10.x (JetPack 6.1/6.2: 10.3)        | 11.x, RTX 1.x            |
|--------------------|------------------------------------------|-------------------------------------|--------------------------|
| network flags      | EXPLICIT_BATCH                           | STRONGLY_TYPED                      | STRONGLY_TYPED (only)    |
| fp16               | FP16 flag + every layer pinned to its    | strongly typed: the ONNX types are  | same                     |
|                    | parsed type (strong typing, emulated)    | the engine's                        |                          |
| fp32 means fp32    | clear BuilderFlag.TF32 (on by default)   | same                                | same                     |
| GroupNorm          | InstanceNormalization_TRT plugin (8.5;   | native                              | native                   |
|                    | 8.6 unless NATIVE_INSTANCENORM is set)   |                                     |                          |
| shared activations | ..._without_device_memory + .device_memory | >= 10.1: USER_MANAGED + set_device_memory(ptr, size) | same   |
| activation size    | device_memory_size                       | device_memory_size_v2 (10.1+)       | same                     |
| target GPU         | the GPU present                          | the GPU present                     | RTX: ComputeCapability   |

Each function takes the `tensorrt` module (`tensorrt_rtx` for RTX; a strict fake
generated from NVIDIA's sources in the tests) and forks by feature detection at
exactly the call that changed, keeping the old branch. Version numbers appear only
in names and messages: TensorRT for RTX counts from 1.x, so a number comparison
would take it for an ancient TensorRT. Nothing here imports tensorrt.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checked by mypy against tensorrt-stubs (the 10.13 API); never imported at run time
    from tensorrt import Builder, IBuilderConfig, ICudaEngine, IExecutionContext, INetworkDefinition, ITimingCache, OnnxParser


def is_rtx(trt: Any) -> bool:
    """TensorRT for RTX (module tensorrt_rtx, or tensorrt_rtx_bindings from the pip wheels)."""
    return str(getattr(trt, "__name__", "")).startswith("tensorrt_rtx")


def flavour(trt: Any) -> str:
    """The backend name a module serves: "tensorrt" or "tensorrt-rtx"."""
    return "tensorrt-rtx" if is_rtx(trt) else "tensorrt"


def version(trt: Any) -> tuple[int, int, int]:
    """(major, minor, patch) of a tensorrt module's __version__."""
    nums = [int(x) for x in re.findall(r"\d+", str(trt.__version__))[:3]]
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def version_tag(trt: Any) -> str:
    """"trt10.14" / "rtx1.7" style tag for engine file names."""
    major, minor, _ = version(trt)
    return f"{'rtx' if is_rtx(trt) else 'trt'}{major}.{minor}"


def use_strongly_typed(trt: Any) -> bool:
    """Strongly typed networks wherever the version has them (10.0+, 11, RTX).

    The exported graph's types (fp16 with fp32 islands, or fp32) are then the
    engine's. 8.5 / 8.6 (JetPack 5 / 6.0) have no such mode: `set_precision`
    emulates it there.
    """
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """create_network flags: EXPLICIT_BATCH where it is required (8.x), STRONGLY_TYPED if asked."""
    flags = 0
    if strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise RuntimeError(f"TensorRT {trt.__version__} has no strongly typed networks")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        # 8.x requires it for ONNX; 10.x ignores it (deprecated) and 11 removed it.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def init_plugins(trt: Any, logger: Any) -> None:
    """Register TensorRT's standard plugins, before parsing and before deserializing.

    GroupNorm exports as InstanceNormalization, which 8.5 (always) and 8.6 (without
    NATIVE_INSTANCENORM) build as the InstanceNormalization_TRT plugin: an engine
    holding it deserializes only after this call, in every process that loads it.
    """
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")


def configure_parser(trt: Any, parser: "OnnxParser") -> list[str]:
    """Parser flags: native InstanceNormalization where the parser has the choice (8.6+); returns the flags set."""
    flags = getattr(trt, "OnnxParserFlag", None)
    if flags is not None and hasattr(flags, "NATIVE_INSTANCENORM"):
        parser.set_flag(flags.NATIVE_INSTANCENORM)
        return ["NATIVE_INSTANCENORM"]
    return []


def remove_unused_inputs(network: "INetworkDefinition") -> list[str]:
    """Drop network inputs no layer reads (the UNet graph's optimum-only `timestep`); returns their names.

    Done on the parsed network so the build needs no `onnx` package (JetPack's
    Python has none); an unused input would otherwise stay an engine binding.
    """
    used = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                used.add(tensor.name)
    unused = [network.get_input(i) for i in range(network.num_inputs) if network.get_input(i).name not in used]
    names = [t.name for t in unused]  # read before removal: a removed tensor's object is freed
    for tensor in unused:
        network.remove_tensor(tensor)
    return names


def set_precision(trt: Any, config: "IBuilderConfig", network: "INetworkDefinition", onnx_dtype: str, strongly_typed: bool) -> str:
    """Make the engine compute in the ONNX graph's own types; returns the mode recorded in the manifest.

    TF32 is cleared everywhere (TensorRT enables it by default, which would run the
    fp32 graph and the fp16 graph's fp32 islands at a 10-bit mantissa on Ampere and
    later, Orin included). A weakly typed fp16 build (8.5 / 8.6) treats tensor types
    as hints, so every layer with float outputs is pinned to its parsed type and
    the builder told to obey: strong typing, emulated.
    """
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    if strongly_typed:
        return f"strongly-typed-{onnx_dtype}"
    if onnx_dtype != "fp16":
        return "fp32"
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = pin_layer_types(trt, network)
    return f"fp16-flag(typed: {pinned['float32']} fp32 / {pinned['float16']} fp16 layers pinned)"


def pin_layer_types(trt: Any, network: "INetworkDefinition") -> dict[str, int]:
    """Set each layer's precision and output types to the types the parser gave its outputs.

    Plugin layers are pinned like any other (the InstanceNormalization plugin is an
    fp32 island). Layers that only move or convert data (constants, shapes, casts,
    identity) keep their output types but get no compute precision.
    """
    movers = {getattr(trt.LayerType, n) for n in ("CONSTANT", "SHAPE", "IDENTITY", "CAST") if hasattr(trt.LayerType, n)}
    floats = {trt.float32: "float32", trt.float16: "float16"}
    pinned = {"float32": 0, "float16": 0}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        types = set()
        for j in range(layer.num_outputs):
            dtype = layer.get_output(j).dtype
            if dtype in floats:
                layer.set_output_type(j, dtype)
                types.add(dtype)
        if len(types) == 1 and layer.type not in movers:
            dtype = types.pop()
            layer.precision = dtype
            pinned[floats[dtype]] += 1
    return pinned


def set_workspace(trt: Any, config: "IBuilderConfig", nbytes: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:  # before 8.4; kept for completeness
        config.max_workspace_size = nbytes


def rtx_architectures(trt: Any) -> list[str]:
    """The compute capabilities a TensorRT for RTX builder targets ahead of time, as "sm86" names."""
    members = getattr(getattr(trt, "ComputeCapability", None), "__members__", {})
    return [name.lower() for name in members if name.startswith("SM")]


def set_target_architecture(trt: Any, config: "IBuilderConfig", arch: str | None) -> None:
    """TensorRT for RTX: build for `arch` ("sm86"), or for the GPU present when None."""
    members = trt.ComputeCapability.__members__
    config.num_compute_capabilities = 1
    if not config.set_compute_capability(members["CURRENT" if arch is None else arch.upper()], 0):
        raise RuntimeError(f"TensorRT for RTX {trt.__version__} refused compute capability {arch or 'CURRENT'}")


def attach_timing_cache(config: "IBuilderConfig", data: bytes) -> tuple["ITimingCache", bool]:
    """A timing cache for this build: the one in `data` if it fits this GPU and version, else a new one.

    Returns (cache, reused). set_timing_cache refuses a cache from another GPU or
    TensorRT version; writing that stale cache back would keep it stale forever.
    """
    cache = config.create_timing_cache(data)
    if data and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache, True
    fresh = config.create_timing_cache(b"")
    config.set_timing_cache(fresh, ignore_mismatch=False)
    return fresh, False


def parse_onnx(parser: "OnnxParser", path: str) -> bool:
    """Parse from the file, so external weights (graphs over 2 GB) resolve beside it."""
    return bool(parser.parse_from_file(path))


def parser_errors(parser: "OnnxParser") -> list[str]:
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


def build(builder: "Builder", network: "INetworkDefinition", config: "IBuilderConfig") -> bytes | None:
    """Serialized engine bytes, or None when the builder failed (e.g. out of memory)."""
    blob = builder.build_serialized_network(network, config)
    return None if blob is None else bytes(blob)


def engine_validity(trt: Any, runtime: Any, blob: bytes) -> tuple[str, str] | None:
    """TensorRT for RTX's own check of an engine against this GPU and runtime: (VALID|SUBOPTIMAL|INVALID, diagnostics).

    None where the runtime has no such call (TensorRT; the manifest check covers it).
    """
    if not hasattr(runtime, "get_engine_validity"):
        return None
    validity, diagnostics = runtime.get_engine_validity(blob[: int(runtime.engine_header_size)])
    flags = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), "__members__", {})
    reasons = [name.lower().replace("_", " ") for name, bit in flags.items() if int(diagnostics) & int(bit)]  # a bit mask
    return str(validity.name), ", ".join(reasons)


def device_memory_size(engine: "ICudaEngine") -> int:
    """Activation memory one context needs (10.1+: device_memory_size_v2)."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def create_runtime_cache(engine: "ICudaEngine", data: bytes) -> tuple[Any, bool] | None:
    """A JIT kernel cache for TensorRT for RTX (filled from `data` when it fits this GPU); None elsewhere.

    Returns (cache, loaded).
    """
    if not hasattr(engine, "create_runtime_config"):
        return None
    config = engine.create_runtime_config()
    if not hasattr(config, "create_runtime_cache"):
        return None
    cache = config.create_runtime_cache()
    loaded = bool(data) and bool(cache.deserialize(data))
    return cache, loaded


def create_context(trt: Any, engine: "ICudaEngine", shared_memory: bool, runtime_cache: Any = None) -> "IExecutionContext":
    """An execution context; with shared_memory, one whose activations the caller provides."""
    strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)  # 10.1+
    if runtime_cache is not None:  # TensorRT for RTX: the runtime config carries the kernel cache
        config = engine.create_runtime_config()
        if shared_memory:
            config.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        config.set_runtime_cache(runtime_cache)
        return engine.create_execution_context(config)
    if not shared_memory:
        return engine.create_execution_context()
    if strategy is not None:
        return engine.create_execution_context(strategy.USER_MANAGED)
    return engine.create_execution_context_without_device_memory()  # 8.5 .. 10.0


def set_device_memory(context: "IExecutionContext", ptr: int, size: int) -> None:
    if hasattr(context, "set_device_memory"):  # 10.1+
        context.set_device_memory(ptr, size)
    else:
        context.device_memory = ptr


def io_tensors(trt: Any, engine: "ICudaEngine") -> list[tuple[str, bool]]:
    """(name, is_input) for every I/O tensor (name-based API, 8.5+)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        out.append((name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
    return out


def execute(context: "IExecutionContext", stream: int) -> bool:
    return bool(context.execute_async_v3(stream))
