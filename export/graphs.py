"""One ONNX graph after export: clean up, convert to fp16, check for TensorRT, save.

    swiftbrush export onnx --student DIR --out DIR --dtype fp16

`optimize` folds constants, removes dead nodes and infers shapes (onnxslim: one
pip package, pure Python over onnx, and it keeps the standard ONNX domain, so the
result stays parseable by TensorRT). `to_fp16` converts weights and activations to
fp16 with onnxconverter-common's converter, keeping the inputs and outputs fp32 and
every precision-sensitive op in fp32 (see FP32_OPS). `check_tensorrt_ops` refuses a
graph the TensorRT ONNX parser would not take. `save` writes external data past
2 GB, as protobuf cannot hold more.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from swiftbrush_runtime.errors import InvalidArgumentError, SwiftBrushError

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31  # protobuf's hard 2 GB message limit
EXTERNAL_DATA = "model.onnx_data"  # optimum's name for a graph's external weights
# 17: TRT 8.6 (JetPack 6.0) and up, fused LayerNormalization; 19+: TRT 10. 16 writes
# LayerNorm as ReduceMean/Pow/Sqrt (all kept fp32), for parsers without the fused op
# (TensorRT 8.5 on JetPack 5 predates INormalizationLayer).
SUPPORTED_OPSETS = (16, 17, 18, 19, 20, 21)

# Kept in fp32 inside fp16 graphs. Normalisations reduce over many values (mean of
# squares overflows fp16 at |x| > 256), softmax exponentiates, and Pow/ReduceMean/Sqrt
# are what LayerNorm and GroupNorm decompose into when an exporter does not emit the
# fused op. Known sources: fp16 black images in SD2.x attention (TensorRT #3140,
# #2943, diffusers #1083). Resize/Range stay fp32 as onnxconverter-common's defaults.
FP32_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Erf",
    "Exp",
    "Resize",
    "Upsample",
    "Range",
    "CumSum",
    "Min",
    "Max",
    "TopK",
)

# Ops the TensorRT ONNX parser (onnx-tensorrt 8.5 .. 10.x) imports that exported SD
# graphs use; a graph with any other op is refused before an engine build tries it.
TENSORRT_OPS = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Einsum Elu Equal Erf Exp Expand
    Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool Greater GreaterOrEqual
    GroupNormalization HardSigmoid Identity If InstanceNormalization LayerNormalization LeakyRelu
    Less LessOrEqual Log MatMul Max MaxPool Mean Min Mod Mul Neg Not Or Pad Pow PRelu Range
    Reciprocal ReduceL2 ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize
    ScatterElements ScatterND Shape Sigmoid Sign Sin Size Slice Softmax Softplus SpaceToDepth Split
    Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)


class GraphError(SwiftBrushError):
    """An ONNX graph that cannot be used: unsupported ops or opset, missing data."""


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise InvalidArgumentError(
            f"--opset {opset} is not supported; use one of {', '.join(map(str, SUPPORTED_OPSETS))} "
            "(or leave --opset out: --target picks 16 for JetPack 5's TensorRT 8.5 and 17 otherwise)"
        )
    return opset


def model_size(model: Any) -> int:
    """Bytes the model takes as one protobuf, weights included."""
    return int(model.ByteSize()) if _fits(model) else PROTOBUF_LIMIT + 1


def _fits(model: Any) -> bool:
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) if t.HasField("raw_data") else 0
        if total > PROTOBUF_LIMIT:
            return False
    return True


def load(path: Path) -> Any:
    """Load a graph with its external data (a missing data file is a clear GraphError)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=True)
    except (FileNotFoundError, onnx.checker.ValidationError) as e:
        what = getattr(e, "filename", None) or str(e).splitlines()[0]
        raise GraphError(f"{path} refers to external data that is missing ({what}); re-copy the whole ONNX directory") from None


def save(model: Any, path: Path) -> list[str]:
    """Write model.onnx, with weights in model.onnx_data when the graph passes 2 GB.

    Returns the file names written (relative to path's folder). With external data
    onnx moves the weights out of `model` in place (no second in-memory copy of a
    multi-GB graph): do not run `model` afterwards, reload it from `path`.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.parent / EXTERNAL_DATA
    if data.exists():
        data.unlink()
    if model_size(model) >= PROTOBUF_LIMIT:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=EXTERNAL_DATA, size_threshold=1024)
        return [path.name, EXTERNAL_DATA]
    onnx.save_model(model, str(path))
    return [path.name]


def optimize(model: Any) -> tuple[Any, bool]:
    """Constant folding, dead-node removal and shape inference (onnxslim).

    Returns (model, optimized). The clean-up is an optimisation, not a requirement:
    if onnxslim fails on a graph (it is the least exercised step on multi-GB
    graphs), the unoptimised graph is kept, a warning logged and the manifest says so.
    """
    import onnxslim

    before = len(model.graph.node)
    try:
        slimmed = onnxslim.slim(model)
    except Exception as e:  # noqa: BLE001 - any failure here leaves a valid, unoptimised graph
        logger.warning("onnxslim failed (%s: %s); keeping the graph unoptimised", type(e).__name__, e)
        return model, False
    if slimmed is None:
        return model, False
    logger.info("onnxslim: %d -> %d nodes", before, len(slimmed.graph.node))
    return slimmed, True


def to_fp16(model: Any, keep_fp32_nodes: Iterable[str] = (), fp32_ops: Iterable[str] = FP32_OPS) -> Any:
    """fp16 weights and activations; fp32 I/O, fp32 for `fp32_ops` and the named nodes.

    Runs on CPU (no GPU needed, unlike optimum's fp16 export). Values outside fp16's
    range are clamped (±1e4 for weights), and Cast nodes are placed at each fp32
    island's borders.
    """
    from onnxconverter_common.float16 import convert_float_to_float16

    import onnx

    fp32_ops = tuple(fp32_ops)
    # The converter retypes a Cast's output to fp16 but leaves its `to=FLOAT`, which makes
    # the graph invalid; keeping such Casts fp32 lets it put a Cast to fp16 after them.
    # (Unslimmed graphs have them, e.g. the UNet's timestep path when onnxslim cannot
    # fold a graph over 2 GB.)
    casts_to_fp32 = [n.name for n in model.graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    keep = tuple(keep_fp32_nodes) + tuple(casts_to_fp32)
    _unshare_initializers(model, set(fp32_ops), set(keep))
    # Drop stale shape annotations (onnxslim's): the converter re-infers them, and a
    # stale fp32 entry beside its new fp16 one makes the graph invalid.
    del model.graph.value_info[:]
    big = model_size(model) >= PROTOBUF_LIMIT
    if big:  # onnx.shape_inference.infer_shapes refuses protos over 2 GB: infer without it
        model = _infer_shapes_big(model)
    with warnings.catch_warnings():  # one warning per clamped tiny weight: thousands of lines
        warnings.simplefilter("ignore", UserWarning)
        return convert_float_to_float16(
            model,
            keep_io_types=True,
            disable_shape_infer=big,
            op_block_list=list(fp32_ops),
            node_block_list=list(keep),
        )


def _unshare_initializers(model: Any, fp32_ops: set[str], fp32_nodes: set[str]) -> None:
    """Give fp16 consumers their own copy of a weight an fp32 island also reads.

    Deduplication (onnxslim merges equal tensors, e.g. zero biases) can make one
    initializer feed both a LayerNorm and a Gemm; the converter then keeps it fp32
    for both and the Gemm gets mixed input types, which ONNX Runtime refuses.
    """
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for name in n.input:
            if name in inits:
                consumers.setdefault(name, []).append(n)
    for name, nodes in consumers.items():
        blocked = [n.op_type in fp32_ops or n.name in fp32_nodes for n in nodes]
        if all(blocked) or not any(blocked):
            continue
        copy = type(inits[name])()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp16"
        model.graph.initializer.append(copy)
        for n, b in zip(nodes, blocked):
            if not b:
                for i, x in enumerate(n.input):
                    if x == name:
                        n.input[i] = copy.name


def _infer_shapes_big(model: Any) -> Any:
    import tempfile

    import onnx
    from onnx.shape_inference import infer_shapes_path

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="in.data")
        infer_shapes_path(str(src), str(dst))
        return onnx.load(str(dst), load_external_data=True) if os.path.exists(dst) else model


def check_tensorrt_ops(model: Any, name: str) -> list[str]:
    """Refuse ops or domains the TensorRT ONNX parser does not import; return the op list."""
    ops = sorted({n.op_type for n in model.graph.node})
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    unknown = [op for op in ops if op not in TENSORRT_OPS]
    if foreign or unknown:
        raise GraphError(f"{name}: ops TensorRT's ONNX parser does not import: {', '.join(foreign + unknown)}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset not in SUPPORTED_OPSETS:
        raise GraphError(f"{name}: opset {opset} is outside what TensorRT parses ({SUPPORTED_OPSETS[0]}..{SUPPORTED_OPSETS[-1]})")
    return ops


def io_signature(model: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Input and output names, dtypes and shapes (symbolic dims as strings)."""
    import onnx

    def describe(values: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out[v.name] = {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}
        return out

    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return {"inputs": describe(inputs), "outputs": describe(model.graph.output)}


def add_unused_input(model: Any, name: str, dtype: str) -> None:
    """Declare a scalar graph input nothing reads (ONNX allows it; TensorRT builds strip it)."""
    import numpy as np
    import onnx

    if any(i.name == name for i in model.graph.input):
        return
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, []))


def float_arg_reductions(model: Any) -> list[str]:
    """Feed every ArgMax/ArgMin on integers a float copy of its input; returns the nodes changed.

    CLIP's pooler computes Equal(ids, eos) -> Cast(INT32) -> ArgMax, and TensorRT 8.5's
    ONNX parser (JetPack 5) refuses ArgMax on INT32. The values are 0/1 flags or token
    ids (< 2**24), so the float argmax picks the same index.
    """
    import onnx

    ints = {onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.BOOL}
    types = _value_types(model)
    changed = []
    for node in list(model.graph.node):
        if node.op_type not in ("ArgMax", "ArgMin") or types.get(node.input[0]) not in ints:
            continue
        as_float = f"{node.input[0]}__float_for_{node.name or node.op_type}"
        cast = onnx.helper.make_node("Cast", [node.input[0]], [as_float], name=f"{node.name}_input_to_float", to=onnx.TensorProto.FLOAT)
        index = list(model.graph.node).index(node)
        model.graph.node.insert(index, cast)
        node.input[0] = as_float
        changed.append(node.name)
    return changed


def _value_types(model: Any) -> dict[str, int]:
    """Element type of each named value: inputs, initializers, annotated values, and Cast outputs."""
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for n in model.graph.node:
        if n.op_type == "Cast":
            types[n.output[0]] = _cast_to(n)
    return types


def fp32_outputs(model: Any) -> Any:
    """Make every fp16 graph output fp32 again with a final Cast.

    The converter's keep_io_types misses outputs produced by an fp32 island followed
    by its own cast back to fp16; the runtime always reads fp32.
    """
    import onnx

    f16 = onnx.TensorProto.FLOAT16
    _rewire_output_readers(model)
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != f16:
            continue
        inner = out.name + "_fp16"
        for n in model.graph.node:
            for i, name in enumerate(n.output):
                if name == out.name:
                    n.output[i] = inner
            for i, name in enumerate(n.input):
                if name == out.name:
                    n.input[i] = inner
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], name=out.name + "_cast_fp32", to=onnx.TensorProto.FLOAT))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model


def _rewire_output_readers(model: Any) -> None:
    """Nodes inside the graph that read an fp32 graph output must read its fp16 source.

    With keep_io_types the converter casts an fp16 result to fp32 under the output's
    name, but a node that also reads that value (CLIP's pooler reads
    last_hidden_state) keeps the name while being typed for fp16: the graph then
    fails type checking. Such readers are pointed at the Cast's fp16 input.
    """
    import onnx

    f32 = onnx.TensorProto.FLOAT
    outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    fp32_typed = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == f32}
    for n in model.graph.node:
        if n.op_type == "Cast" or not any(o not in fp32_typed for o in n.output):
            continue  # casts and fp32 nodes read fp32 fine
        for i, name in enumerate(n.input):
            cast = producer.get(name)
            if name in outputs and cast is not None and cast.op_type == "Cast" and _cast_to(cast) == f32:
                n.input[i] = cast.input[0]


def collapse_cast_round_trips(model: Any) -> Any:
    """Cast(float32) of Cast(float16) of an fp32 value -> the value itself.

    With fp32 graph inputs the converter casts each input to fp16 once and casts it
    back before fp32 islands; the x0 tail would then see the noise rounded to fp16,
    an error that the tail's 1/sqrt(alpha_T) (~15x) multiplies, and an fp32 island's
    output would be rounded on its way to an fp32 graph output. Rewiring the fp32
    consumers to the original value keeps it exact.
    """
    import onnx

    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    fp32_values = {v.name for v in list(model.graph.input) + list(model.graph.value_info) if v.type.tensor_type.elem_type == f32}
    changed = True
    while changed:
        changed = False
        nodes = list(model.graph.node)
        producer = {o: n for n in nodes for o in n.output}
        fp32_values |= {n.output[0] for n in nodes if n.op_type == "Cast" and _cast_to(n) == f32}
        outputs = {o.name for o in model.graph.output}
        for n in nodes:
            if n.op_type != "Cast" or _cast_to(n) != f32:
                continue
            up = producer.get(n.input[0])
            if up is None or up.op_type != "Cast" or _cast_to(up) != f16 or up.input[0] not in fp32_values:
                continue
            src, dst = up.input[0], n.output[0]
            if dst in outputs:  # keep the output's name: the cast becomes an Identity
                n.op_type = "Identity"
                del n.attribute[:]
                n.input[0] = src
            else:
                for m in nodes:
                    for i, name in enumerate(m.input):
                        if name == dst:
                            m.input[i] = src
                model.graph.node.remove(n)
            changed = True
        _remove_dead_nodes(model)
    return model


def _remove_dead_nodes(model: Any) -> None:
    used = {o.name for o in model.graph.output}
    for n in reversed(list(model.graph.node)):
        if not any(o in used for o in n.output):
            model.graph.node.remove(n)
        else:
            used.update(n.input)


def _cast_to(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), -1)
