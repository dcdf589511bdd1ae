"""graphs.py on small hand-made graphs: fp16 islands, cast clean-up, external data, op checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from swiftbrush_export import graphs


def _layernorm_model(width: int = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w")
    zero = numpy_helper.from_array(np.zeros(width, np.float32), "zero")  # shared by LN and Add
    one = numpy_helper.from_array(np.ones(width, np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "zero"], ["h2"], name="bias"),
        helper.make_node("LayerNormalization", ["h2", "one", "zero"], ["n"], name="ln", axis=-1),
        helper.make_node("Softmax", ["n"], ["s"], name="sm", axis=-1),
        helper.make_node("Sub", ["x", "s"], ["y"], name="/x0/Sub"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, width])],
        [w, zero, one],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fp16_keeps_islands_fp32_and_io_fp32():
    model = _layernorm_model()
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    ref = _run(model, x)
    half = graphs.collapse_cast_round_trips(graphs.fp32_outputs(graphs.to_fp16(model, keep_fp32_nodes=["/x0/Sub"])))
    onnx.checker.check_model(half)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    by_name = {i.name: i for i in half.graph.initializer}
    assert by_name["w"].data_type == TensorProto.FLOAT16
    sub = next(n for n in half.graph.node if n.name == "/x0/Sub")
    assert "x" in sub.input, "the fp32 tail must read the exact fp32 input, not an fp16 round trip"
    out = _run(half, x)
    assert np.isfinite(out).all() and np.abs(out - ref).max() < 1e-2


def test_check_tensorrt_ops_refuses_foreign_ops_and_opsets():
    model = _layernorm_model()
    assert "LayerNormalization" in graphs.check_tensorrt_ops(model, "g")
    model.graph.node.append(helper.make_node("FusedGemm", ["x", "w"], ["z"], domain="com.microsoft"))
    with pytest.raises(graphs.GraphError, match="com.microsoft::FusedGemm"):
        graphs.check_tensorrt_ops(model, "g")
    old = _layernorm_model()
    old.opset_import[0].version = 13
    with pytest.raises(graphs.GraphError, match="opset 13"):
        graphs.check_tensorrt_ops(old, "g")


def test_external_data_past_the_limit(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(graphs, "PROTOBUF_LIMIT", 256)  # pretend 256 bytes is protobuf's limit
    model = _layernorm_model(width=32)
    x = np.ones((2, 32), np.float32)
    ref = _run(model, x)
    files = graphs.save(model, tmp_path / "g" / "model.onnx")
    assert files == ["model.onnx", graphs.EXTERNAL_DATA]
    assert (tmp_path / "g" / graphs.EXTERNAL_DATA).stat().st_size >= 32 * 32 * 4
    np.testing.assert_allclose(_run(graphs.load(tmp_path / "g" / "model.onnx"), x), ref, rtol=1e-6)
    (tmp_path / "g" / graphs.EXTERNAL_DATA).unlink()
    with pytest.raises(graphs.GraphError, match="external data that is missing"):
        graphs.load(tmp_path / "g" / "model.onnx")


def test_unused_input_is_declared():
    """optimum's pipeline wants `timestep`; the engine build drops it from the parsed network (trt_compat.remove_unused_inputs)."""
    model = _layernorm_model()
    graphs.add_unused_input(model, "timestep", "int64")
    assert [i.name for i in model.graph.input] == ["x", "timestep"]


def test_fp16_keeps_casts_to_float_valid():
    """A Cast to FLOAT (the UNet's timestep path when onnxslim cannot fold a >2 GB graph) stays valid in fp16."""
    import onnxruntime as ort

    w = numpy_helper.from_array(np.array([0.5, 2.0], dtype=np.float32), "w")
    nodes = [
        helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT, name="/unet/time_proj/Cast"),
        helper.make_node("Mul", ["tf", "w"], ["m"], name="/unet/mul"),
        helper.make_node("Sin", ["m"], ["y"], name="/unet/sin"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [w])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    session = ort.InferenceSession(graphs.to_fp16(model).SerializeToString(), providers=["CPUExecutionProvider"])
    t = np.array([999, 3], dtype=np.int64)
    (y,) = session.run(None, {"t": t})
    np.testing.assert_allclose(y, np.sin(t * np.array([0.5, 2.0])), atol=2e-3)
