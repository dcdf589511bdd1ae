"""Per-target ONNX checks: hand-made graphs, the exported toy graphs, version mapping, the table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from swiftbrush_export import trt_targets
from swiftbrush_export.trt_targets import PARSERS, TARGETS, check_model, get_target, target_for_tensorrt_version
from swiftbrush_runtime.errors import InvalidArgumentError

GENERATOR = Path(__file__).parent / "trt_ops" / "make_table.py"


def _model(nodes: list, inputs: list, outputs: list, opset: int = 17, initializers: list = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _clip_pooler_argmax(opset: int = 17) -> onnx.ModelProto:
    """CLIP's pooler index: Equal(ids, eos) -> Cast(INT32) -> ArgMax, as optimum exports it."""
    eos = helper.make_tensor("eos", TensorProto.INT64, [], [2])
    return _model(
        [
            helper.make_node("Equal", ["ids", "eos"], ["is_eos"], name="/text_model/Equal"),
            helper.make_node("Cast", ["is_eos"], ["is_eos_i32"], name="/text_model/Cast", to=TensorProto.INT32),
            helper.make_node("ArgMax", ["is_eos_i32"], ["index"], name="/text_model/ArgMax", axis=-1, keepdims=0),
        ],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 77])],
        [helper.make_tensor_value_info("index", TensorProto.INT64, [1])],
        opset,
        [eos],
    )


def _layernorm(opset: int = 17) -> onnx.ModelProto:
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [8], [1.0] * 8)
    return _model(
        [helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln", axis=-1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        opset,
        [scale],
    )


def test_argmax_on_int32_refused_for_jetpack5_only():
    model = _clip_pooler_argmax()
    problems = check_model(model, "jetpack5")
    assert len(problems) == 1, problems
    assert all(word in problems[0] for word in ("ArgMax", "INT32", "jetpack5", "/text_model/ArgMax")), problems
    for target in ("jetpack6.0", "jetpack6", "desktop", "rtx"):
        assert check_model(model, target) == [], target


def test_argmax_input_types_on_jetpack5():
    """Float input passes; INT64 is refused too, as 8.5 casts INT64 down to INT32 first."""

    def argmax_of(elem: int) -> onnx.ModelProto:
        return _model(
            [helper.make_node("ArgMax", ["x"], ["i"], name="am", axis=-1)],
            [helper.make_tensor_value_info("x", elem, [2, 8])],
            [helper.make_tensor_value_info("i", TensorProto.INT64, [2, 1])],
        )

    assert check_model(argmax_of(TensorProto.FLOAT), "jetpack5") == []
    assert check_model(argmax_of(TensorProto.FLOAT16), "jetpack5") == []
    (problem,) = check_model(argmax_of(TensorProto.INT64), "jetpack5")
    assert "INT64" in problem and "ArgMax" in problem
    assert check_model(argmax_of(TensorProto.INT64), "jetpack6.0") == []


def test_layernorm_needs_jetpack6():
    model = _layernorm()
    (problem,) = check_model(model, "jetpack5")
    assert "LayerNormalization" in problem and "jetpack5" in problem and "opset 16" in problem
    for target in ("jetpack6.0", "jetpack6", "desktop", "rtx"):
        assert check_model(model, target) == [], target


def test_unknown_and_foreign_ops_refused_everywhere():
    model = _model(
        [
            helper.make_node("Frobnicate", ["x"], ["h"], name="frob"),
            helper.make_node("FusedGelu", ["h"], ["y"], name="gelu", domain="com.microsoft"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
    )
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for target in TARGETS:
        problems = check_model(model, target)
        assert len(problems) == 2, (target, problems)
        assert "Frobnicate" in problems[0] and "operator list" in problems[0] and target in problems[0]
        assert "com.microsoft::FusedGelu" in problems[1] and target in problems[1]


def test_op_marked_unsupported():
    """A row marked N refuses the op: Hardmax is N in 8.6's table, Y from 9.2 on."""
    model = _model(
        [helper.make_node("Hardmax", ["x"], ["y"], name="hm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
    )
    assert "not supported" in check_model(model, "jetpack6.0")[0]
    assert check_model(model, "jetpack6") == []


def test_opset_above_the_target_maximum():
    def relu(opset: int) -> onnx.ModelProto:
        return _model(
            [helper.make_node("Relu", ["x"], ["y"], name="r")],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            opset,
        )

    (problem,) = check_model(relu(18), "jetpack6.0")
    assert "opset 18" in problem and "up to 17" in problem and "--opset 17" in problem
    assert check_model(relu(17), "jetpack6.0") == []
    assert len(check_model(relu(21), "jetpack6")) == 1  # 10.3: up to 20
    assert check_model(relu(21), "desktop") == []
    assert len(check_model(relu(8), "desktop")) == 1  # 10.x: from opset 9


def test_types_from_subgraphs_and_without_inference():
    """An If branch is checked too; a graph input's declared type is enough."""
    then = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["i"], name="inner_argmax", axis=-1)], "then", [],
        [helper.make_tensor_value_info("i", TensorProto.INT64, [2, 1])],
    )
    other = helper.make_graph(
        [helper.make_node("ArgMin", ["x"], ["j"], name="inner_argmin", axis=-1)], "else", [],
        [helper.make_tensor_value_info("j", TensorProto.INT64, [2, 1])],
    )
    model = _model(
        [helper.make_node("If", ["c"], ["o"], name="if", then_branch=then, else_branch=other)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.INT32, [2, 8])],
        [helper.make_tensor_value_info("o", TensorProto.INT64, [2, 1])],
    )
    problems = check_model(model, "jetpack5")
    assert sorted(p.split(" node")[0] for p in problems) == ["ArgMax", "ArgMin"], problems


def test_exported_toy_graphs(onnx_fp32: Path, onnx_fp16: Path):
    """Today's exports pass every target from JetPack 6.0 on. On JetPack 5 the only
    problems are the fused LayerNorm (text encoder and UNet, from opset 17) and the
    text encoder's pooler ArgMax on INT32."""
    for root in (onnx_fp32, onnx_fp16):
        for graph in ("text_encoder", "unet", "vae_decoder"):
            model = onnx.load(str(root / graph / "model.onnx"))
            for target in ("jetpack6.0", "jetpack6", "desktop", "rtx"):
                assert check_model(model, target) == [], (root.name, graph, target)
            ops = {p.split(" node")[0] for p in check_model(model, "jetpack5")}
            assert ops <= {"LayerNormalization", "ArgMax"}, (root.name, graph, ops)
            opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            assert ("LayerNormalization" in ops) == (opset >= 17 and graph != "vae_decoder"), (root.name, graph, opset, ops)


def test_target_for_tensorrt_version():
    cases = {"8.5.2.2": "jetpack5", "8.6.2.3": "jetpack6.0", "9.3.0": "jetpack6.0", "10.0.1": "jetpack6",
             "10.3.0.30": "jetpack6", "10.14.1": "jetpack6", "10.15.1": "desktop", "11.0.0": "desktop"}
    for version, target in cases.items():
        assert target_for_tensorrt_version(version, "tensorrt") == target, version
    assert target_for_tensorrt_version("1.7.1.116", "tensorrt-rtx") == "rtx"
    with pytest.raises(InvalidArgumentError, match="tensorrt-rtx"):
        target_for_tensorrt_version("1.7.1", "tensorrt")  # an RTX version given as TensorRT
    with pytest.raises(InvalidArgumentError, match="older than every target"):
        target_for_tensorrt_version("8.4.1", "tensorrt")
    with pytest.raises(InvalidArgumentError, match="not a version"):
        target_for_tensorrt_version("latest", "tensorrt")
    with pytest.raises(InvalidArgumentError, match="backend"):
        target_for_tensorrt_version("10.3", "onnxruntime")


def test_targets_and_errors():
    assert {t.max_opset for t in TARGETS.values()} == {17, 20, 24}
    for t in TARGETS.values():
        assert t.tensorrt in PARSERS and t.default_opset <= t.max_opset
    assert TARGETS["jetpack5"].default_opset == 16  # 8.5 has no LayerNormalization
    with pytest.raises(InvalidArgumentError, match="jetpack5, jetpack6.0, jetpack6, desktop, rtx"):
        check_model(_layernorm(), "jetson")
    assert get_target("rtx").tensorrt == get_target("desktop").tensorrt


def _generator():
    spec = importlib.util.spec_from_file_location("make_table", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_is_the_generator_output():
    """The block between the markers is exactly what make_table.py renders (no hand edits)."""
    gen = _generator()
    source = Path(trt_targets.__file__).read_text()
    block = source[source.index(gen.BEGIN): source.index(gen.END) + len(gen.END)]
    assert gen.committed_tables(source) == PARSERS
    assert gen.render(PARSERS) == block
    assert PARSERS["8.5"]["ops"]["ArgMax"] == "FP32 FP16" and PARSERS["8.6"]["ops"]["ArgMax"] == "FP32 FP16 INT32"
    assert PARSERS["8.5"]["ops"]["LayerNormalization"] is None
    assert PARSERS["8.5"]["casts"] == {"INT64": "INT32", "DOUBLE": "FP32"} and "INT64" not in PARSERS["10.3"]["casts"]


def test_generator_parses_operators_md():
    gen = _generator()
    text = """# Supported ONNX Operators

TensorRT 9.9 supports operators in the inclusive range of opset 9 to opset 21.

> Note: TensorRT will attempt to cast DOUBLE down to FLOAT.

| Operator | Supported | Supported Types | Restrictions |
|----------|-----------|-----------------|--------------|
""" + "\n".join(f"| Op{i} | Y | FP32, FP16 |" for i in range(100)) + """
| ArgMax                    | Y          | FP32, FP16, BF16, INT32, INT64 |
| ConstantOfShape           | Y          | FP32, INF64, , BOOL | `value` restriction
| BitShift                  | N          |
| NonMaxSuppression         | Y [EXPERIMENTAL] | FP32 | padded
"""
    table = gen.parse(text)
    assert (table["opset_min"], table["opset_max"], table["casts"]) == (9, 21, {"DOUBLE": "FP32"})
    assert table["ops"]["ArgMax"] == "FP32 FP16 BF16 INT32 INT64"
    assert table["ops"]["ConstantOfShape"] == "FP32 INT64 BOOL"
    assert table["ops"]["BitShift"] is None and table["ops"]["NonMaxSuppression"] == "FP32"
    old = gen.parse("TensorRT 8.5 supports operators up to Opset 17.\n> cast down INT64 to INT32 and DOUBLE down to FLOAT\n"
                    + "\n".join(f"| Op{i} | Y | FP32 |" for i in range(100)))
    assert (old["opset_min"], old["opset_max"], old["casts"]) == (None, 17, {"INT64": "INT32", "DOUBLE": "FP32"})


def test_importable_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from onnx import TensorProto, helper\n"
        "from swiftbrush_export.trt_targets import check_model\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', "
        "[helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])], [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])])\n"
        "print(check_model(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), 'jetpack5'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
