"""The runtime installs and generates with no torch, diffusers or transformers (slow).

Builds the project's wheel, makes a fresh virtual environment and installs
`swiftbrush-*.whl[ort]` into it the way a user does (its dependencies from the
wheel's own metadata, from the package index or pip's cache), then runs
`swiftbrush generate` on an exported toy ONNX directory; the PNG must match the
torch backend's image for the same seed within 2/255. Run on this interpreter and
on Python 3.8 when the machine has one: JetPack 5's Python, which docs/JETSON.md
promises the runtime works on (the wheel's environment markers keep pip off
dependency versions that ship no 3.8 wheel).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# pip's messages when no index (and no cache) can serve a package: the only reason to skip
UNREACHABLE_INDEX = ("No matching distribution found", "Could not find a version", "Failed to establish a new connection", "NewConnectionError")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)


def _python38() -> str | None:
    """A working Python 3.8 interpreter (on PATH or under pyenv), or None."""
    candidates = [shutil.which("python3.8"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))]
    for exe in filter(None, candidates):
        probe = _run([exe, "-c", "import sys, venv; print(sys.version_info[:2])"])
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 8)":
            return exe
    return None


def _index_serves(py: str, dest: Path) -> bool:
    """Whether pip in this venv can fetch a plain package (click): if it can, "No matching distribution"
    means the wheel's own metadata asks for something this Python cannot install, a real failure."""
    return _run([py, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), "click"], timeout=300).returncode == 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)], timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    return next(wheels.glob("swiftbrush-*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("python", ["this", "3.8"])
def test_generate_in_a_torch_free_venv(python: str, wheel: Path, onnx_fp16: Path, tiny_student: Path, tmp_path: Path):
    exe = sys.executable if python == "this" else _python38()
    if exe is None:
        pytest.skip("no Python 3.8 interpreter on this machine (python3.8 on PATH or ~/.pyenv/versions/3.8*)")
    env_dir = tmp_path / "slim"
    made = _run([exe, "-m", "venv", str(env_dir)], timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    py = str(env_dir / "bin" / "python")
    inst = _run([py, "-m", "pip", "install", "-q", f"{wheel}[ort]"], timeout=900)
    if inst.returncode != 0 and any(m in inst.stderr for m in UNREACHABLE_INDEX) and not _index_serves(py, tmp_path / "probe"):
        pytest.skip(f"cannot reach a package index for the slim dependencies: {inst.stderr.strip().splitlines()[-1:]}")
    assert inst.returncode == 0, inst.stderr[-2000:]  # any other install failure is a real problem (a conflict, a missing wheel)
    check = _run([py, "-c", "import importlib.util as u; print([m for m in ('torch','diffusers','transformers','optimum') if u.find_spec(m)])"])
    assert check.stdout.strip() == "[]", check.stdout
    out = tmp_path / "images"
    gen = _run([str(env_dir / "bin" / "swiftbrush"), "generate", "--model", str(onnx_fp16), "--prompt", "a red circle on a blue background",
                "--seed", "11", "--out", str(out)], timeout=300, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-2000:]
    slim_png = np.asarray(Image.open(out / "0000.png"), dtype=np.float32)

    from swiftbrush_runtime import Generator

    ref = Generator.load(tiny_student, backend="torch", device="cpu").generate(["a red circle on a blue background"], seed=11)[0].astype(np.float32)
    assert np.abs(slim_png - ref).max() <= 2, np.abs(slim_png - ref).max()


@pytest.mark.slow
def test_the_wheel_carries_the_toy_world(wheel: Path):
    """`pip install swiftbrush` users get `--teacher toy` too: every asset file is in the wheel."""
    import zipfile

    assets = ROOT / "swiftbrush" / "toy" / "assets"
    shipped = {p.relative_to(ROOT).as_posix() for p in assets.rglob("*") if p.is_file()}
    assert shipped, "no toy assets in the checkout"
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert shipped <= in_wheel, sorted(shipped - in_wheel)[:5]
