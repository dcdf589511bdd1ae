"""runtime/cuda.py against a fake driver library: the calls it makes, and capture mode always left.

No GPU needed: the fake stands in for libcuda.so.1 (same function names, CUresult codes,
out-parameters written through ctypes.byref), so the decisions are checked on CPU.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from swiftbrush_runtime import cuda as cuda_mod
from swiftbrush_runtime.backends.base import BackendUnavailableError


def _out(ref, value):
    ref._obj.value = value


class FakeDriver:
    """libcuda's functions the wrapper uses; `fail` maps a function name to the CUresult it returns."""

    def __init__(self, fail: dict[str, int] | None = None, devices: int = 1):
        self.calls: list[str] = []
        self.fail = fail or {}
        self.devices = devices
        self.capturing = False
        self.graphs: set[int] = set()

    def __getattr__(self, name):
        if not name.startswith("cu"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append(name)
            if name in self.fail:
                if name == "cuStreamEndCapture":  # the driver ends capture even when it reports the capture invalid
                    self.capturing = False
                return self.fail[name]
            return getattr(self, "_" + name, lambda *a: 0)(*args)

        return call

    def _cuDeviceGetCount(self, ref):
        _out(ref, self.devices)
        return 0

    def _cuDeviceGet(self, ref, ordinal):
        _out(ref, ordinal)
        return 0

    def _cuDevicePrimaryCtxRetain(self, ref, dev):
        _out(ref, 0x1000)
        return 0

    def _cuGetErrorString(self, status, ref):
        _out(ref, b"fake error %d" % status)
        return 0

    def _cuDeviceGetAttribute(self, ref, attr, dev):
        _out(ref, {cuda_mod.ATTR_CC_MAJOR: 8, cuda_mod.ATTR_CC_MINOR: 7, cuda_mod.ATTR_MULTIPROCESSOR_COUNT: 16}[attr])
        return 0

    def _cuDeviceGetName(self, buf, size, dev):
        buf.value = b"Orin"
        return 0

    def _cuMemAlloc_v2(self, ref, size):
        _out(ref, 0xDEAD0000)
        return 0

    def _cuStreamBeginCapture_v2(self, stream, mode):
        self.capturing = True
        return 0

    def _cuStreamEndCapture(self, stream, ref):
        self.capturing = False
        _out(ref, 0x5000)
        self.graphs.add(0x5000)
        return 0

    def _cuGraphInstantiateWithFlags(self, ref, graph, flags):
        _out(ref, 0x6000)
        return 0

    def _cuGraphDestroy(self, graph):
        self.graphs.discard(graph.value)
        return 0


def test_identity_through_the_driver_api():
    drv = FakeDriver()
    cuda = cuda_mod.Cuda(0, lib=drv)
    assert cuda.identity() == {"name": "Orin", "compute_capability": "87", "multiprocessor_count": 16}
    assert drv.calls[:5] == ["cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDevicePrimaryCtxRetain", "cuCtxSetCurrent"]
    assert cuda.malloc(10) == 0xDEAD0000


def test_failing_work_leaves_capture_mode_and_frees_the_graph():
    drv = FakeDriver()
    cuda = cuda_mod.Cuda(0, lib=drv)

    def work():
        raise RuntimeError("a plugin cannot be captured")

    with pytest.raises(RuntimeError, match="cannot be captured"):
        cuda.capture_graph(1, work)
    assert not drv.capturing  # the stream runs again: the no-graph fallback can work
    assert drv.calls[-2:] == ["cuStreamEndCapture", "cuGraphDestroy"] or drv.calls[-1] == "cuStreamEndCapture"
    assert not drv.graphs


def test_failed_instantiate_frees_the_graph():
    drv = FakeDriver(fail={"cuGraphInstantiateWithFlags": 1})
    cuda = cuda_mod.Cuda(0, lib=drv)
    with pytest.raises(cuda_mod.CudaError, match="cuGraphInstantiateWithFlags failed: fake error 1"):
        cuda.capture_graph(1, lambda: None)
    assert not drv.capturing and not drv.graphs and drv.calls[-1] == "cuGraphDestroy"


def test_invalidated_capture_is_an_error_not_a_stuck_stream():
    drv = FakeDriver(fail={"cuStreamEndCapture": 901})
    cuda = cuda_mod.Cuda(0, lib=drv)
    with pytest.raises(cuda_mod.CudaError, match="cuStreamEndCapture"):
        cuda.capture_graph(1, lambda: None)
    assert not drv.capturing


def test_successful_capture_returns_the_executable_and_frees_the_graph():
    drv = FakeDriver()
    cuda = cuda_mod.Cuda(0, lib=drv)
    ran = []
    assert cuda.capture_graph(1, lambda: ran.append(1)) == 0x6000
    assert ran == [1] and not drv.graphs and not drv.capturing


def test_no_gpu_or_missing_device_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="no usable NVIDIA GPU"):
        cuda_mod.Cuda(0, lib=FakeDriver(fail={"cuInit": cuda_mod.CUDA_ERROR_NO_DEVICE}))
    with pytest.raises(BackendUnavailableError, match="cuda:1 does not exist: this machine has 1"):
        cuda_mod.Cuda(1, lib=FakeDriver())


def test_copies_pass_64_bit_device_pointers():
    drv = FakeDriver()
    seen = []
    drv._cuMemcpyHtoDAsync_v2 = lambda dst, src, n, stream: seen.append((dst.value, n.value)) or 0
    cuda = cuda_mod.Cuda(0, lib=drv)
    cuda.copy_h2d(0x7F00_0000_0000, np.zeros(4, np.float32), 0)
    assert seen == [(0x7F00_0000_0000, 16)]


def test_driver_library_missing_names_the_driver_not_a_pip_package(monkeypatch):
    """pip TensorRT links the CUDA runtime statically: the one library to look for is the driver's."""
    def no_library(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(BackendUnavailableError) as e:
        cuda_mod.load_driver()
    assert "libcuda.so.1" in str(e.value) and "NVIDIA driver" in str(e.value)
    assert "pip install" not in str(e.value) and "cudart" not in str(e.value)
