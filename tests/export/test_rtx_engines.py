"""Every graph the exporter writes parses and builds in a real TensorRT-family builder, on CPU.

TensorRT for RTX (pip wheels, installed by `make`) builds engines ahead of time for a
named compute capability with no GPU, through the same builder API as TensorRT 10/11
(strongly typed). So these tests run the real `export engine` on each export variant
(fp32 / fp16, static / dynamic, opset 16 and 17, VAE and tiny decoder) and fail if a
graph does not parse or build. They also check what the engine folder records and what
bad input gets. Running the engines needs an RTX GPU (tests/runtime/test_gpu.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from swiftbrush.cli import cli
from swiftbrush_export.engine import build_engines, check_export_target, workspace_bytes
from swiftbrush_runtime.backends.trt import import_tensorrt_rtx
from swiftbrush_runtime.errors import InvalidModelError
from swiftbrush_runtime.manifest import read_manifest
from trt_fakes import strict_trt
from cli_checks import one_line_exit_2 as _one_line_exit_2

ROOT = Path(__file__).resolve().parents[2]
ARCH = "sm86"


@pytest.fixture(scope="session")
def rtx():
    return import_tensorrt_rtx()  # `make` installs it ([rtx] extra); without it these tests error with the install line


@pytest.fixture(scope="session")
def onnx_fp16_dynamic_opset16_taesd(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JetPack 5 export: opset 16 (LayerNorm as primitive ops), with the tiny decoder."""
    from swiftbrush_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "fp16-dyn-o16-taesd"
    export_onnx(tiny_student, out, dtype="fp16", batch=2, dynamic=True, target="jetpack5", decoder="taesd")
    return out


@pytest.fixture(scope="session")
def onnx_fp32_static_opset16_taesd(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swiftbrush_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "fp32-static-o16-taesd"
    export_onnx(tiny_student, out, dtype="fp32", batch=1, opset=16, decoder="taesd")
    return out


VARIANTS = [
    # (ONNX fixture, --dynamic, expected dtype, opset)
    ("onnx_fp32", True, "fp32", 17),
    ("onnx_fp32", False, "fp32", 17),
    ("onnx_fp16", False, "fp16", 17),
    ("onnx_fp16_dynamic_opset16_taesd", True, "fp16", 16),
    ("onnx_fp16_dynamic_opset16_taesd", False, "fp16", 16),
    ("onnx_fp32_static_opset16_taesd", False, "fp32", 16),
]


@pytest.mark.parametrize("fixture, dynamic, dtype, opset", VARIANTS, ids=[f"{v[0]}-{'dynamic' if v[1] else 'static'}" for v in VARIANTS])
def test_every_export_variant_builds(rtx, request, tmp_path: Path, fixture: str, dynamic: bool, dtype: str, opset: int):
    onnx_dir = request.getfixturevalue(fixture)
    onnx_manifest = read_manifest(onnx_dir, "onnx")
    assert (onnx_manifest["dtype"], onnx_manifest["opset"]) == (dtype, opset)
    out = tmp_path / "engine"
    m = build_engines(onnx_dir, out, backend="tensorrt-rtx", arch=ARCH, dynamic=dynamic, batch=None if dynamic else 1)
    assert set(m["engines"]) == set(onnx_manifest["graphs"])  # every graph, tiny decoder included
    assert (m["backend"], m["backend_version"], m["compute_capability"]) == ("tensorrt-rtx", rtx.__version__, "86")
    assert m["gpu_name"] is None and m["built_for"] == "sm86 (ahead of time)"
    for name, e in m["engines"].items():
        plan = out / e["file"]
        assert plan.stat().st_size > 10_000, name
        assert e["file"] == f"{name}.{dtype}.rtx{rtx.__version__.rsplit('.', 2)[0]}.sm86.plan"
        assert e["precision"] == f"strongly-typed-{dtype}" and e["tf32"] is False
        assert e["removed_inputs"] == (["timestep"] if name == "unet" else [])
    read_manifest(out, "engine", verify=True)  # hashes match what was written


def test_cli_builds_rtx_engines_without_a_gpu(rtx, onnx_fp16: Path, tmp_path: Path):
    out = tmp_path / "engine-rtx"
    r = CliRunner().invoke(cli, ["export", "engine", "--onnx", str(onnx_fp16), "--out", str(out), "--backend", "tensorrt-rtx", "--arch", ARCH])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"] == "tensorrt-rtx" and m["backend_version"] == rtx.__version__ and m["compute_capability"] == "86"
    assert "tensorrt-rtx" in r.output


def test_engine_build_needs_no_onnx_package(rtx, onnx_fp16: Path, tmp_path: Path):
    """JetPack's Python has no `onnx`: the build reads graphs through TensorRT's parser alone."""
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from swiftbrush_export.engine import build_engines\n"
        f"m = build_engines({str(onnx_fp16)!r}, {str(tmp_path / 'e')!r}, backend='tensorrt-rtx', arch='sm86')\n"
        "assert m['engines']['unet']['removed_inputs'] == ['timestep']\n"
        "assert 'onnx' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]



@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "tensorrt-rtx", "--arch", "sm87"], "--arch sm87 is not a compute capability TensorRT for RTX"),
        (["--backend", "tensorrt-rtx", "--arch", "sm86", "--timing-cache", "c.bin"], "--timing-cache does nothing with --backend tensorrt-rtx"),
        (["--arch", "sm86"], "--arch is for --backend tensorrt-rtx"),
        (["--backend", "tensorrt-rt"], "--backend must be one of tensorrt, tensorrt-rtx"),
    ],
)
def test_bad_build_flags_are_one_line_and_write_nothing(rtx, onnx_fp16: Path, tmp_path: Path, args: list[str], message: str):
    out = tmp_path / "e"
    line = _one_line_exit_2(CliRunner().invoke(cli, ["export", "engine", "--onnx", str(onnx_fp16), "--out", str(out), *args]))
    assert message in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def rtx_engine_dir(rtx, onnx_fp16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engines") / "rtx"
    build_engines(onnx_fp16, out, backend="tensorrt-rtx", arch=ARCH)
    return out


def test_engine_folder_of_the_other_backend_is_refused(rtx_engine_dir: Path, tmp_path: Path):
    line = _one_line_exit_2(CliRunner().invoke(cli, ["generate", "--model", str(rtx_engine_dir), "--backend", "tensorrt", "--prompt", "a", "--out", str(tmp_path / "i")]))
    assert "holds tensorrt-rtx engines" in line and "--backend tensorrt-rtx" in line
    from swiftbrush_runtime.backends import create

    with pytest.raises(InvalidModelError, match="holds tensorrt-rtx engines"):  # the backend itself applies the same rule
        create("tensorrt", rtx_engine_dir, read_manifest(rtx_engine_dir, "engine"))
    # and the reverse: a TensorRT engine folder given to the RTX backend
    trt_dir = tmp_path / "trt"
    shutil.copytree(rtx_engine_dir, trt_dir)
    manifest = json.loads((trt_dir / "manifest.json").read_text())
    (trt_dir / "manifest.json").write_text(json.dumps({**manifest, "backend": "tensorrt"}))
    line = _one_line_exit_2(CliRunner().invoke(cli, ["generate", "--model", str(trt_dir), "--backend", "tensorrt-rtx", "--prompt", "a", "--out", str(tmp_path / "j")]))
    assert "holds tensorrt engines" in line
    assert not (tmp_path / "i").exists() and not (tmp_path / "j").exists()


def test_rtx_engine_folder_picks_its_backend_and_needs_a_gpu_to_run(rtx_engine_dir: Path, tmp_path: Path):
    """Auto picks tensorrt-rtx from the manifest; without a GPU that is one line, not a traceback."""
    try:
        from swiftbrush_runtime.cuda import gpu_identity

        gpu_identity(0)
        pytest.skip("a GPU is present")
    except Exception:
        pass
    line = _one_line_exit_2(CliRunner().invoke(cli, ["generate", "--model", str(rtx_engine_dir), "--prompt", "a", "--out", str(tmp_path / "i")]))
    assert "NVIDIA" in line


@pytest.mark.parametrize("label, refused", [("trt-8.5.3", True), ("trt-8.6.1", False), ("trt-10.3.0", False), ("rtx-1.7.1", False)])
def test_folder_exported_for_a_newer_parser_is_refused_before_parsing(onnx_fp16: Path, label: str, refused: bool):
    """An opset-17 desktop export (LayerNormalization) on JetPack 5's 8.5: refused with the --target to re-export for."""
    manifest = read_manifest(onnx_fp16, "onnx", verify=False)
    assert manifest["target"] == "desktop"
    trt = strict_trt(label)
    backend = "tensorrt-rtx" if label.startswith("rtx") else "tensorrt"
    if not refused:
        check_export_target(manifest, onnx_fp16, trt, backend)
        return
    with pytest.raises(InvalidModelError, match=r"cannot parse \(LayerNormalization in text_encoder.* re-export it with swiftbrush export onnx --target jetpack5"):
        check_export_target(manifest, onnx_fp16, trt, backend)


def test_jetpack5_export_has_no_graph_tensorrt_8_5_refuses(onnx_fp16_dynamic_opset16_taesd: Path):
    """The CLIP pooler's ArgMax reads a float now, and opset 16 writes no LayerNormalization."""
    import onnx

    from swiftbrush_export.trt_targets import check_model

    m = read_manifest(onnx_fp16_dynamic_opset16_taesd, "onnx")
    assert m["target"] == "jetpack5" and m["opset"] == 16
    for name, graph in m["graphs"].items():
        model = onnx.load(str(onnx_fp16_dynamic_opset16_taesd / graph["path"]))
        assert check_model(model, "jetpack5") == [], name
    assert "ArgMax" in m["graphs"]["text_encoder"]["ops"] and "LayerNormalization" not in m["graphs"]["text_encoder"]["ops"]


def test_workspace_defaults_to_a_quarter_of_a_small_gpu():
    """An 8 GB Orin Nano shares its memory with the OS: 4 GiB of workspace would be half of it."""
    assert workspace_bytes(None, 8 << 30) == 2 << 30
    assert workspace_bytes(1.5, 8 << 30) == int(1.5 * (1 << 30))
    assert workspace_bytes(None, None) == 4 << 30  # ahead of time: no GPU to ask
