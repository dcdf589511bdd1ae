"""Every TensorRT version branch, in one place (8.5 / 8.6 / 10.x / 11.x).

    swiftbrush export engine --onnx out/onnx --out out/engine     (build side)
    Generator.load("out/engine")                                   (run side)

The name-based tensor API (set_input_shape, set_tensor_address, execute_async_v3)
exists since 8.5, so the run path is one code path; only these differ:

| call               | 8.5 / 8.6                          | 10.0 .. 10.11                | 10.12+ / 11               |
|--------------------|------------------------------------|------------------------------|---------------------------|
| network flags      | EXPLICIT_BATCH                     | 0 or STRONGLY_TYPED          | STRONGLY_TYPED (11: only) |
| fp16               | BuilderFlag.FP16                   | FP16 flag or strongly typed  | strongly typed fp16 ONNX  |
| shared activations | ..._without_device_memory + .device_memory | >= 10.1: USER_MANAGED + set_device_memory(ptr, size) | same |
| activation size    | device_memory_size                 | device_memory_size_v2 (10.1+)| same                      |
| workspace          | set_memory_pool_limit (8.4+)       | same (max_workspace_size gone) | same                    |

Each function takes the `tensorrt` module (or a fake with the same attributes, in
the tests) and forks by feature detection at exactly the call that changed,
keeping the old branch; version numbers are compared only where a feature exists
in several versions but should be used from one of them on (FP16 flag vs strongly
typed). Nothing here imports tensorrt.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checked by mypy against tensorrt-stubs (the 10.13 API); never imported at run time
    from tensorrt import Builder, IBuilderConfig, ICudaEngine, IExecutionContext, INetworkDefinition, OnnxParser

STRONGLY_TYPED_FROM = (10, 12)  # BuilderFlag.FP16 deprecated from here on; TRT 11 removed it


def version(trt: Any) -> tuple[int, int, int]:
    """(major, minor, patch) of a tensorrt module's __version__."""
    nums = [int(x) for x in re.findall(r"\d+", str(trt.__version__))[:3]]
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def version_tag(trt: Any) -> str:
    """"trt10.14" style tag for engine file names."""
    major, minor, _ = version(trt)
    return f"trt{major}.{minor}"


def use_strongly_typed(trt: Any, onnx_dtype: str) -> bool:
    """Strongly typed networks for fp16 ONNX where TensorRT wants them (10.12+, 11).

    Older versions (JetPack 5's 8.5, 6.0's 8.6, 6.1/6.2's 10.3) build with the FP16
    builder flag and precision constraints instead. fp32 ONNX builds fp32 engines
    strongly typed where available (the graph's own types are then the engine's).
    """
    has_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    if not has_typed:
        return False
    if not has_fp16_flag:
        return True
    if onnx_dtype == "fp16":
        return version(trt)[:2] >= STRONGLY_TYPED_FROM
    return False


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """create_network flags: EXPLICIT_BATCH before 10 (required there), STRONGLY_TYPED if asked."""
    flags = 0
    if version(trt)[0] < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise RuntimeError(f"TensorRT {trt.__version__} has no strongly typed networks")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def set_precision(trt: Any, config: "IBuilderConfig", network: "INetworkDefinition", onnx_dtype: str, strongly_typed: bool) -> str:
    """Configure fp16 for a weakly typed build; returns the precision mode recorded in the manifest."""
    if strongly_typed:
        return f"strongly-typed-{onnx_dtype}"
    if onnx_dtype != "fp16":
        return "fp32"
    config.set_flag(trt.BuilderFlag.FP16)
    # The fp16 ONNX keeps normalisations/softmax fp32 with Casts; a weakly typed build
    # may still pick fp16 for them, so pin those layers (8.5+ has both calls).
    flag = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)
    if flag is not None:
        config.set_flag(flag)
    pinned = 0
    fp32_types = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}  # all since 8.5
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in fp32_types:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return f"fp16-flag({pinned} layers pinned fp32)"


def set_workspace(trt: Any, config: "IBuilderConfig", nbytes: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:  # before 8.4; kept for completeness
        config.max_workspace_size = nbytes


def parse_onnx(parser: "OnnxParser", path: str, model_bytes: bytes | None = None) -> bool:
    """Parse from the file (external weights resolve) or from bytes with the path given."""
    if model_bytes is None:
        return bool(parser.parse_from_file(path))
    return bool(parser.parse(model_bytes, path))


def parser_errors(parser: "OnnxParser") -> list[str]:
    return [str(parser.get_error(i)) for i in range(parser.num_errors)]


def build(builder: "Builder", network: "INetworkDefinition", config: "IBuilderConfig") -> bytes | None:
    """Serialized engine bytes, or None when the builder failed (e.g. out of memory)."""
    blob = builder.build_serialized_network(network, config)
    return None if blob is None else bytes(blob)


def device_memory_size(engine: "ICudaEngine") -> int:
    """Activation memory one context needs (10.1+: device_memory_size_v2)."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def create_context(trt: Any, engine: "ICudaEngine", shared_memory: bool) -> "IExecutionContext":
    """An execution context; with shared_memory, one whose activations the caller provides."""
    if not shared_memory:
        return engine.create_execution_context()
    strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
    if strategy is not None:  # 10.1+
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
