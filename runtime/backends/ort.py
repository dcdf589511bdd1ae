"""ONNX Runtime backend: reads an ONNX directory from `swiftbrush export onnx`.

    swiftbrush generate --model out/onnx --backend onnxruntime --prompt "..." --out out/img
    Generator.load("out/onnx", backend="onnxruntime", device="cuda", providers=[...])

Execution providers are chosen by availability (CUDA, then CPU; TensorRT's EP only
when asked for, since it builds engines on first use) and can be overridden. On
CUDA the UNet -> decoder chain runs with IO binding, the latent staying on the GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from swiftbrush_runtime.backends.base import Backend, BackendUnavailableError
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, first_line

_DEFAULT_ORDER = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "the onnxruntime backend needs ONNX Runtime: pip install 'swiftbrush[ort]' (or onnxruntime-gpu on CUDA machines; "
            "on Jetson, NVIDIA's onnxruntime-gpu build for your JetPack)"
        ) from None
    return onnxruntime


def choose_providers(available: Sequence[str], device: str | None, providers: Sequence[str] | None) -> tuple[list[str], str]:
    """(providers, device kind "cuda"/"cpu") from what is installed and what was asked."""
    if providers:
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(f"ONNX Runtime provider(s) {', '.join(missing)} not available here (available: {', '.join(available)})")
        gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers)
        return list(providers), "cuda" if gpu else "cpu"
    kind = (device or "auto").split(":")[0]
    if kind == "auto":
        kind = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "device cuda asked for, but this ONNX Runtime has no CUDAExecutionProvider; pip install onnxruntime-gpu (and uninstall onnxruntime)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    if kind != "cpu":
        raise InvalidArgumentError(f"--device must be cpu, cuda or cuda:N for onnxruntime, got {device!r}")
    return ["CPUExecutionProvider"], "cpu"


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        device: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        decoder: str | None = None,
    ) -> None:
        ort = _import_ort()
        self._ort = ort
        self.providers, self.device = choose_providers(ort.get_available_providers(), device, providers)
        self.device_id = int(device.split(":")[1]) if device and ":" in device else 0
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("SWIFTBRUSH_ORT_THREADS", "0") or 0)
        # Three sessions run one after another: spinning worker threads of the idle
        # ones would only steal cores from the running one.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        provider_options = [{"device_id": self.device_id} if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else {} for p in self.providers]
        from swiftbrush_runtime.backends import decoder_graph

        self.decoder = decoder_graph(manifest, decoder)
        self.sessions: dict[str, Any] = {}
        for name in ("text_encoder", "unet", self.decoder):
            file = Path(path) / name / "model.onnx"
            try:
                self.sessions[name] = ort.InferenceSession(str(file), sess_options=opts, providers=self.providers, provider_options=provider_options)
            except Exception as e:
                raise InvalidModelError(f"{file} does not load in ONNX Runtime ({first_line(e)}); re-export with `swiftbrush export onnx`") from None
        batch = manifest.get("batch", {})
        self.max_batch = int(batch.get("max", 1))
        self.static_batch = None if manifest.get("dynamic") else self.max_batch
        self._ids_dtype = np.int64 if "int64" in self.sessions["text_encoder"].get_inputs()[0].type else np.int32
        self._use_binding = self.device == "cuda"
        # Declared-but-unused inputs (the UNet's `timestep`, kept for optimum's loader).
        unused = manifest.get("graphs", {}).get("unet", {}).get("unused_inputs", {})
        self._unet_extra = {name: np.zeros((), dtype=np.dtype(dt)) for name, dt in unused.items()}

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.sessions[name].run(None, feeds)[0]

    def encode(self, ids: np.ndarray) -> np.ndarray:
        return self._run("text_encoder", {"input_ids": ids.astype(self._ids_dtype, copy=False)})

    def denoise(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._run("unet", {"sample": noise, "encoder_hidden_states": embeddings, **self._unet_extra})

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self._run(self.decoder, {"latent_sample": latent})

    def run(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        if not self._use_binding:
            return super().run(noise, embeddings)
        # IO binding: inputs copied to the GPU once, the latent never leaves it.
        unet, dec = self.sessions["unet"], self.sessions[self.decoder]
        b1 = unet.io_binding()
        b1.bind_cpu_input("sample", np.ascontiguousarray(noise))
        b1.bind_cpu_input("encoder_hidden_states", np.ascontiguousarray(embeddings))
        for name, value in self._unet_extra.items():
            b1.bind_cpu_input(name, value)
        b1.bind_output(unet.get_outputs()[0].name, "cuda", self.device_id)  # by position: out_sample, or latent_sample in older ONNX folders
        unet.run_with_iobinding(b1)
        latent = b1.get_outputs()[0]
        b2 = dec.io_binding()
        b2.bind_ortvalue_input("latent_sample", latent)
        b2.bind_output("sample", "cuda", self.device_id)
        dec.run_with_iobinding(b2)
        return b2.copy_outputs_to_cpu()[0]

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "decoder": self.decoder, "providers": self.providers, "onnxruntime": self._ort.__version__}

    def close(self) -> None:
        self.sessions.clear()
