"""A small torch-free CUDA wrapper over the driver API (ctypes over libcuda.so.1), for the TensorRT backends.

Why the driver API: `libcuda.so.1` comes with the NVIDIA driver and is present wherever
a GPU can run anything (desktop, WSL, Jetson), while pip's TensorRT links the CUDA
runtime statically and ships no `libcudart.so` a ctypes loader could find. Why by hand:
cuda-python would be a second, version-matched dependency for the dozen calls below.

Only what the engine wrapper needs: the device's primary context (the one TensorRT's
own CUDA runtime uses), device memory, one stream, async copies, the device's name,
compute capability and SM count, and CUDA graph capture that always leaves capture
mode. Every call goes through `check`, which turns a CUresult into one readable error.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable

import numpy as np

from swiftbrush_runtime.backends.base import BackendUnavailableError

# CUdevice_attribute values (cuda.h; stable across CUDA 11-13)
ATTR_MULTIPROCESSOR_COUNT = 16
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76
CAPTURE_MODE_GLOBAL = 0  # CUstreamCaptureMode
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INSUFFICIENT_DRIVER = 35

_DRIVER_CANDIDATES = (
    ("nvcuda.dll",)
    if os.name == "nt"
    else ("libcuda.so.1", "libcuda.so", "/usr/lib/wsl/lib/libcuda.so.1", "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1")
)


class CudaError(RuntimeError):
    pass


def load_driver() -> Any:
    """libcuda (the driver API), or BackendUnavailableError saying that the NVIDIA driver is missing."""
    for name in _DRIVER_CANDIDATES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        _declare(lib)
        return lib
    raise BackendUnavailableError(
        "no NVIDIA driver here (libcuda.so.1 does not load): the TensorRT backends need an NVIDIA GPU with its driver "
        "(on Jetson, JetPack); without one, run the ONNX folder the engines were built from (onnxruntime backend, CPU)"
    )


def _declare(lib: Any) -> None:
    """Argument types where ctypes' int default would truncate a 64-bit device pointer or size."""
    u64, vp, sz = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t
    for name, args in {
        "cuMemFree_v2": [u64],
        "cuMemcpyHtoDAsync_v2": [u64, vp, sz, vp],
        "cuMemcpyDtoHAsync_v2": [vp, u64, sz, vp],
        "cuMemAlloc_v2": [vp, sz],
    }.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes = args


class Cuda:
    """One device through the driver API, in its primary context; `check` raises CudaError with cuGetErrorString."""

    def __init__(self, device: int = 0, lib: Any = None) -> None:
        self.lib = lib if lib is not None else load_driver()
        self.device = device
        status = self.lib.cuInit(0)
        if status in (CUDA_ERROR_NO_DEVICE, CUDA_ERROR_INSUFFICIENT_DRIVER):
            raise BackendUnavailableError(f"no usable NVIDIA GPU here ({self.error_string(status)}); without one, run an ONNX folder (onnxruntime backend, CPU)")
        self.check(status, "cuInit")
        count = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if not 0 <= device < count.value:
            raise BackendUnavailableError(f"cuda:{device} does not exist: this machine has {count.value} CUDA device(s)")
        dev = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
        self.dev = dev.value
        # The primary context is the one the CUDA runtime inside TensorRT uses for this device.
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), self.dev), "cuDevicePrimaryCtxRetain")
        self.context = ctx.value
        self.make_current()

    def make_current(self) -> None:
        """Bind this device's context to the calling thread (a Generator may be called from several)."""
        self.check(self.lib.cuCtxSetCurrent(ctypes.c_void_p(self.context)), "cuCtxSetCurrent")

    def error_string(self, status: int) -> str:
        text = ctypes.c_char_p()
        if self.lib.cuGetErrorString(status, ctypes.byref(text)) != 0 or not text.value:
            return f"CUDA error {status}"
        return text.value.decode()

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise CudaError(f"{what} failed: {self.error_string(status)} (CUresult {status})")

    # memory
    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), f"cuMemAlloc({nbytes})")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        if ptr:
            self.check(self.lib.cuMemFree_v2(ctypes.c_uint64(ptr)), "cuMemFree")

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
        return int(free.value), int(total.value)

    def copy_h2d(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.check(
            self.lib.cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src.ctypes.data), ctypes.c_size_t(src.nbytes), ctypes.c_void_p(stream)),
            "cuMemcpyHtoDAsync",
        )

    def copy_d2h(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.check(
            self.lib.cuMemcpyDtoHAsync_v2(ctypes.c_void_p(dst.ctypes.data), ctypes.c_uint64(src), ctypes.c_size_t(dst.nbytes), ctypes.c_void_p(stream)),
            "cuMemcpyDtoHAsync",
        )

    # streams
    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.lib.cuStreamCreate(ctypes.byref(s), 0), "cuStreamCreate")
        return int(s.value or 0)

    def sync(self, stream: int) -> None:
        self.check(self.lib.cuStreamSynchronize(ctypes.c_void_p(stream)), "cuStreamSynchronize")

    def destroy_stream(self, stream: int) -> None:
        if stream:
            self.check(self.lib.cuStreamDestroy_v2(ctypes.c_void_p(stream)), "cuStreamDestroy")

    # device identity
    def attribute(self, attr: int) -> int:
        value = ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(value), attr, self.dev), f"cuDeviceGetAttribute({attr})")
        return int(value.value)

    def compute_capability(self) -> str:
        return f"{self.attribute(ATTR_CC_MAJOR)}{self.attribute(ATTR_CC_MINOR)}"

    def multiprocessor_count(self) -> int:
        """SMs on the device: tells apart modules that share a name and compute capability (every Orin is "Orin", sm87)."""
        return self.attribute(ATTR_MULTIPROCESSOR_COUNT)

    def device_name(self) -> str:
        name = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(name, 256, self.dev), "cuDeviceGetName")
        return name.value.decode(errors="replace")

    def identity(self) -> dict[str, Any]:
        """What an engine is bound to: {"name", "compute_capability", "multiprocessor_count"}."""
        return {"name": self.device_name(), "compute_capability": self.compute_capability(), "multiprocessor_count": self.multiprocessor_count()}

    # CUDA graphs
    def capture_graph(self, stream: int, work: Callable[[], None]) -> int:
        """Record `work` (launches on `stream`) as an executable graph.

        The stream always leaves capture mode, whatever `work` or the capture does: a
        stream left capturing refuses every later launch, so the caller's fallback
        (run without the graph) could never work. The graph itself is freed once
        instantiated, or when instantiation fails.
        """
        self.check(self.lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), CAPTURE_MODE_GLOBAL), "cuStreamBeginCapture")
        graph = ctypes.c_void_p()
        try:
            work()
        except BaseException:
            self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph))  # ends capture; its status only repeats the failure
            if graph.value:
                self.lib.cuGraphDestroy(graph)
            raise
        status = self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph))
        try:
            self.check(status, "cuStreamEndCapture")
            exe = ctypes.c_void_p()
            self.check(self.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0)), "cuGraphInstantiateWithFlags")
            return int(exe.value or 0)
        finally:
            if graph.value:
                self.lib.cuGraphDestroy(graph)

    def launch_graph(self, exe: int, stream: int) -> None:
        self.check(self.lib.cuGraphLaunch(ctypes.c_void_p(exe), ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy_graph(self, exe: int) -> None:
        if exe:
            self.lib.cuGraphExecDestroy(ctypes.c_void_p(exe))


def gpu_identity(device: int = 0) -> dict[str, Any]:
    """{"name", "compute_capability", "multiprocessor_count"} of a GPU, or raise BackendUnavailableError."""
    return Cuda(device).identity()
