"""TensorRT backend: runs the engines `swiftbrush export engine` built on this machine.

    swiftbrush generate --model out/engine --prompt "..." --out out/img
    Generator.load("out/engine", backend="tensorrt", device="cuda:0", cuda_graph=True)

Torch-free: CUDA through runtime/cuda.py (ctypes). One stream; one activation
buffer shared by the three engines (they run one after another on that stream, so
the largest engine's need is enough); I/O buffers allocated once at each engine's
largest shapes; the UNet writes its latent straight into the decoder's input
buffer; with static shapes the UNet + decoder launch is captured once as a CUDA
graph and replayed. Version differences go through trt_compat. An engine built
for another GPU model or TensorRT version is refused with the rebuild command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks this wrapper against tensorrt-stubs; tensorrt is imported lazily
    from tensorrt import ICudaEngine, IExecutionContext

import numpy as np

from swiftbrush_runtime import trt_compat
from swiftbrush_runtime.backends.base import Backend, BackendUnavailableError
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError

logger = logging.getLogger(__name__)



class EngineMismatchError(InvalidModelError):
    """Engines built for another GPU model or TensorRT version."""


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    # tensorrt-stubs alone leaves an importable namespace package with no API in it.
    if tensorrt is None or not hasattr(tensorrt, "Runtime"):
        raise BackendUnavailableError(
            "TensorRT is not installed: on a desktop GPU pip install 'swiftbrush[trt]' (tensorrt, cuda-python); "
            "on Jetson it ships with JetPack (sudo apt install nvidia-tensorrt python3-libnvinfer), see docs/JETSON.md"
        )
    return tensorrt


def rebuild_command(manifest: dict[str, Any], path: Path) -> str:
    onnx = manifest.get("source", {}).get("onnx", "<onnx dir>")
    mode = "--dynamic" if manifest.get("dynamic") else "--static"
    return f"swiftbrush export engine --onnx {onnx} --out {path}-rebuilt {mode} --batch {manifest.get('batch', {}).get('opt', 1)}"


def check_engine_compat(manifest: dict[str, Any], trt_version: str, gpu: dict[str, str], path: Path) -> None:
    """Refuse engines from another TensorRT version or GPU model (engines do not move)."""
    built_trt = manifest.get("tensorrt_version")
    built_cc = manifest.get("compute_capability")
    built_gpu = manifest.get("gpu_name")
    problems = []
    if built_trt != trt_version:
        problems.append(f"TensorRT {built_trt}, this machine has {trt_version}")
    if built_cc != gpu["compute_capability"] or (built_gpu and gpu.get("name") not in (None, "unknown", built_gpu)):
        problems.append(f"GPU {built_gpu} (sm{built_cc}), this machine has {gpu.get('name')} (sm{gpu['compute_capability']})")
    if problems:
        raise EngineMismatchError(f"{path} was built for {'; '.join(problems)}; rebuild here: {rebuild_command(manifest, path)}")


class _Engine:
    """One deserialized engine, its context on shared memory, and its I/O buffers."""

    def __init__(self, trt: Any, runtime: Any, cuda: Any, file: Path, spec: dict[str, Any]) -> None:
        self.name = file.name
        engine: ICudaEngine | None = runtime.deserialize_cuda_engine(file.read_bytes())
        if engine is None:
            raise InvalidModelError(f"{file} does not deserialize (corrupted, or built by another TensorRT version)")
        self.engine = engine
        self.context: IExecutionContext = trt_compat.create_context(trt, engine, shared_memory=True)
        self.activation_bytes = trt_compat.device_memory_size(engine)
        self.cuda = cuda
        self.io = trt_compat.io_tensors(trt, engine)
        self.shapes_max = {name: tuple(s["max"]) for name, s in spec["inputs"].items()}
        self.dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name, _ in self.io}
        # Output sizes at the largest input shapes, asked from the engine itself.
        self.set_shapes({n: self.shapes_max[n] for n in self.inputs()})
        out_max = {n: self.output_shape(n) for n in self.outputs()}
        self.buffers: dict[str, int] = {}
        self.nbytes: dict[str, int] = {}
        for name, is_input in self.io:
            shape = self.shapes_max[name] if is_input else out_max[name]
            n = int(np.prod(shape)) * self.dtypes[name].itemsize
            self.buffers[name] = cuda.malloc(n)
            self.nbytes[name] = n
            self.context.set_tensor_address(name, self.buffers[name])

    def inputs(self) -> list[str]:
        return [n for n, i in self.io if i]

    def outputs(self) -> list[str]:
        return [n for n, i in self.io if not i]

    def set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise InvalidArgumentError(f"{self.name}: input {name} shape {shape} is outside the engine's profile (max {self.shapes_max[name]})")

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def bind(self, name: str, ptr: int) -> None:
        self.context.set_tensor_address(name, ptr)



class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, manifest: dict[str, Any], device: str | None = None, cuda_graph: bool = True, decoder: str | None = None, **_: Any) -> None:
        trt = import_tensorrt()
        from swiftbrush_runtime.cuda import Cuda

        kind = (device or "cuda").split(":")
        if kind[0] != "cuda":
            raise InvalidArgumentError(f"the tensorrt backend runs on cuda devices, got --device {device}")
        self.trt = trt
        self.cuda = Cuda(int(kind[1]) if len(kind) > 1 else 0)
        self.device = f"cuda:{self.cuda.device}"
        gpu = {"name": self.cuda.device_name(), "compute_capability": self.cuda.compute_capability()}
        self.gpu = gpu
        check_engine_compat(manifest, trt.__version__, gpu, Path(path))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        from swiftbrush_runtime.backends import decoder_graph

        self.decoder = decoder_graph(manifest, decoder)
        stages = ("text_encoder", "unet", self.decoder)
        self.engines = {s: _Engine(trt, self.runtime, self.cuda, Path(path) / manifest["engines"][s]["file"], manifest["engines"][s]) for s in stages}
        # One activation buffer for all: the stages run one after another on one stream.
        self.activation_bytes = max(e.activation_bytes for e in self.engines.values())
        self.activations = self.cuda.malloc(self.activation_bytes)
        for e in self.engines.values():
            trt_compat.set_device_memory(e.context, self.activations, self.activation_bytes)
        self.stream = self.cuda.stream()
        batch = manifest.get("batch", {})
        self.max_batch = int(batch.get("max", 1))
        self.dynamic = bool(manifest.get("dynamic"))
        self.static_batch = None if self.dynamic else self.max_batch
        # The UNet's output buffer is the decoder's input buffer: no copy in between.
        unet, dec = self.engines["unet"], self.engines[self.decoder]
        out, into = unet.outputs()[0], dec.inputs()[0]
        self.cuda.free(unet.buffers[out])
        unet.buffers[out] = dec.buffers[into]
        unet.bind(out, dec.buffers[into])
        self._pending: list[np.ndarray] = []
        self.use_graph = cuda_graph and not self.dynamic
        self._graph = 0

    # --- stages ---------------------------------------------------------------

    def _upload(self, engine: _Engine, name: str, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array, dtype=engine.dtypes[name])
        assert a.nbytes <= engine.nbytes[name], (name, a.shape, engine.shapes_max[name])
        self.cuda.copy_h2d(engine.buffers[name], a, self.stream)
        self._pending.append(a)  # the async copy reads it until the next sync

    def _download(self, engine: _Engine, name: str, ptr: int | None = None) -> np.ndarray:
        out = np.empty(engine.output_shape(name), dtype=engine.dtypes[name])
        self.cuda.copy_d2h(out, engine.buffers[name] if ptr is None else ptr, self.stream)
        self.cuda.sync(self.stream)
        self._pending.clear()
        return out.astype(np.float32, copy=False)

    def _execute(self, engine: _Engine) -> None:
        if not trt_compat.execute(engine.context, self.stream):
            raise RuntimeError(f"{engine.name}: execute_async_v3 failed")

    def encode(self, ids: np.ndarray) -> np.ndarray:
        e = self.engines["text_encoder"]
        name = e.inputs()[0]
        e.set_shapes({name: ids.shape})
        self._upload(e, name, ids)
        self._execute(e)
        return self._download(e, "last_hidden_state")

    def _unet_inputs(self, noise: np.ndarray, embeddings: np.ndarray) -> _Engine:
        e = self.engines["unet"]
        e.set_shapes({"sample": noise.shape, "encoder_hidden_states": embeddings.shape})
        self._upload(e, "sample", noise)
        self._upload(e, "encoder_hidden_states", embeddings)
        return e

    def denoise(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        e = self._unet_inputs(noise, embeddings)
        self._execute(e)
        dec = self.engines[self.decoder]
        return self._download(e, e.outputs()[0], ptr=dec.buffers[dec.inputs()[0]])

    def decode(self, latent: np.ndarray) -> np.ndarray:
        e = self.engines[self.decoder]
        name = e.inputs()[0]
        e.set_shapes({name: latent.shape})
        self._upload(e, name, latent)
        self._execute(e)
        return self._download(e, e.outputs()[0])

    def run(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        unet, dec = self._unet_inputs(noise, embeddings), self.engines[self.decoder]
        dec.set_shapes({dec.inputs()[0]: unet.output_shape(unet.outputs()[0])})
        if self.use_graph and self._graph:
            self.cuda.launch_graph(self._graph, self.stream)
        else:
            self._execute(unet)
            self._execute(dec)
            if self.use_graph:
                self._capture(unet, dec)
        return self._download(dec, dec.outputs()[0])

    def _capture(self, unet: _Engine, dec: _Engine) -> None:
        """Record UNet + decoder once (after a normal run, as TensorRT requires)."""
        try:
            self.cuda.sync(self.stream)
            self.cuda.begin_capture(self.stream)
            self._execute(unet)
            self._execute(dec)
            self._graph = self.cuda.end_capture(self.stream)
        except Exception as e:  # some plugins/tactics cannot be captured: run without
            logger.warning("CUDA graph capture failed (%s); running without it", e)
            self.use_graph = False
            self._graph = 0

    def synchronize(self) -> None:
        self.cuda.sync(self.stream)

    def memory(self) -> dict[str, int]:
        io = sum(sum(e.nbytes.values()) for e in self.engines.values())
        return {"activation_bytes": self.activation_bytes, "io_bytes": io}

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "gpu": self.gpu["name"], "compute_capability": self.gpu["compute_capability"],
                "tensorrt": self.trt.__version__, "cuda_graph": bool(self._graph)}

    def close(self) -> None:
        if getattr(self, "_graph", 0):
            self.cuda.destroy_graph(self._graph)
            self._graph = 0
        for ptr in {p for e in getattr(self, "engines", {}).values() for p in e.buffers.values()}:
            self.cuda.free(ptr)
        self.engines = {}
        if getattr(self, "activations", 0):
            self.cuda.free(self.activations)
            self.activations = 0
        if getattr(self, "stream", 0):
            self.cuda.destroy_stream(self.stream)
            self.stream = 0
