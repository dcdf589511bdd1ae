"""The TensorRT name tables say what NVIDIA's sources say, and the strict fakes enforce them.

Each fact below was read by hand from NVIDIA/TensorRT's pybind11 sources at the tag (or
from the wheel); a regenerated table that loses or invents one of them fails here.
"""

from __future__ import annotations

import pytest

from trt_fakes import MissingFakeValue, has, labels, load_table, strict_instance, strict_trt

TRT = ["trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3", "trt-11.1.0"]
ALL = TRT + ["rtx-1.7.1", "lean-11.4.0"]

# (dotted name, labels that have it); every other label in ALL must lack it.
FACTS = [
    ("LayerType.NORMALIZATION", {"trt-8.6.1", "trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1"}),
    ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", {"trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1"}),
    ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("BuilderFlag.FP16", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("BuilderFlag.OBEY_PRECISION_CONSTRAINTS", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("BuilderFlag.TF32", set(ALL)),
    ("ICudaEngine.device_memory_size", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("ICudaEngine.device_memory_size_v2", {"trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1", "lean-11.4.0"}),
    ("ExecutionContextAllocationStrategy", {"trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1", "lean-11.4.0"}),
    ("OnnxParserFlag.NATIVE_INSTANCENORM", {"trt-8.6.1", "trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1"}),
    ("ILayer.precision", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("ILayer.set_output_type", {"trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3"}),
    ("IExecutionContext.execute_async_v3", set(ALL)),
    ("IExecutionContext.set_input_shape", set(ALL)),
    ("IExecutionContext.set_tensor_address", set(ALL)),
    ("init_libnvinfer_plugins", set(TRT) | {"rtx-1.7.1"}),
    ("OnnxParser", set(TRT) | {"rtx-1.7.1"}),
    ("Builder", set(TRT) | {"rtx-1.7.1"}),
    ("IBuilderConfig.set_compute_capability", {"rtx-1.7.1"}),
]


def test_every_claimed_table_is_present() -> None:
    assert set(labels()) == set(ALL)


@pytest.mark.parametrize("label", ALL)
def test_table_version_matches_its_label(label: str) -> None:
    release = label.partition("-")[2]
    assert load_table(label)["version"].startswith(release + ".")
    assert strict_trt(label).__version__ == load_table(label)["version"]


@pytest.mark.parametrize(("dotted", "present_in"), FACTS, ids=[f[0] for f in FACTS])
def test_known_facts(dotted: str, present_in: set[str]) -> None:
    got = {label for label in ALL if has(label, dotted)}
    assert got == present_in


@pytest.mark.parametrize(("label", "present"), [("trt-8.5.3", False), ("trt-8.6.1", True)])
def test_layer_type_normalization_through_the_fake(label: str, present: bool) -> None:
    trt = strict_trt(label)
    if present:
        assert trt.LayerType.NORMALIZATION != trt.LayerType.SOFTMAX
    else:
        with pytest.raises(AttributeError, match=r"^LayerType.NORMALIZATION does not exist in TensorRT 8\.5\.3$"):
            trt.LayerType.NORMALIZATION
        assert not hasattr(trt.LayerType, "NORMALIZATION")


def test_fp16_flag_is_gone_in_11_and_in_rtx() -> None:
    for label in ("trt-11.1.0", "rtx-1.7.1"):
        trt = strict_trt(label)
        assert not hasattr(trt.BuilderFlag, "FP16")
        assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    with pytest.raises(AttributeError, match="TensorRT-RTX 1.7.1"):
        strict_trt("rtx-1.7.1").BuilderFlag.FP16


def test_enum_members_are_distinct_flag_bits() -> None:
    trt = strict_trt("trt-10.3.0")
    flags = [trt.BuilderFlag.FP16, trt.BuilderFlag.TF32, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS]
    bits = [1 << int(f) for f in flags]
    assert len(set(bits)) == 3 and len(set(flags)) == 3
    assert trt.BuilderFlag.FP16 == trt.BuilderFlag.FP16 and trt.BuilderFlag.FP16 != trt.BuilderFlag.TF32
    assert trt.BuilderFlag.FP16 != trt.DataType(int(trt.BuilderFlag.FP16))  # another enum never compares equal
    assert {trt.BuilderFlag.FP16: 1}[trt.BuilderFlag.FP16] == 1
    assert trt.float16 == trt.DataType.HALF and isinstance(trt.float16, trt.DataType)
    assert trt.Logger.WARNING == trt.ILogger.Severity.WARNING
    assert set(trt.BuilderFlag.__members__) == set(load_table("trt-10.3.0")["classes"]["BuilderFlag"])


def test_instances_allow_only_their_version_members_and_record_use() -> None:
    trt = strict_trt("trt-10.3.0")
    ctx = object()
    engine = strict_instance(
        trt,
        "ICudaEngine",
        device_memory_size_v2=80,
        create_execution_context=lambda strategy=None: ctx,
        create_execution_context_without_device_memory=ctx,
    )
    assert engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED) is ctx
    assert engine.device_memory_size_v2 == 80
    assert engine.calls == [("create_execution_context", (trt.ExecutionContextAllocationStrategy.USER_MANAGED,), {})]
    assert engine.used == {"create_execution_context", "device_memory_size_v2"}
    with pytest.raises(MissingFakeValue):
        engine.num_io_tensors  # listed, but the test gave no value
    with pytest.raises(AttributeError, match="cannot be set"):
        engine.device_memory_size_v2 = 1

    old = strict_trt("trt-8.6.1")
    engine = strict_instance(old, "ICudaEngine", device_memory_size_v2=80, device_memory_size=100)
    assert not hasattr(engine, "device_memory_size_v2")  # the value is ignored where the name is missing
    assert engine.device_memory_size == 100
    with pytest.raises(AttributeError, match="ExecutionContextAllocationStrategy does not exist in TensorRT 8.6.1"):
        old.ExecutionContextAllocationStrategy


def test_builder_side_calls_drive_like_the_real_api() -> None:
    trt = strict_trt("trt-8.6.1", init_libnvinfer_plugins=True)
    logger = trt.Logger(trt.Logger.WARNING)
    assert trt.init_libnvinfer_plugins(logger, "") is True
    assert ("init_libnvinfer_plugins", (logger, ""), {}) in trt.calls

    conv = strict_instance(trt, "ILayer", type=trt.LayerType.CONVOLUTION, num_outputs=1)
    network = strict_instance(trt, "INetworkDefinition", num_layers=1, get_layer=[conv].__getitem__)
    layer = network.get_layer(0)
    assert layer.type == trt.LayerType.CONVOLUTION
    layer.precision = trt.float32
    assert layer.precision == trt.DataType.FLOAT
    with pytest.raises(AttributeError, match="cannot be set"):
        layer.type = trt.LayerType.SHUFFLE

    config = strict_instance(trt, "IBuilderConfig")
    config.set_flag(trt.BuilderFlag.FP16)
    config.clear_flag(trt.BuilderFlag.TF32)
    assert [c[:2] for c in config.calls] == [("set_flag", (trt.BuilderFlag.FP16,)), ("clear_flag", (trt.BuilderFlag.TF32,))]

    parser = strict_instance(trt, "OnnxParser")
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    assert parser.calls == [("set_flag", (trt.OnnxParserFlag.NATIVE_INSTANCENORM,), {})]
    assert "OnnxParserFlag.NATIVE_INSTANCENORM" in trt.used


def test_constructors_return_what_the_test_gave() -> None:
    trt = strict_trt("trt-10.13.3")
    builder = strict_instance(trt, "Builder")
    trt2 = strict_trt("trt-10.13.3", Builder=builder)
    assert trt2.Builder(trt2.Logger()) is builder
    made = trt.Runtime(trt.Logger())
    assert isinstance(made, trt.Runtime)
    with made as same:  # __enter__ is listed for Runtime (package __init__.py)
        assert same is made


def test_lean_runtime_has_no_builder_side() -> None:
    trt = strict_trt("lean-11.4.0")
    for name in ("Builder", "OnnxParser", "init_libnvinfer_plugins"):
        assert not hasattr(trt, name)
    assert hasattr(trt.Runtime, "deserialize_cuda_engine")


def test_source_tables_agree_with_the_real_11_4_lean_wheel() -> None:
    """The 11.1 source parse invents nothing the 11.4 lean wheel lacks on the classes both have."""
    src, lean = load_table("trt-11.1.0"), load_table("lean-11.4.0")
    shared = set(src["classes"]) & set(lean["classes"])
    assert len(shared) > 80
    for name in shared:
        assert set(src["classes"][name]) <= set(lean["classes"][name]), name
        assert name in src["enums"] if name in lean["enums"] else name not in src["enums"]
