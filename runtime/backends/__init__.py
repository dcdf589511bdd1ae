"""Backends: one module each, imported only when chosen (their libraries are optional).

    Generator.load(dir, backend="onnxruntime" | "tensorrt" | "tensorrt-rtx" | "torch" | "auto")

Each backend turns token ids into text embeddings, noise plus embeddings into the
decoder-ready latent, and latents into images in [-1, 1]; the Generator does the
rest (tokenizing, noise, batching, caching, images).
"""

from __future__ import annotations

from swiftbrush_runtime.backends.base import Backend, BackendUnavailableError

BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx", "torch")
# Which directory kind each backend reads (manifest "kind").
KIND_OF = {"onnxruntime": "onnx", "tensorrt": "engine", "tensorrt-rtx": "engine", "torch": "student"}
# The default backend of each kind; an engine directory's manifest names its own (tensorrt or tensorrt-rtx).
BACKEND_OF = {"onnx": "onnxruntime", "engine": "tensorrt", "student": "torch"}
A_KIND = {"onnx": "an ONNX", "engine": "an engine", "student": "a student"}  # for messages: "{path} is a student directory"


def default_backend(manifest: dict) -> str:
    """The backend that runs a directory when none is asked for."""
    if manifest["kind"] == "engine":
        return str(manifest.get("backend", "tensorrt"))
    return BACKEND_OF[manifest["kind"]]

DECODER_GRAPHS = {"vae": "vae_decoder", "taesd": "taesd_decoder"}


def decoder_graph(manifest: dict, decoder: str | None) -> str:
    """The decoder graph/engine to run: the one asked for, else the one the directory was made with."""
    from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError

    choice = decoder or manifest.get("decoder", "vae")
    if choice not in DECODER_GRAPHS:
        raise InvalidArgumentError(f"--decoder must be {' or '.join(DECODER_GRAPHS)}, got {choice!r}")
    graphs = manifest.get("graphs") or manifest.get("engines") or {}
    if graphs and DECODER_GRAPHS[choice] not in graphs:
        raise InvalidModelError(f"this directory has no {DECODER_GRAPHS[choice]}; re-export with --decoder {choice}")
    return DECODER_GRAPHS[choice]


def backend_for(manifest: dict, backend: str, path) -> str:
    """The backend that runs a folder: its own for "auto"; one that reads another kind (or engines of the other TensorRT) is refused.

    The one rule of `generate`, `bench` and `Generator.load`: the folder given is the folder
    run, and a mismatch names the command that makes the folder the backend needs.
    """
    from swiftbrush_runtime.errors import InvalidModelError

    kind = manifest["kind"]
    own = default_backend(manifest)
    chosen = own if backend == "auto" else backend
    if KIND_OF[chosen] != kind:
        raise InvalidModelError(f"{path} is {A_KIND[kind]} directory, which the {chosen} backend cannot run; {_fix_for(kind, chosen, path)}")
    if kind == "engine" and chosen != own:
        raise InvalidModelError(
            f"{path} holds {own} engines, which the {chosen} backend cannot run; run it with --backend {own}, "
            f"or build {chosen} engines: swiftbrush export engine --backend {chosen} ..."
        )
    return chosen


def _fix_for(kind: str, backend: str, path) -> str:
    if backend in ("tensorrt", "tensorrt-rtx") and kind == "onnx":
        flag = " --backend tensorrt-rtx" if backend == "tensorrt-rtx" else ""
        return f"build engines first: swiftbrush export engine --onnx {path} --out {path}-engine{flag}"
    if kind == "student" and backend in ("onnxruntime", "tensorrt", "tensorrt-rtx"):
        return f"export it first: swiftbrush export onnx --student {path} --out {path}-onnx"
    return f"use --backend {BACKEND_OF[kind]}"


__all__ = ["A_KIND", "DECODER_GRAPHS", "decoder_graph", "default_backend", "backend_for", "BACKENDS", "BACKEND_OF", "KIND_OF", "Backend", "BackendUnavailableError", "create"]


def create(backend: str, path, manifest: dict, **options) -> Backend:
    """Import and construct one backend by name."""
    if backend == "onnxruntime":
        from swiftbrush_runtime.backends.ort import OrtBackend

        return OrtBackend(path, manifest, **options)
    if backend == "tensorrt":
        from swiftbrush_runtime.backends.trt import TrtBackend

        return TrtBackend(path, manifest, **options)
    if backend == "tensorrt-rtx":
        from swiftbrush_runtime.backends.trt import TrtRtxBackend

        return TrtRtxBackend(path, manifest, **options)
    if backend == "torch":
        from swiftbrush_runtime.backends.pt import TorchBackend

        return TorchBackend(path, manifest, **options)
    raise AssertionError(backend)
