"""TensorRT backends: run the engines `swiftbrush export engine` built (TensorRT, or TensorRT for RTX).

    swiftbrush generate --model out/engine --prompt "..." --out out/img
    Generator.load("out/engine", backend="tensorrt", device="cuda:0", cuda_graph=True)
    Generator.load("out/engine-rtx")                      # backend "tensorrt-rtx", from the manifest

Torch-free: CUDA through runtime/cuda.py (the driver API over ctypes). One stream; one
activation buffer shared by the three engines (they run one after another on that
stream, so the largest engine's need is enough); I/O buffers allocated once at each
engine's largest shapes; the UNet writes its latent straight into the decoder's
input buffer; with static shapes the UNet + decoder launch is captured once as a CUDA
graph and replayed. Version differences go through trt_compat. An engine built for
another GPU model, SM count, TensorRT version or backend is refused with the command
that rebuilds it. TensorRT for RTX engines are also checked by its own validity call,
and their JIT-compiled kernels are kept in `runtime_cache.bin` beside the engines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks this wrapper against tensorrt-stubs; tensorrt is imported lazily
    from tensorrt import ICudaEngine, IExecutionContext

import numpy as np

from swiftbrush_runtime import trt_compat
from swiftbrush_runtime.backends import backend_for, default_backend
from swiftbrush_runtime.backends.base import Backend, BackendUnavailableError
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.manifest import atomic_write

logger = logging.getLogger(__name__)

ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")
LIBRARY_NAME = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}
RUNTIME_CACHE = "runtime_cache.bin"  # TensorRT for RTX's JIT kernels, beside its engines (not in the manifest)

TENSORRT_INSTALL = (
    "TensorRT is not installed: on a desktop GPU pip install 'swiftbrush[trt]' (TensorRT 10.x for CUDA 12, driver R525+) "
    "or 'swiftbrush[trt-cu13]' (TensorRT 11 for CUDA 13, driver R580+); on Jetson it ships with JetPack "
    "(sudo apt install python3-libnvinfer), see docs/JETSON.md"
)
RTX_INSTALL = (
    "TensorRT for RTX is not installed: pip install 'swiftbrush[rtx]' (RTX GPUs, Turing and later; builds engines ahead "
    "of time without a GPU too)"
)


class EngineMismatchError(InvalidModelError):
    """Engines built for another GPU model, TensorRT version or backend."""


def import_tensorrt() -> Any:
    """The `tensorrt` module, or BackendUnavailableError with the install line."""
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    # tensorrt-stubs alone leaves an importable namespace package with no API in it.
    if tensorrt is None or not hasattr(tensorrt, "Runtime"):
        raise BackendUnavailableError(TENSORRT_INSTALL)
    return tensorrt


def import_tensorrt_rtx() -> Any:
    """TensorRT for RTX: `tensorrt_rtx` (NVIDIA's metapackage) or `tensorrt_rtx_bindings` (PyPI's libs + bindings wheels)."""
    import importlib

    for name in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "Runtime"):
            return module
    raise BackendUnavailableError(RTX_INSTALL)


def import_engine_module(backend: str) -> Any:
    return import_tensorrt_rtx() if backend == "tensorrt-rtx" else import_tensorrt()


def rebuild_command(manifest: dict[str, Any], path: Path) -> str:
    onnx = manifest.get("source", {}).get("onnx", "<onnx dir>")
    mode = "--dynamic" if manifest.get("dynamic") else "--static"
    backend = default_backend(manifest)
    extra = f" --backend {backend}" if backend != "tensorrt" else ""
    return f"swiftbrush export engine --onnx {onnx} --out {path}-rebuilt {mode} --batch {manifest.get('batch', {}).get('opt', 1)}{extra}"


def check_engine_compat(manifest: dict[str, Any], trt_version: str, gpu: dict[str, Any], path: Path, backend: str = "tensorrt") -> None:
    """Refuse engines from another library version, GPU model or SM count (engines do not move).

    Engines of the other TensorRT are refused before this, by backends.backend_for.
    """
    built_version = manifest.get("backend_version", manifest.get("tensorrt_version"))
    built_cc = manifest.get("compute_capability")
    built_gpu = manifest.get("gpu_name")
    built_sms = manifest.get("multiprocessor_count")
    problems = []
    if built_version != trt_version:
        problems.append(f"{LIBRARY_NAME[backend]} {built_version}, this machine has {trt_version}")
    other_model = built_gpu and gpu.get("name") not in (None, "unknown", built_gpu)
    # Modules of one family share a name and compute capability (every Orin is "Orin", sm87): the SM count tells them apart.
    other_size = built_sms is not None and gpu.get("multiprocessor_count") is not None and int(built_sms) != int(gpu["multiprocessor_count"])
    if built_cc != gpu["compute_capability"] or other_model or other_size:
        sms = f", {built_sms} SMs" if built_sms is not None else ""
        here_sms = f", {gpu['multiprocessor_count']} SMs" if gpu.get("multiprocessor_count") is not None else ""
        problems.append(f"GPU {built_gpu or 'any'} (sm{built_cc}{sms}), this machine has {gpu.get('name')} (sm{gpu['compute_capability']}{here_sms})")
    if problems:
        raise EngineMismatchError(f"{path} was built for {'; '.join(problems)}; rebuild here: {rebuild_command(manifest, path)}")


class _Engine:
    """One deserialized engine, its context on shared memory, and its I/O buffers."""

    def __init__(self, trt: Any, engine: "ICudaEngine", cuda: Any, file: Path, spec: dict[str, Any], runtime_cache: Any = None) -> None:
        self.name = file.name
        self.engine = engine
        self.context: IExecutionContext = trt_compat.create_context(trt, engine, shared_memory=True, runtime_cache=runtime_cache)
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


def load_engine(trt: Any, runtime: Any, file: Path, manifest: dict[str, Any], path: Path) -> "ICudaEngine":
    """Deserialize one engine, after TensorRT for RTX's own validity check where the runtime has one."""
    blob = file.read_bytes()
    verdict = trt_compat.engine_validity(trt, runtime, blob)
    if verdict is not None:
        validity, diagnostics = verdict
        if validity == "INVALID":
            raise EngineMismatchError(f"{file} cannot run on this GPU ({diagnostics or 'TensorRT for RTX says invalid'}); rebuild here: {rebuild_command(manifest, path)}")
        if validity == "SUBOPTIMAL":
            logger.warning("%s runs here but not at full speed (%s); rebuilding it on this GPU may help", file.name, diagnostics)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise InvalidModelError(
            f"{file} does not deserialize with {trt_compat.flavour(trt)} {trt.__version__} (corrupted, or built by another version); "
            f"rebuild it: {rebuild_command(manifest, path)}"
        )
    return engine


class TrtBackend(Backend):
    name = "tensorrt"
    keeps_runtime_cache = False  # TensorRT for RTX compiles kernels at the first run and can keep them

    def __init__(self, path: Path, manifest: dict[str, Any], device: str | None = None, cuda_graph: bool = True, decoder: str | None = None, **_: Any) -> None:
        backend_for(manifest, self.name, path)  # engines built for the other TensorRT: one line naming the right backend
        kind = (device or "cuda").split(":")
        if kind[0] != "cuda":
            raise InvalidArgumentError(f"the {self.name} backend runs on cuda devices, got --device {device}")
        trt = import_engine_module(self.name)
        from swiftbrush_runtime.cuda import Cuda

        self.trt = trt
        self.path = Path(path)
        self.cuda = Cuda(int(kind[1]) if len(kind) > 1 else 0)
        self.device = f"cuda:{self.cuda.device}"
        gpu = self.cuda.identity()
        self.gpu = gpu
        check_engine_compat(manifest, trt.__version__, gpu, self.path, backend=self.name)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt_compat.init_plugins(trt, self.logger)  # before deserializing: engines may hold plugin layers (8.5 / 8.6 GroupNorm)
        self.runtime = trt.Runtime(self.logger)
        from swiftbrush_runtime.backends import decoder_graph

        self.decoder = decoder_graph(manifest, decoder)
        stages = ("text_encoder", "unet", self.decoder)
        files = {s: self.path / manifest["engines"][s]["file"] for s in stages}
        loaded = {s: load_engine(trt, self.runtime, f, manifest, self.path) for s, f in files.items()}
        self.runtime_cache: Any = None
        self._cache_loaded = b""
        if self.keeps_runtime_cache:
            self._open_runtime_cache(loaded["unet"])
        self.engines = {s: _Engine(trt, loaded[s], self.cuda, files[s], manifest["engines"][s], self.runtime_cache) for s in stages}
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

    def _open_runtime_cache(self, engine: "ICudaEngine") -> None:
        """TensorRT for RTX: one JIT kernel cache for all engines, read from beside them when it fits this GPU."""
        cache_file = self.path / RUNTIME_CACHE
        data = cache_file.read_bytes() if cache_file.is_file() else b""
        made = trt_compat.create_runtime_cache(engine, data)
        if made is not None:
            self.runtime_cache, loaded = made
            self._cache_loaded = data if loaded else b""

    def _save_runtime_cache(self) -> None:
        """Keep the kernels compiled in this session for the next (atomic; a read-only folder only warns)."""
        if self.runtime_cache is None:
            return
        data = bytes(self.runtime_cache.serialize())
        if not data or data == self._cache_loaded:
            return
        try:
            atomic_write(self.path / RUNTIME_CACHE, data)
            self._cache_loaded = data
        except OSError as e:
            logger.warning("could not keep the runtime cache in %s (%s): the next run compiles its kernels again", self.path, e.strerror)

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
        self.cuda.make_current()  # the driver API binds contexts per thread; an app may call from several
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
        self.cuda.make_current()  # the driver API binds contexts per thread; an app may call from several
        e = self._unet_inputs(noise, embeddings)
        self._execute(e)
        dec = self.engines[self.decoder]
        return self._download(e, e.outputs()[0], ptr=dec.buffers[dec.inputs()[0]])

    def decode(self, latent: np.ndarray) -> np.ndarray:
        self.cuda.make_current()  # the driver API binds contexts per thread; an app may call from several
        e = self.engines[self.decoder]
        name = e.inputs()[0]
        e.set_shapes({name: latent.shape})
        self._upload(e, name, latent)
        self._execute(e)
        return self._download(e, e.outputs()[0])

    def run(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        self.cuda.make_current()  # the driver API binds contexts per thread; an app may call from several
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
        """Record UNet + decoder once (after a normal run, as TensorRT requires).

        Some plugins and tactics cannot be captured: then the backend runs without a
        graph (capture_graph has taken the stream out of capture mode).
        """
        def work() -> None:
            self._execute(unet)
            self._execute(dec)

        try:
            self.cuda.sync(self.stream)
            self._graph = self.cuda.capture_graph(self.stream, work)
        except Exception as e:
            logger.warning("CUDA graph capture failed (%s); running without it", e)
            self.use_graph = False
            self._graph = 0

    def synchronize(self) -> None:
        self.cuda.make_current()  # the driver API binds contexts per thread; an app may call from several
        self.cuda.sync(self.stream)

    def memory(self) -> dict[str, int]:
        io = sum(sum(e.nbytes.values()) for e in self.engines.values())
        return {"activation_bytes": self.activation_bytes, "io_bytes": io}

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "gpu": self.gpu["name"], "compute_capability": self.gpu["compute_capability"],
                "tensorrt": self.trt.__version__, "cuda_graph": bool(self._graph)}

    def close(self) -> None:
        if getattr(self, "cuda", None) is not None:
            self.cuda.make_current()
        if getattr(self, "runtime_cache", None) is not None:
            self._save_runtime_cache()
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


class TrtRtxBackend(TrtBackend):
    """TensorRT for RTX: the same engine wrapper; the module, validity check and runtime cache differ."""

    name = "tensorrt-rtx"
    keeps_runtime_cache = True
