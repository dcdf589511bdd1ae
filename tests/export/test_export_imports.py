"""Exporting loads no training code: every `swiftbrush_export` module imports without `swiftbrush`.

The export reads a student folder through its own loader and the runtime's format modules;
the toy asset folders and the one-step scheduler come from `swiftbrush_runtime`. Checked in a
fresh interpreter, since the test session has the training package loaded, and in the source,
since most imports sit inside the functions that need them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"
PROBE = """
import importlib, json, pkgutil, sys
import swiftbrush_export
names = ["swiftbrush_export"] + [m.name for m in pkgutil.walk_packages(swiftbrush_export.__path__, "swiftbrush_export.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_export_modules_import_no_training_package(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"swiftbrush_export.onnx_export", "swiftbrush_export.student", "swiftbrush_export.engine", "swiftbrush_export.cli"} <= set(result["imported"])
    training = [m for m in result["loaded"] if m == "swiftbrush" or m.startswith("swiftbrush.")]
    assert training == []


def _training_imports(path: Path) -> list[str]:
    """Every `import swiftbrush...` / `from swiftbrush... import` in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if n == "swiftbrush" or n.startswith("swiftbrush.")]
    return found


def test_no_export_function_imports_the_training_package():
    files = sorted(EXPORT_DIR.glob("*.py"))
    assert {"onnx_export.py", "student.py", "engine.py"} <= {f.name for f in files}
    assert [hit for f in files for hit in _training_imports(f)] == []
