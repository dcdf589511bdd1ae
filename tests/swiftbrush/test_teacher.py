"""Teacher loading: the committed toy teacher through diffusers' own loaders, and refusals."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush.errors import InvalidModelError, OfflineError, UnsupportedModelError
from swiftbrush.teacher import TOY_TEACHER_DIR, load_teacher



def test_toy_teacher_loads_through_stable_diffusion_pipeline():
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(TOY_TEACHER_DIR, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle on a black background", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.vae).__name__ == "AutoencoderKL"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"


def test_load_teacher_toy():
    t = load_teacher("toy")
    assert t.prediction_type == "epsilon"
    assert t.resolution == 64 and t.vae_scale_factor == 8
    assert abs(float(t.scheduler.alphas_cumprod[999]) - 0.00466) < 1e-4  # SD's schedule
    assert not any(p.requires_grad for p in t.unet.parameters())


def test_hub_id_resolves_from_the_local_cache_offline(tmp_path, monkeypatch):
    """The hub path is real: a snapshot in HF's cache layout loads by id with no network."""
    repo = tmp_path / "hub" / "models--toyorg--toy-teacher"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(TOY_TEACHER_DIR, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    t = load_teacher("toyorg/toy-teacher")
    assert t.path.resolve() == snap.resolve()


def test_uncached_hub_id_offline_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="stabilityai/stable-diffusion-2-1-base"):
        load_teacher("stabilityai/stable-diffusion-2-1-base")


def test_missing_path_and_non_pipeline_folder(tmp_path):
    with pytest.raises(InvalidModelError, match="does not exist"):
        load_teacher(str(tmp_path / "nope"))
    with pytest.raises(InvalidModelError, match="not a diffusers pipeline folder"):
        load_teacher(tmp_path)


@pytest.fixture
def teacher_copy(tmp_path) -> Path:
    dst = tmp_path / "teacher"
    shutil.copytree(TOY_TEACHER_DIR, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_v_prediction_loads_and_other_kinds_are_refused_by_name(teacher_copy):
    _edit_json(teacher_copy / "scheduler" / "scheduler_config.json", prediction_type="v_prediction")
    assert load_teacher(teacher_copy).prediction_type == "v_prediction"  # SD 2.x-768
    _edit_json(teacher_copy / "scheduler" / "scheduler_config.json", prediction_type="sample")
    with pytest.raises(UnsupportedModelError, match="'sample'"):
        load_teacher(teacher_copy)


def test_zero_terminal_snr_is_refused(teacher_copy):
    _edit_json(teacher_copy / "scheduler" / "scheduler_config.json", rescale_betas_zero_snr=True)
    with pytest.raises(UnsupportedModelError, match="zero-terminal-SNR"):
        load_teacher(teacher_copy)


def test_sdxl_is_refused(teacher_copy):
    _edit_json(teacher_copy / "model_index.json", _class_name="StableDiffusionXLPipeline", text_encoder_2=["transformers", "CLIPTextModelWithProjection"])
    with pytest.raises(UnsupportedModelError, match="SDXL"):
        load_teacher(teacher_copy)


def test_corrupted_safetensors_is_one_clear_error(teacher_copy):
    weights = teacher_copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InvalidModelError, match="do not load"):
        load_teacher(teacher_copy)


def test_cli_bad_teacher_exits_2_with_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines() if hasattr(result, "stderr") else result.output.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in result.output
