"""The TensorRT code checked statically against the real API (tensorrt-stubs, TRT 10.13).

1. mypy over the TensorRT modules, with the stubs' types on every engine, context,
   config, network and parser the compat module touches;
2. every `trt.<Class>.<MEMBER>` that trt_compat names exists in the stubs, unless
   it is one of the version-specific names below (listed with the versions that
   have them).

Both skip where mypy / tensorrt-stubs are not installed
(`pip install mypy; pip install --no-deps tensorrt-stubs`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRT_FILES = ["runtime/trt_compat.py", "runtime/backends/trt.py", "runtime/cuda.py", "export/engine.py"]
# Names the compat module reaches for only where they exist.
VERSION_SPECIFIC = {
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",  # 8.x (ignored in 10, removed in 11)
    "BuilderFlag.FP16",  # up to 10.x (deprecated 10.12, removed in 11)
    "ComputeCapability.__members__",  # TensorRT for RTX only
}


def _stub_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs)")
    return Path(list(spec.submodule_search_locations)[0])


def test_mypy_against_tensorrt_stubs(tmp_path: Path):
    pytest.importorskip("mypy")
    _stub_dir()
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\nwarn_unused_ignores = True\n")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), *TRT_FILES], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compat_names_exist_in_the_stubs():
    # The stub file is not valid Python everywhere (a generated signature puts a
    # required argument after defaults), so read classes and members by line.
    import re

    members: dict[str, set[str]] = {}
    current = None
    for line in (_stub_dir() / "tensorrt.pyi").read_text().splitlines():
        m = re.match(r"class (\w+)", line)
        if m:
            current = members.setdefault(m.group(1), set())
            continue
        m = re.match(r"    (?:def )?(\w+)\s*[:(]", line)
        if m and current is not None:
            current.add(m.group(1))
    source = ast.parse((ROOT / "runtime/trt_compat.py").read_text())
    used = set()
    for node in ast.walk(source):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) and node.value.value.id == "trt":
            used.add(f"{node.value.attr}.{node.attr}")
        # feature detection: hasattr(trt.X, "Y") / getattr(trt.X, "Y", ...)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2:
            obj, name = node.args[0], node.args[1]
            if isinstance(obj, ast.Attribute) and isinstance(obj.value, ast.Name) and obj.value.id == "trt" and isinstance(name, ast.Constant):
                used.add(f"{obj.attr}.{name.value}")
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in used  # the walk found the names
    missing = sorted(u for u in used if u.split(".")[1] not in members.get(u.split(".")[0], set()) and u not in VERSION_SPECIFIC)
    assert not missing, missing
    for name in ("create_execution_context", "create_execution_context_without_device_memory", "device_memory_size_v2"):
        assert name in members["ICudaEngine"], name
    for name in ("set_input_shape", "set_tensor_address", "execute_async_v3", "set_device_memory"):
        assert name in members["IExecutionContext"], name


def test_direct_trt_names_exist_in_every_version_we_claim():
    """`trt.X` / `trt.X.Y` used outside trt_compat (the builder and the engine wrapper) carry no version fork,
    so each must exist in every TensorRT we claim (8.5.3 .. 11.1, and TensorRT for RTX 1.7)."""
    from trt_fakes import has

    labels = ["trt-8.5.3", "trt-8.6.1", "trt-10.3.0", "trt-10.13.3", "trt-11.1.0", "rtx-1.7.1"]
    used = set()
    for file in ("export/engine.py", "runtime/backends/trt.py"):
        for node in ast.walk(ast.parse((ROOT / file).read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
                used.add(node.attr)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) and node.value.value.id == "trt":
                used.add(f"{node.value.attr}.{node.attr}")
    assert {"Builder", "OnnxParser", "Runtime", "Logger.WARNING", "nptype"} <= used, used  # the walk found them
    missing = sorted(f"{name} in {label}" for name in used for label in labels if not has(label, name))
    assert not missing, missing
