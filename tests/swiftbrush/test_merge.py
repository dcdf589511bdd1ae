"""`swiftbrush merge`: exact weights, a loadable student folder, and one-line refusals that write nothing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_checks import invoke, one_line_exit_2
from swiftbrush.errors import InvalidArgumentError, InvalidModelError
from swiftbrush.merge import merge_state_dicts, merge_students
from swiftbrush_runtime.manifest import read_manifest, write_manifest
from swiftbrush_runtime.onestep import ONESTEP, read_onestep, write_onestep
from tiny_models import make_tiny_student

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
TEACHER = {"teacher": "random-tiny", "teacher_fingerprint": "0123456789abcdef"}


def _restamp(folder: Path, **made_from) -> Path:
    """Rewrite a student's manifest (after its files were edited) with the writer distill uses."""
    write_manifest(folder, "student", made_from=made_from, onestep=read_onestep(folder / ONESTEP).to_json())
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("manifest.json"))
    return dst


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A and B: one teacher's parts, UNets from different seeds; `other` differs in everything (seed 1's own parts)."""
    root = tmp_path_factory.mktemp("merge")
    a = _restamp(make_tiny_student(root / "a", seed=0), **TEACHER)
    other = make_tiny_student(root / "other", seed=1)
    b = _copy(a, root / "b")
    shutil.copyfile(other / WEIGHTS, b / WEIGHTS)
    return {"root": root, "a": a, "b": _restamp(b, **TEACHER), "other": _restamp(other, **TEACHER)}


def _variant(students: dict[str, Path], name: str) -> Path:
    """A copy of B to edit; its manifest is rewritten by the caller after the edit."""
    out = students["root"] / name
    if out.exists():
        shutil.rmtree(out)
    return _copy(students["b"], out)


def test_merge_state_dicts_is_the_weighted_sum_in_float32():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g, dtype=torch.float64).half()}
    b = {"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g, dtype=torch.float64).half()}
    merged = merge_state_dicts(a, b, 0.3)
    assert torch.equal(merged["w"], 0.3 * a["w"] + (1 - 0.3) * b["w"])
    assert merged["h"].dtype == torch.float16  # stored as A stores it, computed in float32
    assert torch.equal(merged["h"], (0.3 * a["h"].float() + 0.7 * b["h"].float()).half())
    assert torch.equal(merge_state_dicts(a, b, 1.0)["w"], a["w"]) and torch.equal(merge_state_dicts(a, b, 0.0)["w"], b["w"])
    with pytest.raises(InvalidModelError, match="1 only in A \\(x\\)"):
        merge_state_dicts({**a, "x": a["w"]}, b, 0.5)
    with pytest.raises(InvalidModelError, match="w has shape \\(3, 4\\) in A and \\(4, 3\\) in B"):
        merge_state_dicts(a, {**b, "w": b["w"].T}, 0.5)
    for bad in (-0.1, 1.5, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="--weight must be a number in \\[0, 1\\]"):
            merge_state_dicts(a, b, bad)


def test_merge_gives_exactly_the_weighted_unet_and_a_loadable_student(students: dict[str, Path], tmp_path: Path):
    from diffusers import StableDiffusionPipeline

    from swiftbrush.student import OneStepPipeline
    from swiftbrush_export.student import check_student_dir

    a, b = students["a"], students["b"]
    lora = a.parent / "a-lora"  # a LoRA student's adapter stays with that student
    shutil.rmtree(lora, ignore_errors=True)
    _copy(a, lora)
    (lora / "student_lora").mkdir()
    (lora / "student_lora" / "adapter_config.json").write_text("{}")
    _restamp(lora, **TEACHER)

    out = tmp_path / "merged"
    result = invoke("merge", str(lora), str(b), "--weight", "0.25", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"student: {out}"

    wa, wb, merged = load_file(a / WEIGHTS), load_file(b / WEIGHTS), load_file(out / WEIGHTS)
    assert merged.keys() == wa.keys() and len(merged) > 100
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]  # different seeds (norms start at 1 and 0 in both)
    assert len(differ) > len(wa) // 2 and "conv_in.weight" in differ
    for name, tensor in merged.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, 0.25 * wa[name] + 0.75 * wb[name]), name

    manifest = read_manifest(out, "student", verify=True)
    assert manifest["made_from"] == {"merge": {"a": str(lora), "b": str(b), "weight": 0.25}, **TEACHER}
    assert read_onestep(out / ONESTEP) == read_onestep(a / ONESTEP)
    assert not (out / "student_lora").exists()
    for rel in read_manifest(a, "student", verify=False)["files"]:
        if rel not in (WEIGHTS, ONESTEP):
            assert (out / rel).read_bytes() == (a / rel).read_bytes(), rel
    check_student_dir(out)  # what `swiftbrush export onnx` checks first

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert torch.equal(pipe.unet.state_dict()["conv_in.weight"], merged["conv_in.weight"])
    image = pipe("a red circle on a blue background", num_inference_steps=1, guidance_scale=0.0, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    ours = OneStepPipeline.from_pretrained(out)("a red circle on a blue background", output_type="np").images  # what `swiftbrush eval` loads
    assert ours.shape == (1, 64, 64, 3)


def test_a_differing_guidance_scale_is_dropped_from_onestep(students: dict[str, Path], tmp_path: Path):
    b = _variant(students, "b-cfg")
    write_onestep(b, {**read_onestep(b / ONESTEP).to_json(), "guidance_scale": 4.5})
    _restamp(b, **TEACHER)
    merge_students(students["a"], b, 0.5, tmp_path / "m")
    onestep = read_onestep(tmp_path / "m" / ONESTEP)
    assert "guidance_scale" not in onestep.extra and onestep.extra["teacher"] == "random-tiny"


def _other_teacher(students, b):
    _restamp(b, teacher="random-tiny", teacher_fingerprint="fedcba9876543210")


def _unrecorded_other_teacher(students, b):  # no fingerprint on one side: the teacher names are compared
    _restamp(b, teacher="another-teacher")


def _no_teacher(students, b):
    write_onestep(b, {k: v for k, v in read_onestep(b / ONESTEP).to_json().items() if k != "teacher"})
    _restamp(b)


def _other_architecture(students, b):
    from diffusers import UNet2DConditionModel

    from swiftbrush.toy import models

    shutil.rmtree(b / "unet")
    UNet2DConditionModel(**{**models.UNET_CONFIG, "block_out_channels": (32, 64)}).save_pretrained(b / "unet", safe_serialization=True)
    _restamp(b, **TEACHER)


def _renamed_parameter(students, b):
    from safetensors.torch import save_file

    weights = load_file(b / WEIGHTS)
    weights["conv_in.weight_renamed"] = weights.pop("conv_in.weight")
    save_file(weights, str(b / WEIGHTS), metadata={"format": "pt"})
    _restamp(b, **TEACHER)


def _not_safetensors(students, b):
    (b / WEIGHTS).write_bytes(b"not a safetensors file")
    _restamp(b, **TEACHER)


def _onestep_field(**changes):
    def edit(students, b):
        write_onestep(b, {**read_onestep(b / ONESTEP).to_json(), **changes})
        _restamp(b, **TEACHER)

    return edit


def _other_vae(students, b):
    shutil.copyfile(students["other"] / "vae" / "diffusion_pytorch_model.safetensors", b / "vae" / "diffusion_pytorch_model.safetensors")
    _restamp(b, **TEACHER)


def _no_onestep(students, b):
    (b / ONESTEP).unlink()
    write_manifest(b, "student", made_from=TEACHER)


def _edited_after_writing(students, b):
    _restamp(b, **TEACHER)
    (b / "unet" / "config.json").write_text((b / "unet" / "config.json").read_text() + " ")


@pytest.mark.parametrize(
    "edit, words",
    [
        (_other_teacher, "distilled from different teachers"),
        (_unrecorded_other_teacher, "different teachers (random-tiny, another-teacher)"),
        (_no_teacher, "b-bad records no teacher"),
        (_other_architecture, "different UNet architectures: unet/config.json's block_out_channels"),
        (_renamed_parameter, "different UNet architectures: the parameter names differ"),
        (_not_safetensors, "is not a readable safetensors file"),
        (_onestep_field(prediction_type="v_prediction"), "STUDENT_A predicts epsilon and STUDENT_B v_prediction"),
        (_onestep_field(resolution=128), "STUDENT_A makes 64px images and STUDENT_B 128px"),
        (_other_vae, "differ in vae/diffusion_pytorch_model.safetensors"),
        (_no_onestep, "has no onestep.json"),
        (_edited_after_writing, "does not match its manifest hash"),
    ],
)
def test_incompatible_students_are_refused_in_one_line(students: dict[str, Path], tmp_path: Path, edit, words):
    b = _variant(students, "b-bad")
    edit(students, b)
    out = tmp_path / "merged"
    line = one_line_exit_2(invoke("merge", str(students["a"]), str(b), "--weight", "0.5", "--out", str(out)))
    assert words in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_weights_and_outs_are_refused_in_one_line(students: dict[str, Path], tmp_path: Path):
    a, b = str(students["a"]), str(students["b"])
    out = tmp_path / "merged"
    for weight in ("1.5", "-0.25", "nan", "inf"):
        assert "--weight must be a number in [0, 1]" in one_line_exit_2(invoke("merge", a, b, "--weight", weight, "--out", str(out)))
    assert "--weight" in one_line_exit_2(invoke("merge", a, b, "--weight", "half", "--out", str(out)))
    assert not out.exists()
    assert "is the input STUDENT_A" in one_line_exit_2(invoke("merge", a, b, "--weight", "0.5", "--out", a))
    assert "lies inside the input STUDENT_B" in one_line_exit_2(invoke("merge", a, b, "--weight", "0.5", "--out", f"{b}/merged"))
    assert not Path(b, "merged").exists()
    not_student = tmp_path / "empty"
    not_student.mkdir()
    assert "has no manifest.json" in one_line_exit_2(invoke("merge", a, str(not_student), "--weight", "0.5", "--out", str(out)))
    assert "is a 'teacher' directory" in one_line_exit_2(invoke("merge", a, str(_teacher_kind(tmp_path)), "--weight", "0.5", "--out", str(out)))
    assert not out.exists()


def _teacher_kind(tmp_path: Path) -> Path:
    folder = tmp_path / "teacher"
    folder.mkdir()
    write_manifest(folder, "teacher")
    return folder


def test_overwrite_replaces_only_an_earlier_merge(students: dict[str, Path], tmp_path: Path):
    a, b = str(students["a"]), str(students["b"])
    out = tmp_path / "merged"
    assert invoke("merge", a, b, "--weight", "0.5", "--out", str(out)).exit_code == 0
    assert "pass --overwrite to replace it" in one_line_exit_2(invoke("merge", a, b, "--weight", "0.25", "--out", str(out)))
    result = invoke("merge", a, b, "--weight", "0.25", "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_manifest(out, "student")["made_from"]["merge"]["weight"] == 0.25

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.txt").write_text("mine")
    line = one_line_exit_2(invoke("merge", a, b, "--weight", "0.5", "--out", str(foreign), "--overwrite"))
    assert "is not an earlier `swiftbrush merge` folder" in line
    assert [p.name for p in foreign.iterdir()] == ["chapter1.txt"] and (foreign / "chapter1.txt").read_text() == "mine"

    distilled = tmp_path / "distilled"  # a student distill wrote is not the merge's to replace
    shutil.copytree(a, distilled)
    line = one_line_exit_2(invoke("merge", a, b, "--weight", "0.5", "--out", str(distilled), "--overwrite"))
    assert "`swiftbrush merge` did not write" in line
    read_manifest(distilled, "student", verify=True)


def test_an_interrupted_overwrite_leaves_the_earlier_merge(students: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import swiftbrush.merge as merge

    out = tmp_path / "merged"
    merge_students(students["a"], students["b"], 0.5, out)
    before = (out / WEIGHTS).read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(merge, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        merge_students(students["a"], students["b"], 0.25, out, overwrite=True)
    assert (out / WEIGHTS).read_bytes() == before
    assert read_manifest(out, "student", verify=True)["made_from"]["merge"]["weight"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no half-built sibling left behind


def test_a_sharded_unet_keeps_its_shards(students: dict[str, Path], tmp_path: Path):
    from diffusers import UNet2DConditionModel

    a = _copy(students["a"], tmp_path / "a-sharded")  # B stays one file: the tensors are matched by name, not by file
    shutil.rmtree(a / "unet")
    UNet2DConditionModel.from_pretrained(students["a"] / "unet").save_pretrained(a / "unet", safe_serialization=True, max_shard_size="2MB")
    _restamp(a, **TEACHER)
    shards = sorted(p.name for p in (a / "unet").glob("*.safetensors"))
    assert len(shards) > 1

    out = merge_students(a, students["b"], 0.25, tmp_path / "merged")
    assert sorted(p.name for p in (out / "unet").glob("*.safetensors")) == shards
    wa, wb = load_file(students["a"] / WEIGHTS), load_file(students["b"] / WEIGHTS)
    unet = UNet2DConditionModel.from_pretrained(out / "unet").state_dict()
    assert all(torch.equal(unet[name], 0.25 * wa[name] + 0.75 * wb[name]) for name in wa)
