"""A small torch-free CUDA runtime wrapper (ctypes over libcudart), for the TensorRT backend.

Only what the engine wrapper needs: device memory, one stream, async copies, the
device's name and compute capability, and CUDA graph capture. Every call goes
through `check`, which turns a CUDA error code into one readable exception.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Any

import numpy as np

from swiftbrush_runtime.backends.base import BackendUnavailableError

H2D, D2H, D2D = 1, 2, 3  # cudaMemcpyKind
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor/Minor
_CAPTURE_GLOBAL = 0


class CudaError(RuntimeError):
    pass


def _find(name: str) -> list[str]:
    found = ctypes.util.find_library(name)
    cands = [found] if found else []
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", "/usr/local/cuda/targets/aarch64-linux", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        if root:
            cands += sorted(glob.glob(os.path.join(root, "lib*", f"lib{name}.so*")) + glob.glob(os.path.join(root, f"lib{name}.so*")), reverse=True)
    return cands + [f"lib{name}.so", f"lib{name}.so.13", f"lib{name}.so.12", f"lib{name}.so.11.0"]


def _load(name: str) -> Any:
    for cand in _find(name):
        try:
            return ctypes.CDLL(cand)
        except OSError:
            continue
    raise BackendUnavailableError(f"lib{name}.so not found: install the CUDA runtime (JetPack on Jetson, or pip install nvidia-cuda-runtime-cu12)")


class Cuda:
    """The CUDA runtime on one device; `check` raises CudaError with cudaGetErrorString."""

    def __init__(self, device: int = 0) -> None:
        self.rt = _load("cudart")
        self.rt.cudaGetErrorString.restype = ctypes.c_char_p
        self.device = device
        self.check(self.rt.cudaSetDevice(device), "cudaSetDevice")

    def check(self, status: int, what: str) -> None:
        if status != 0:
            msg = self.rt.cudaGetErrorString(status).decode()
            raise CudaError(f"{what} failed: {msg} (CUDA error {status})")

    # memory
    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self.rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), f"cudaMalloc({nbytes})")
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        if ptr:
            self.check(self.rt.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.rt.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return int(free.value), int(total.value)

    def copy_h2d(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.check(self.rt.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src.ctypes.data), ctypes.c_size_t(src.nbytes), H2D, ctypes.c_void_p(stream)), "cudaMemcpyAsync H2D")

    def copy_d2h(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.check(self.rt.cudaMemcpyAsync(ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(src), ctypes.c_size_t(dst.nbytes), D2H, ctypes.c_void_p(stream)), "cudaMemcpyAsync D2H")

    # streams
    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.rt.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def sync(self, stream: int) -> None:
        self.check(self.rt.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def destroy_stream(self, stream: int) -> None:
        if stream:
            self.check(self.rt.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    # device identity
    def compute_capability(self) -> str:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.rt.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, self.device), "cudaDeviceGetAttribute")
        self.check(self.rt.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, self.device), "cudaDeviceGetAttribute")
        return f"{major.value}{minor.value}"

    def device_name(self) -> str:
        """From the driver API (the runtime's property struct changes layout across versions)."""
        try:
            drv = _load("cuda")
        except BackendUnavailableError:
            return "unknown"
        name = ctypes.create_string_buffer(256)
        dev = ctypes.c_int()
        if drv.cuInit(0) != 0 or drv.cuDeviceGet(ctypes.byref(dev), self.device) != 0:
            return "unknown"
        if drv.cuDeviceGetName(name, 256, dev) != 0:
            return "unknown"
        return name.value.decode()

    # CUDA graphs
    def begin_capture(self, stream: int) -> None:
        self.check(self.rt.cudaStreamBeginCapture(ctypes.c_void_p(stream), _CAPTURE_GLOBAL), "cudaStreamBeginCapture")

    def end_capture(self, stream: int) -> int:
        graph, exe = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.rt.cudaStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "cudaStreamEndCapture")
        # cudaGraphInstantiate(exec, graph, flags) in CUDA 12+ (the 5-argument form was CUDA 11's).
        status = self.rt.cudaGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0))
        self.check(status, "cudaGraphInstantiateWithFlags")
        self.rt.cudaGraphDestroy(graph)
        return int(exe.value or 0)

    def launch_graph(self, exe: int, stream: int) -> None:
        self.check(self.rt.cudaGraphLaunch(ctypes.c_void_p(exe), ctypes.c_void_p(stream)), "cudaGraphLaunch")

    def destroy_graph(self, exe: int) -> None:
        if exe:
            self.rt.cudaGraphExecDestroy(ctypes.c_void_p(exe))


def gpu_identity(device: int = 0) -> dict[str, str]:
    """{"name", "compute_capability"} of a GPU, or raise BackendUnavailableError."""
    cuda = Cuda(device)
    return {"name": cuda.device_name(), "compute_capability": cuda.compute_capability()}
