"""What `swiftbrush doctor` does: what is installed and which backends will work here.

    swiftbrush doctor [--json]

Checks Python, numpy/tokenizers/Pillow, ONNX Runtime and its providers, TensorRT,
the CUDA runtime and the GPU, torch (+ diffusers/transformers) and Jetson; each
backend gets "ok" or the reason it will not work and the install line that fixes it.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    version = getattr(mod, "__version__", None)
    if version is None and getattr(mod, "__file__", None) is None:
        return None  # a namespace package left by type stubs (tensorrt-stubs), not the library
    return str(version or "?")


def _jetson() -> str | None:
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        return release.read_text().splitlines()[0].strip()
    return None


def _nvidia_smi() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def doctor_report() -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jetson": _jetson(),
        "packages": {m: _version(m) for m in ("numpy", "PIL", "tokenizers", "click", "onnxruntime", "tensorrt", "torch", "diffusers", "transformers", "onnx", "optimum")},
    }
    gpu: dict[str, Any] = {"nvidia_smi": _nvidia_smi()}
    try:
        from swiftbrush_runtime.cuda import gpu_identity

        gpu.update(gpu_identity(0))
        gpu["cuda_runtime"] = "ok"
    except Exception as e:
        gpu["cuda_runtime"] = f"unavailable ({e})"
    report["gpu"] = gpu
    backends: dict[str, str] = {}

    # onnxruntime
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        report["onnxruntime_providers"] = providers
        gpu_eps = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
        backends["onnxruntime"] = f"ok ({', '.join(gpu_eps) if gpu_eps else 'CPU only; pip install onnxruntime-gpu for CUDA'})"
    except ImportError:
        backends["onnxruntime"] = "not installed: pip install 'swiftbrush[ort]' (onnxruntime-gpu on CUDA machines)"

    # tensorrt
    trt_version = report["packages"]["tensorrt"]
    if trt_version is None:
        backends["tensorrt"] = (
            "not installed: pip install 'swiftbrush[trt]' on a desktop GPU; on Jetson TensorRT comes with JetPack (sudo apt install nvidia-tensorrt)"
        )
    elif gpu["cuda_runtime"] != "ok":
        backends["tensorrt"] = f"TensorRT {trt_version} installed but no usable GPU: {gpu['cuda_runtime']}"
    else:
        backends["tensorrt"] = f"ok (TensorRT {trt_version}, {gpu.get('name')} sm{gpu.get('compute_capability')}); build engines here with `swiftbrush export engine`"

    # torch
    if report["packages"]["torch"] is None:
        backends["torch"] = "not installed: pip install 'swiftbrush[train]'"
    elif report["packages"]["diffusers"] is None or report["packages"]["transformers"] is None:
        backends["torch"] = "torch is installed but diffusers/transformers are not: pip install 'swiftbrush[train]'"
    else:
        import torch

        cuda = torch.cuda.is_available()
        report["torch_cuda"] = torch.cuda.get_device_name(0) if cuda else None
        backends["torch"] = f"ok ({'CUDA: ' + torch.cuda.get_device_name(0) if cuda else 'CPU only'})"
    report["backends"] = backends
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"python      {report['python']}  ({report['platform']})"]
    if report.get("jetson"):
        lines.append(f"jetson      {report['jetson']}")
    for name, v in report["packages"].items():
        lines.append(f"{name:<12}{v or '-'}")
    g = report["gpu"]
    lines.append(f"gpu         {g.get('name', '-')} sm{g.get('compute_capability', '-')}  cuda runtime: {g['cuda_runtime']}")
    if report.get("onnxruntime_providers"):
        lines.append(f"ort EPs     {', '.join(report['onnxruntime_providers'])}")
    lines.append("backends:")
    for name, status in report["backends"].items():
        lines.append(f"  {name:<12}{status}")
    return "\n".join(lines)
