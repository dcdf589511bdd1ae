"""Importing the runtime loads no training or export stack: what makes it deployable without torch.

Each import runs in a fresh interpreter (this one has torch loaded by other tests), offline,
and lists which of the packages below ended up in `sys.modules`. TensorRT, ONNX Runtime and
torch are imported inside their backends when one is loaded, never at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("torch", "diffusers", "transformers", "swiftbrush", "swiftbrush_export", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "optimum")
PROBE = """
import importlib, json, pkgutil, sys
names = sys.argv[1:]
if names == ["*"]:
    import swiftbrush_runtime
    names = ["swiftbrush_runtime"] + [m.name for m in pkgutil.walk_packages(swiftbrush_runtime.__path__, "swiftbrush_runtime.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def loaded_after_import(modules: list[str], cwd: Path) -> tuple[list[str], list[str]]:
    """(the modules imported, every module in sys.modules afterwards), from a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="*", no_proxy="*")
    proc = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["imported"], result["loaded"]


def forbidden_in(loaded: list[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)


@pytest.mark.parametrize(
    "module",
    [
        "swiftbrush_runtime",
        "swiftbrush_runtime.generator",
        "swiftbrush_runtime.backends.ort",
        "swiftbrush_runtime.backends.trt",
        "swiftbrush_runtime.cuda",
        "swiftbrush_runtime.trt_compat",
        "swiftbrush_runtime.toy_assets",
    ],
)
def test_runtime_module_imports_no_heavy_package(module: str, tmp_path: Path):
    imported, loaded = loaded_after_import([module], tmp_path)
    assert imported == [module] and module in loaded
    assert forbidden_in(loaded) == []


def test_every_runtime_module_together_imports_no_heavy_package(tmp_path: Path):
    imported, loaded = loaded_after_import(["*"], tmp_path)
    assert {"swiftbrush_runtime.backends.ort", "swiftbrush_runtime.backends.trt", "swiftbrush_runtime.cli"} <= set(imported)
    assert forbidden_in(loaded) == []


def test_the_probe_sees_a_heavy_import(tmp_path: Path):
    """The check itself: importing the training package is reported (so an empty list above means something)."""
    _, loaded = loaded_after_import(["swiftbrush.errors"], tmp_path)
    assert "swiftbrush" in forbidden_in(loaded)
