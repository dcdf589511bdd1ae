"""ONNX export: layout, manifest, parity with the torch student, fp16 safety, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tiny_models import optimum_and_runtime_images
from swiftbrush_export.onnx_export import export_onnx, one_step_module
from swiftbrush_export.student import load_student
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.manifest import read_manifest


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_layout_and_manifest(onnx_fp32: Path, tiny_student: Path):
    for f in ("text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "tokenizer/tokenizer.json",
              "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae_decoder/config.json",
              "text_encoder/config.json", "onestep.json"):
        assert (onnx_fp32 / f).is_file(), f
    m = read_manifest(onnx_fp32, "onnx")
    assert m["dtype"] == "fp32" and m["opset"] == 17 and m["dynamic"] is True
    assert m["batch"] == {"min": 1, "opt": 2, "max": 2}
    assert m["source"]["student"] == str(tiny_student.resolve())
    assert m["graphs"]["unet"]["inputs"]["sample"]["max"] == [2, 4, 16, 16]
    assert all(p in m["files"] for p in ("unet/model.onnx", "tokenizer/tokenizer.json"))
    # the export carries the student's one-step config unchanged, in the folder and in the manifest
    student_onestep = json.loads((tiny_student / "onestep.json").read_text())
    assert json.loads((onnx_fp32 / "onestep.json").read_text()) == m["onestep"] == student_onestep


def test_fp32_parity_per_component_and_end_to_end(onnx_fp32: Path, tiny_student: Path):
    import torch

    student = load_student(tiny_student)
    pipe = student.pipeline
    rng = np.random.default_rng(0)
    ids = pipe.tokenizer(["a red circle on a blue background", ""], padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids.astype(np.int32)
    z = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
    with torch.no_grad():
        emb_t = pipe.text_encoder(torch.from_numpy(ids).long())[0].numpy()
        lat_t = one_step_module(student)(torch.from_numpy(z), torch.from_numpy(emb_t)).numpy()
        img_t = pipe.vae.decode(torch.from_numpy(lat_t)).sample.numpy()
    emb = _session(onnx_fp32 / "text_encoder/model.onnx").run(None, {"input_ids": ids})[0]
    lat = _session(onnx_fp32 / "unet/model.onnx").run(None, {"sample": z, "encoder_hidden_states": emb_t, "timestep": np.zeros((), np.int64)})[0]
    img = _session(onnx_fp32 / "vae_decoder/model.onnx").run(None, {"latent_sample": lat_t})[0]
    errs = {"text_encoder": _rel(emb, emb_t), "unet": _rel(lat, lat_t), "vae_decoder": _rel(img, img_t)}
    assert max(errs.values()) < 1e-4, errs
    # end to end through the runtime's two backends, same seed
    from swiftbrush_runtime import Generator

    prompts = ["a red circle on a blue background", ""]
    a = Generator.load(onnx_fp32, backend="onnxruntime").generate(prompts, seed=5, output="float")
    b = Generator.load(tiny_student, backend="torch").generate(prompts, seed=5, output="float")
    assert _rel(a, b) < 1e-4


def test_fp16_image_within_2_of_255(onnx_fp16: Path, tiny_student: Path):
    from swiftbrush_runtime import Generator

    prompts = ["a red circle on a blue background", "green square", ""]
    a = Generator.load(onnx_fp16, backend="onnxruntime").generate(prompts, seed=1, output="float")
    b = Generator.load(tiny_student, backend="torch").generate(prompts, seed=1, output="float")
    assert np.isfinite(a).all()
    err = np.abs(np.clip(a, -1, 1) - np.clip(b, -1, 1)).max() / 2  # on the [0, 1] scale
    assert err < 2 / 255, err


def test_fp16_graph_keeps_precision_sensitive_ops_fp32(onnx_fp16: Path):
    import onnx

    m = read_manifest(onnx_fp16, "onnx")
    assert m["dtype"] == "fp16" and m["dynamic"] is False
    # shape inference types every intermediate, so a tensor missing below is a failure, not a pass
    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_fp16 / "unet/model.onnx")), strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    norms = [n for n in model.graph.node if n.op_type in ("InstanceNormalization", "LayerNormalization", "Softmax")]
    assert norms
    for n in norms:
        assert types[n.output[0]] == onnx.TensorProto.FLOAT, n.name
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    for v in list(model.graph.input) + list(model.graph.output):  # fp32 I/O
        assert v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), v.name
    x0 = [n for n in model.graph.node if n.name.startswith("/x0/") and n.op_type in ("Sub", "Mul")]
    assert x0 and all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in x0), [n.name for n in x0]
    # "auto" keeps the text encoder fp32 (its fp16 rounding alone moves a toy image by over 1/255)
    assert m["fp32_layers"]["text_encoder"] == ["*"]
    text = onnx.load(str(onnx_fp16 / "text_encoder/model.onnx"))
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in text.graph.initializer)


def test_fp16_unet_policy_converts_the_text_encoder(tiny_student: Path, tmp_path: Path):
    import onnx

    from swiftbrush_export.onnx_export import export_onnx

    m = export_onnx(tiny_student, tmp_path / "unet", dtype="fp16", fp32_layers="unet")
    assert "text_encoder" not in m["fp32_layers"] and "/unet/conv_in" in m["fp32_layers"]["unet"]
    text = onnx.load(str(tmp_path / "unet" / "text_encoder/model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in text.graph.initializer)


@pytest.mark.parametrize("folder, batch", [("onnx_fp32", 3), ("onnx_fp16", 1)])
def test_optimum_pipeline_makes_the_runtime_image(folder: str, batch: int, request: pytest.FixtureRequest):
    """optimum's own ORTStableDiffusionPipeline on the folder, called as for SD-Turbo, gives the runtime's image.

    onnx_fp32 is a --dynamic export with --batch 2: optimum runs 3 prompts in one call, the runtime in two.
    """
    prompts = ["a red circle on a blue background", "green square", ""][:batch]
    pipe, images, ours = optimum_and_runtime_images(request.getfixturevalue(folder), prompts, seed=4)
    assert type(pipe.unet).__name__ == "ORTUnet"
    assert images.shape == ours.shape == (batch, 64, 64, 3)
    assert np.abs(images - ours).max() < 1e-5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=60), "multiple of 8"),
        (dict(width=0), "multiple of 8"),
        (dict(dtype="bf16"), "--dtype"),
        (dict(opset=13), "--opset 13"),
        (dict(batch=0), "--batch"),
        (dict(dtype="fp16", fp32_layers="up_blocks"), "--fp32-layers"),
    ],
)
def test_bad_arguments(tiny_student: Path, tmp_path: Path, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        export_onnx(tiny_student, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_non_empty_out_refused(tiny_student: Path, tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not empty"):
        export_onnx(tiny_student, tmp_path / "out")


def test_not_a_student_and_changed_student(tiny_student: Path, onnx_fp32: Path, tmp_path: Path):
    with pytest.raises(InvalidModelError, match="expected student|not a student"):
        export_onnx(onnx_fp32, tmp_path / "a")
    with pytest.raises(InvalidModelError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "b")
    copy = tmp_path / "student"
    shutil.copytree(tiny_student, copy)
    cfg = copy / "unet" / "config.json"
    cfg.write_text(cfg.read_text().replace("\n", "\n ", 1))
    with pytest.raises(InvalidModelError, match="does not match its manifest"):
        export_onnx(copy, tmp_path / "c")
    (copy / "onestep.json").unlink()
    with pytest.raises(InvalidModelError, match="onestep.json"):
        export_onnx(copy, tmp_path / "d")
    assert not any(p.name in ("a", "b", "c", "d") for p in tmp_path.iterdir())


def test_failed_export_leaves_nothing_finished(tiny_student: Path, tmp_path: Path, monkeypatch):
    import swiftbrush_export.onnx_export as mod

    def boom(*a, **k):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(mod, "_export_unet", boom)
    with pytest.raises(RuntimeError):
        export_onnx(tiny_student, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(tmp_path.iterdir())


def test_taesd_decoder(tiny_student: Path, tmp_path: Path):
    from swiftbrush_runtime import Generator

    m = export_onnx(tiny_student, tmp_path / "t", decoder="taesd", batch=2)
    assert m["decoder"] == "taesd" and {"vae_decoder", "taesd_decoder"} <= set(m["graphs"])
    prompts = ["a red circle on a blue background", ""]
    ort = Generator.load(tmp_path / "t")
    assert ort.backend.decoder == "taesd_decoder"
    a = ort.generate(prompts, seed=2, output="float")
    b = Generator.load(tiny_student, backend="torch", decoder="taesd").generate(prompts, seed=2, output="float")
    assert _rel(a, b) < 1e-4
    vae = Generator.load(tmp_path / "t", decoder="vae").generate(prompts, seed=2, output="float")
    ref = Generator.load(tiny_student, backend="torch").generate(prompts, seed=2, output="float")
    assert _rel(vae, ref) < 1e-4
    with pytest.raises(InvalidArgumentError, match="AutoencoderTiny"):
        export_onnx(tiny_student, tmp_path / "u", decoder="taesd", taesd=tmp_path / "nothing")


def test_opset16_fp16_for_jetpack5(tiny_student: Path, tmp_path: Path):
    """Opset 16 (LayerNorm decomposed, for TensorRT 8.5) converts to fp16 and stays within 2/255."""
    from swiftbrush_runtime import Generator

    m = export_onnx(tiny_student, tmp_path / "o16", dtype="fp16", opset=16, fp32_layers="none")
    assert m["fp32_layers"] == {"unet": ["/x0/"]}
    assert all("LayerNormalization" not in g["ops"] and g["optimized"] for g in m["graphs"].values())
    a = Generator.load(tmp_path / "o16").generate(["a red circle on a blue background", ""], seed=0, output="float")
    b = Generator.load(tiny_student, backend="torch").generate(["a red circle on a blue background", ""], seed=0, output="float")
    assert np.isfinite(a).all() and np.abs(np.clip(a, -1, 1) - np.clip(b, -1, 1)).max() / 2 < 2 / 255
