"""Every trt_compat branch, run against strict fakes of each TensorRT version we claim.

The fakes (trt_fakes.py) carry exactly the Python names NVIDIA's pybind sources give
each version (trt_api/*.json), so a branch that touches a name its version lacks
raises AttributeError here: `trt.LayerType.NORMALIZATION` on 8.5, the bindings API on
10, the FP16 flag on 11. The tests also pin which decision each version gets.
"""

from __future__ import annotations

from typing import Any

import pytest

from swiftbrush_runtime import trt_compat
from trt_fakes import strict_instance, strict_trt

JETPACK = ["trt-8.5.3", "trt-8.6.1"]  # weakly typed: no STRONGLY_TYPED flag
TYPED = ["trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1"]
BUILDERS = JETPACK + TYPED


def _tensor(trt: Any, name: str, dtype: Any) -> Any:
    return strict_instance(trt, "ITensor", name=name, dtype=dtype)


def _layer(trt: Any, type_name: str, inputs: list[Any], outputs: list[Any]) -> Any:
    return strict_instance(
        trt, "ILayer", type=getattr(trt.LayerType, type_name), num_inputs=len(inputs), num_outputs=len(outputs),
        get_input=inputs.__getitem__, get_output=outputs.__getitem__, precision=None,
    )


def _network(trt: Any) -> tuple[Any, dict[str, Any]]:
    """A parsed UNet-like network: fp16 compute, an fp32 plugin island (GroupNorm on 8.5/8.6), a constant, a shape path, and the unused timestep."""
    f16, f32, i32 = trt.float16, trt.float32, trt.int32
    sample, text, timestep = _tensor(trt, "sample", f32), _tensor(trt, "encoder_hidden_states", f32), _tensor(trt, "timestep", trt.int32)
    h = _tensor(trt, "h", f16)
    layers = {
        "cast_in": _layer(trt, "IDENTITY", [sample], [h]),
        "conv": _layer(trt, "CONVOLUTION", [h], [_tensor(trt, "c", f16)]),
        "norm": _layer(trt, "PLUGIN_V2", [h], [_tensor(trt, "n", f32)]),
        "const": _layer(trt, "CONSTANT", [], [_tensor(trt, "w", f16)]),
        "shape": _layer(trt, "SHAPE", [text], [_tensor(trt, "s", i32)]),
    }
    order = list(layers.values())
    inputs = [sample, text, timestep]
    removed: list[Any] = []

    def remove_tensor(t: Any) -> None:
        removed.append(t)
        inputs.remove(t)

    network = strict_instance(
        trt, "INetworkDefinition", num_layers=len(order), get_layer=order.__getitem__,
        num_inputs=3, get_input=lambda i: [sample, text, timestep][i], remove_tensor=remove_tensor,
    )
    return network, layers


def _config(trt: Any, cache_fits: bool = True) -> Any:
    return strict_instance(
        trt, "IBuilderConfig", create_timing_cache=lambda data: strict_instance(trt, "ITimingCache", serialize=b"cache"),
        set_timing_cache=lambda cache, ignore_mismatch: cache_fits, set_compute_capability=True, num_compute_capabilities=0,
    )


@pytest.mark.parametrize("label", BUILDERS)
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_build_path_touches_only_names_the_version_has(label: str, dtype: str):
    """The whole build-side sequence export/engine.py runs, in its order."""
    trt = strict_trt(label)
    logger = strict_instance(trt, "ILogger")
    trt_compat.init_plugins(trt, logger)
    assert ("init_libnvinfer_plugins", (logger, ""), {}) in trt.calls  # every version: 8.5/8.6 engines hold plugin layers

    typed = trt_compat.use_strongly_typed(trt)
    assert typed is (label in TYPED)
    flags = trt_compat.network_flags(trt, typed)
    expected = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED if typed else trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    assert flags == 1 << int(expected)

    parser = strict_instance(trt, "OnnxParser", parse_from_file=True, num_errors=0)
    set_flags = trt_compat.configure_parser(trt, parser)
    assert set_flags == ([] if label == "trt-8.5.3" else ["NATIVE_INSTANCENORM"])
    assert trt_compat.parse_onnx(parser, "/x/unet/model.onnx")

    network, layers = _network(trt)
    assert trt_compat.remove_unused_inputs(network) == ["timestep"]

    config = _config(trt)
    trt_compat.set_workspace(trt, config, 1 << 30)
    assert ("set_memory_pool_limit", (trt.MemoryPoolType.WORKSPACE, 1 << 30), {}) in config.calls
    mode = trt_compat.set_precision(trt, config, network, dtype, typed)
    assert ("clear_flag", (trt.BuilderFlag.TF32,), {}) in config.calls  # fp32 must mean fp32, islands included
    if typed:
        assert mode == f"strongly-typed-{dtype}"
        assert not any(c[0] == "set_flag" for c in config.calls)
    elif dtype == "fp32":
        assert mode == "fp32" and not any(c[0] == "set_flag" for c in config.calls)
    else:
        assert ("set_flag", (trt.BuilderFlag.FP16,), {}) in config.calls
        assert ("set_flag", (trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,), {}) in config.calls
        assert mode == "fp16-flag(typed: 1 fp32 / 1 fp16 layers pinned)"
        # strong typing, emulated: compute layers keep their parsed type, the plugin island stays fp32
        assert layers["norm"].precision == trt.float32 and layers["conv"].precision == trt.float16
        assert ("set_output_type", (0, trt.float32), {}) in layers["norm"].calls
        # movers keep their output types but get no compute precision; non-float outputs are left alone
        assert layers["const"].precision is None and layers["cast_in"].precision is None and layers["shape"].precision is None
        assert not any(c[0] == "set_output_type" for c in layers["shape"].calls)

    if trt_compat.is_rtx(trt):
        trt_compat.set_target_architecture(trt, config, "sm86")
        assert ("set_compute_capability", (trt.ComputeCapability.SM86, 0), {}) in config.calls
        assert "sm86" in trt_compat.rtx_architectures(trt) and "sm90" not in trt_compat.rtx_architectures(trt)
    else:
        cache, reused = trt_compat.attach_timing_cache(config, b"old")
        assert reused

    builder = strict_instance(trt, "Builder", build_serialized_network=b"plan")
    assert trt_compat.build(builder, network, config) == b"plan"


@pytest.mark.parametrize("label", ["trt-8.5.3", "trt-10.13.3"])
def test_stale_timing_cache_is_replaced_not_written_back(label: str):
    trt = strict_trt(label)
    made: list[bytes] = []

    def create(data: bytes) -> Any:
        made.append(data)
        return strict_instance(trt, "ITimingCache", serialize=b"new" if not data else b"stale")

    config = strict_instance(trt, "IBuilderConfig", create_timing_cache=create, set_timing_cache=lambda cache, ignore_mismatch: cache.serialize() == b"new")
    cache, reused = trt_compat.attach_timing_cache(config, b"from another GPU")
    assert not reused and made == [b"from another GPU", b""]
    assert cache.serialize() == b"new"


@pytest.mark.parametrize("label", BUILDERS + ["lean-11.4.0"])
def test_run_path_touches_only_names_the_version_has(label: str):
    """What runtime/backends/trt.py does with an engine: shared-memory context, I/O names, execute."""
    trt = strict_trt(label)
    context = strict_instance(trt, "IExecutionContext", execute_async_v3=True, set_device_memory=None, device_memory=0)
    engine = strict_instance(
        trt, "ICudaEngine", num_io_tensors=2, get_tensor_name=["sample", "out_sample"].__getitem__,
        get_tensor_mode=lambda n: trt.TensorIOMode.INPUT if n == "sample" else trt.TensorIOMode.OUTPUT,
        create_execution_context=context, create_execution_context_without_device_memory=context,
        device_memory_size=100, device_memory_size_v2=80,
    )
    ctx = trt_compat.create_context(trt, engine, shared_memory=True)
    assert ctx is context
    size = trt_compat.device_memory_size(engine)
    trt_compat.set_device_memory(ctx, 0xABC, size)
    if label in JETPACK:
        assert engine.calls[0][0] == "create_execution_context_without_device_memory" and size == 100
        assert ("device_memory=", (0xABC,), {}) in context.calls
    else:
        assert engine.calls[0] == ("create_execution_context", (trt.ExecutionContextAllocationStrategy.USER_MANAGED,), {})
        assert size == 80 and ("set_device_memory", (0xABC, 80), {}) in context.calls
    assert trt_compat.io_tensors(trt, engine) == [("sample", True), ("out_sample", False)]
    assert trt_compat.execute(ctx, 7)
    runtime = strict_instance(trt, "Runtime", engine_header_size=4, get_engine_validity=lambda b: (trt.EngineValidity.VALID, 0))
    verdict = trt_compat.engine_validity(trt, runtime, b"headerandbody")
    assert verdict == (("VALID", "") if label.startswith("rtx") else None)


def test_rtx_validity_diagnostics_are_named():
    """get_engine_validity answers a bit mask of EngineInvalidityDiagnostics: the message names the reasons."""
    from swiftbrush_runtime.backends.trt import import_tensorrt_rtx

    real = import_tensorrt_rtx()  # the installed wheel: its enum's real bit values

    trt = strict_trt("rtx-1.7.1")
    bits = int(real.EngineInvalidityDiagnostics.UNSUPPORTED_CC) | int(real.EngineInvalidityDiagnostics.OLD_CUDA_DRIVER)
    runtime = real.Runtime(real.Logger(real.Logger.ERROR))
    fake = strict_instance(trt, "Runtime", engine_header_size=runtime.engine_header_size, get_engine_validity=lambda b: (real.EngineValidity.INVALID, bits))
    assert trt_compat.engine_validity(real, fake, b"x" * 100) == ("INVALID", "unsupported cc, old cuda driver")


def test_rtx_runtime_cache_goes_through_the_runtime_config():
    trt = strict_trt("rtx-1.7.1")
    cache = strict_instance(trt, "IRuntimeCache", deserialize=lambda data: data == b"fits")
    config = strict_instance(trt, "IRuntimeConfig", create_runtime_cache=cache)
    context = strict_instance(trt, "IExecutionContext")
    engine = strict_instance(trt, "ICudaEngine", create_runtime_config=config, create_execution_context=context)
    assert trt_compat.create_runtime_cache(engine, b"fits") == (cache, True)
    assert trt_compat.create_runtime_cache(engine, b"other GPU") == (cache, False)
    assert trt_compat.create_context(trt, engine, shared_memory=True, runtime_cache=cache) is context
    assert ("set_execution_context_allocation_strategy", (trt.ExecutionContextAllocationStrategy.USER_MANAGED,), {}) in config.calls
    assert ("set_runtime_cache", (cache,), {}) in config.calls
    assert engine.calls[-1] == ("create_execution_context", (config,), {})
    # TensorRT proper has no runtime cache: None, and contexts are made the plain way
    trt10 = strict_trt("trt-10.3.0")
    assert trt_compat.create_runtime_cache(strict_instance(trt10, "ICudaEngine"), b"") is None


def test_strongly_typed_refused_where_missing():
    with pytest.raises(RuntimeError, match="strongly typed"):
        trt_compat.network_flags(strict_trt("trt-8.6.1"), True)


def test_version_tags_keep_rtx_apart_from_tensorrt():
    assert trt_compat.version_tag(strict_trt("trt-10.13.3")) == "trt10.13"
    assert trt_compat.version_tag(strict_trt("rtx-1.7.1")) == "rtx1.7"
    assert trt_compat.flavour(strict_trt("rtx-1.7.1")) == "tensorrt-rtx"
    # RTX's 1.x is not an old TensorRT: it builds strongly typed like 10+
    assert trt_compat.use_strongly_typed(strict_trt("rtx-1.7.1"))
