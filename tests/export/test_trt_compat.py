"""Every TensorRT version branch of trt_compat, against fake tensorrt modules.

The fakes carry exactly the attributes each version has (REFERENCE.md, "TensorRT
by version"), so a branch that touches a removed API fails here.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest

from swiftbrush_runtime import trt_compat


def fake_trt(version: str):
    major, minor = (int(x) for x in version.split(".")[:2])
    flags = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10 or (major, minor) >= (9, 0):
        flags["STRONGLY_TYPED"] = 1 if major < 11 else 0
    builder_flags = {"OBEY_PRECISION_CONSTRAINTS": 9}
    if major < 11:
        builder_flags["FP16"] = 0
    ns = SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=enum.IntEnum("NetworkDefinitionCreationFlag", flags, start=0) if flags else SimpleNamespace(),
        BuilderFlag=SimpleNamespace(**builder_flags),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        LayerType=SimpleNamespace(NORMALIZATION="norm", SOFTMAX="softmax", REDUCE="reduce", CONVOLUTION="conv"),
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        float32="float32",
    )
    if (major, minor) >= (10, 1):
        ns.ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="user", STATIC="static")
    return ns


class FakeEngine:
    def __init__(self, version: str):
        self.v = tuple(int(x) for x in version.split(".")[:2])
        self.calls = []
        self.device_memory_size = 100
        if self.v >= (10, 1):
            self.device_memory_size_v2 = 80
        self.num_io_tensors = 2

    def create_execution_context(self, strategy=None):
        self.calls.append(("create", strategy))
        return FakeContext(self.v)

    def create_execution_context_without_device_memory(self):
        self.calls.append(("create_without",))
        return FakeContext(self.v)

    def get_tensor_name(self, i):
        return ["sample", "latent"][i]

    def get_tensor_mode(self, name):
        return "in" if name == "sample" else "out"


class FakeContext:
    def __init__(self, v):
        self.device_memory = None
        if v >= (10, 1):
            self.set_device_memory = lambda ptr, size: setattr(self, "set", (ptr, size))


class FakeLayer:
    def __init__(self, type_):
        self.type, self.precision, self.num_outputs, self.outs = type_, None, 1, {}

    def set_output_type(self, i, t):
        self.outs[i] = t


class FakeNetwork:
    def __init__(self):
        self.layers = [FakeLayer("conv"), FakeLayer("norm"), FakeLayer("softmax")]
        self.num_layers = len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


class FakeConfig:
    def __init__(self):
        self.flags, self.pools = [], {}

    def set_flag(self, f):
        self.flags.append(f)

    def set_memory_pool_limit(self, pool, n):
        self.pools[pool] = n


VERSIONS = ["8.5.2", "8.6.2", "10.3.0", "10.14.1", "11.0.0"]


@pytest.mark.parametrize(
    "version, typed_fp16, typed_fp32, flags_fp16",
    [
        ("8.5.2", False, False, 1 << 0),  # JetPack 5: EXPLICIT_BATCH, FP16 flag
        ("8.6.2", False, False, 1 << 0),  # JetPack 6.0
        ("10.3.0", False, False, 0),  # JetPack 6.1/6.2: FP16 flag, no explicit-batch flag
        ("10.14.1", True, False, 1 << 1),  # desktop 10.12+: strongly typed fp16 ONNX
        ("11.0.0", True, True, 1 << 0),  # 11: always strongly typed, no FP16 flag
    ],
)
def test_network_flags_and_precision_choice(version, typed_fp16, typed_fp32, flags_fp16):
    trt = fake_trt(version)
    assert trt_compat.use_strongly_typed(trt, "fp16") is typed_fp16
    assert trt_compat.use_strongly_typed(trt, "fp32") is typed_fp32
    assert trt_compat.network_flags(trt, typed_fp16) == flags_fp16


@pytest.mark.parametrize("version", VERSIONS)
def test_set_precision(version):
    trt = fake_trt(version)
    typed = trt_compat.use_strongly_typed(trt, "fp16")
    config, net = FakeConfig(), FakeNetwork()
    mode = trt_compat.set_precision(trt, config, net, "fp16", typed)
    if typed:
        assert mode == "strongly-typed-fp16" and config.flags == []
    else:
        assert config.flags == [trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS]
        assert [l.precision for l in net.layers] == [None, "float32", "float32"]
        assert "2 layers pinned" in mode
    config = FakeConfig()
    trt_compat.set_workspace(trt, config, 1 << 30)
    assert config.pools == {"workspace": 1 << 30}


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_device_memory(version):
    trt, engine = fake_trt(version), FakeEngine(version)
    ctx = trt_compat.create_context(trt, engine, shared_memory=True)
    trt_compat.set_device_memory(ctx, 0xABC, trt_compat.device_memory_size(engine))
    if engine.v >= (10, 1):
        assert engine.calls == [("create", "user")]
        assert ctx.set == (0xABC, 80) and ctx.device_memory is None
    else:
        assert engine.calls == [("create_without",)]
        assert ctx.device_memory == 0xABC
        assert trt_compat.device_memory_size(engine) == 100
    assert trt_compat.io_tensors(trt, engine) == [("sample", True), ("latent", False)]


def test_strongly_typed_refused_where_missing():
    trt = fake_trt("8.6.2")
    with pytest.raises(RuntimeError, match="strongly typed"):
        trt_compat.network_flags(trt, True)


def test_version_tag_and_parse():
    assert trt_compat.version_tag(fake_trt("10.14.1")) == "trt10.14"
    calls = []
    parser = SimpleNamespace(parse_from_file=lambda p: calls.append(("file", p)) or True, parse=lambda b, p: calls.append(("bytes", p)) or True)
    assert trt_compat.parse_onnx(parser, "/x/model.onnx")
    assert trt_compat.parse_onnx(parser, "/x/model.onnx", b"proto")
    assert calls == [("file", "/x/model.onnx"), ("bytes", "/x/model.onnx")]
