"""What `swiftbrush doctor` does: what is installed and which backends will work here.

    swiftbrush doctor [--json [FILE]]

Versions come from the installed packages' metadata (importlib.metadata), so torch,
diffusers and friends are never imported just to print a number and the command
stays fast. Checks Python, the slim base, ONNX Runtime and its providers, TensorRT
(through the backend's own import, so the install hint is the one the backend
gives), the GPU (the CUDA runtime is asked only when an NVIDIA GPU is present), torch
and Jetson; each backend gets "ok" or the reason it will not work and the fix.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from swiftbrush_runtime.manifest import package_version

NVIDIA_DEVICE = Path("/dev/nvidia0")  # present where an NVIDIA driver has a desktop/server GPU

# Report name -> the distributions that provide it (the first installed one is reported).
PACKAGES: dict[str, tuple[str, ...]] = {
    "swiftbrush": ("swiftbrush",),
    "numpy": ("numpy",),
    "Pillow": ("pillow",),
    "tokenizers": ("tokenizers",),
    "click": ("click",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"),
    "tensorrt-rtx": ("tensorrt-rtx-cu12-bindings", "tensorrt-rtx-cu12", "tensorrt-rtx"),
    "torch": ("torch",),
    "diffusers": ("diffusers",),
    "transformers": ("transformers",),
    "accelerate": ("accelerate",),
    "peft": ("peft",),
    "onnx": ("onnx",),
    "optimum": ("optimum",),
    "optimum-onnx": ("optimum-onnx",),
}


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
    return [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("GPU ")]


def _gpu(jetson: str | None) -> dict[str, Any]:
    """The GPU as nvidia-smi and the CUDA runtime see it; no CUDA call where no NVIDIA GPU is present."""
    gpu: dict[str, Any] = {"nvidia_smi": _nvidia_smi()}
    if not (gpu["nvidia_smi"] or jetson or NVIDIA_DEVICE.exists()):
        gpu["cuda_runtime"] = "none: no NVIDIA GPU found"
        return gpu
    try:
        from swiftbrush_runtime.cuda import gpu_identity

        gpu.update(gpu_identity(0))
        gpu["cuda_runtime"] = "ok"
    except Exception as e:
        from swiftbrush_runtime.errors import first_line

        gpu["cuda_runtime"] = f"unavailable ({first_line(e)})"
    return gpu


def _torch_build(version: str) -> str:
    if "+cpu" in version:
        return "CPU-only build"
    try:
        requires = metadata.requires("torch") or []
    except metadata.PackageNotFoundError:
        requires = []
    return "CUDA build" if "+cu" in version or any(r.startswith("nvidia-") for r in requires) else "build without bundled CUDA"


def doctor_report() -> dict[str, Any]:
    """Versions, GPU and a status line per backend, as a JSON-able dict."""
    from swiftbrush_runtime.errors import first_line

    jetson = _jetson()
    packages = {name: package_version(*dists) for name, dists in PACKAGES.items()}
    report: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "jetson": jetson, "packages": packages}
    gpu = _gpu(jetson)
    report["gpu"] = gpu
    backends: dict[str, str] = {}

    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        report["onnxruntime_providers"] = providers
        gpu_eps = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
        backends["onnxruntime"] = f"ok ({', '.join(gpu_eps) if gpu_eps else 'CPU only; pip install onnxruntime-gpu for CUDA'})"
    except ImportError:
        backends["onnxruntime"] = "not installed: pip install 'swiftbrush[ort]' (onnxruntime-gpu on CUDA machines)"

    try:
        from swiftbrush_runtime.backends.trt import import_tensorrt

        trt = import_tensorrt()
        trt_version = str(getattr(trt, "__version__", "?"))
        packages["tensorrt"] = packages["tensorrt"] or trt_version  # JetPack's bindings carry no pip metadata
        if gpu["cuda_runtime"] != "ok":
            backends["tensorrt"] = f"TensorRT {trt_version} installed but no usable GPU ({gpu['cuda_runtime']})"
        else:
            backends["tensorrt"] = f"ok (TensorRT {trt_version}, {gpu.get('name')} sm{gpu.get('compute_capability')}); build engines here with `swiftbrush export engine`"
    except Exception as e:  # the backend's own message: the one install hint
        backends["tensorrt"] = first_line(e)

    try:
        from swiftbrush_runtime import trt_compat
        from swiftbrush_runtime.backends.trt import import_tensorrt_rtx

        rtx = import_tensorrt_rtx()
        rtx_version = str(getattr(rtx, "__version__", "?"))
        archs = ", ".join(trt_compat.rtx_architectures(rtx))
        if gpu["cuda_runtime"] != "ok":
            backends["tensorrt-rtx"] = (
                f"TensorRT for RTX {rtx_version} installed, no usable GPU to run on ({gpu['cuda_runtime']}); "
                f"builds engines here ahead of time: swiftbrush export engine --backend tensorrt-rtx --arch ({archs})"
            )
        else:
            backends["tensorrt-rtx"] = f"ok (TensorRT for RTX {rtx_version}, {gpu.get('name')} sm{gpu.get('compute_capability')}; builds for {archs})"
    except Exception as e:
        backends["tensorrt-rtx"] = first_line(e)

    torch_version = packages["torch"]
    if torch_version is None:
        backends["torch"] = "not installed: pip install 'swiftbrush[train]'"
    elif packages["diffusers"] is None or packages["transformers"] is None:
        backends["torch"] = "torch is installed but diffusers/transformers are not: pip install 'swiftbrush[train]'"
    else:
        backends["torch"] = f"ok (torch {torch_version}, {_torch_build(torch_version)})"
    report["backends"] = backends
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text: one row per package, then the GPU and one row per backend."""
    g = report["gpu"]
    if g["cuda_runtime"] == "ok":
        gpu_line = f"{g.get('name', '?')} sm{g.get('compute_capability', '?')}"
    elif g.get("nvidia_smi"):
        gpu_line = f"{g['nvidia_smi'][0]}; cuda runtime {g['cuda_runtime']}"
    else:
        gpu_line = g["cuda_runtime"]
    rows = [("python", f"{report['python']} ({report['platform']})")]
    if report.get("jetson"):
        rows.append(("jetson", report["jetson"]))
    rows += [(name, v or "-") for name, v in report["packages"].items()]
    rows.append(("gpu", gpu_line))
    if report.get("onnxruntime_providers"):
        rows.append(("ort EPs", ", ".join(report["onnxruntime_providers"])))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{name:<{width}}{value}" for name, value in rows]
    lines.append("backends:")
    bwidth = max(len(name) for name in report["backends"]) + 2
    lines += [f"  {name:<{bwidth}}{status}" for name, status in report["backends"].items()]
    return "\n".join(lines)
