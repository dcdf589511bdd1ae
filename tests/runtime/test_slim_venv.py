"""The runtime installs and generates with no torch, diffusers or transformers (slow).

Builds a fresh virtual environment with only the base dependencies and the [ort]
extra (numpy, Pillow, tokenizers, click, onnxruntime, from the package index or
pip's cache), installs the project's wheel with --no-deps, and runs `swiftbrush
generate` on an exported toy ONNX directory; the PNG must match the torch
backend's image for the same seed within 2/255.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SLIM = ["numpy", "Pillow", "tokenizers", "click", "onnxruntime"]
# pip's messages when no index (and no cache) can serve a package: the only reason to skip
UNREACHABLE_INDEX = ("No matching distribution found", "Could not find a version", "Failed to establish a new connection", "NewConnectionError")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)


@pytest.mark.slow
def test_generate_in_a_torch_free_venv(onnx_fp16: Path, tiny_student: Path, tmp_path: Path):
    wheels = tmp_path / "wheels"
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)], timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    env_dir = tmp_path / "slim"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    deps = _run([py, "-m", "pip", "install", "-q", *SLIM], timeout=600)
    if deps.returncode != 0 and any(m in deps.stderr for m in UNREACHABLE_INDEX):
        pytest.skip(f"cannot reach a package index for the slim dependencies: {deps.stderr.strip().splitlines()[-1:]}")
    assert deps.returncode == 0, deps.stderr[-2000:]  # any other install failure is a real problem (e.g. a conflict)
    wheel = next(wheels.glob("swiftbrush-*.whl"))
    inst = _run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
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
