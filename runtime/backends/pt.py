"""PyTorch backend: runs a student directory directly, no export needed.

    swiftbrush generate --model out/student --backend torch --prompt "..." --out out/img
    Generator.load("out/student", backend="torch", device="cuda", compile=False, cuda_graph=True)
    # compile: True (inductor) or a torch.compile backend name

fp32 on CPU. On CUDA: fp16, SDPA attention (diffusers' default processor) with the
q/k/v projections fused into one matmul (`fuse_qkv`), channels-last memory format for
the UNet and the tiny decoder (not the KL VAE decoder: slower there), the text encoder
and the UNet + decoder each captured as a CUDA graph per input shape (replayed after
the first call), the VAE's encoder dropped, optional torch.compile (default mode) of the
UNet and decoder, and images converted to uint8 on the device for generate().
The output (eps or v) -> x0 -> latent math is the exported graph's, in fp32. benchmarks/gpu_bench.py
(case "levers") measures each lever on its own; RESULTS.md has the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from swiftbrush_runtime.backends.base import Backend, BackendUnavailableError
from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, first_line
from swiftbrush_runtime.onestep import ONESTEP, load_student_modules, read_onestep


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, path: Path, manifest: dict[str, Any], device: str | None = None, compile: bool | str = False, decoder: str | None = None,
        cuda_graph: bool = True, fuse_qkv: bool = True, **_: Any,
    ) -> None:
        try:
            import torch
            from diffusers import AutoencoderKL
            from transformers import CLIPTextModel  # noqa: F401  (load_student_modules needs it: fail here, with the install line)
        except ImportError:
            raise BackendUnavailableError("the torch backend needs torch, diffusers and transformers: pip install 'swiftbrush[train]'") from None
        self.torch = torch
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"--device must be cpu, cuda or cuda:N for torch, got {device!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("device cuda asked for, but torch sees no CUDA GPU (CPU-only torch build or no driver)")
        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        one = read_onestep(Path(path) / ONESTEP)
        from swiftbrush_runtime.backends import decoder_graph

        decoder_graph(manifest, decoder)  # the choice checked before seconds of loading
        self.decoder = decoder or "vae"
        if self.decoder == "taesd" and not (Path(path) / "taesd" / "config.json").is_file():
            raise InvalidModelError(
                f"{path} has no taesd/ folder: put a diffusers AutoencoderTiny trained for its VAE there "
                "(for SD 1.x/2.x: madebyollin/taesd), or use --decoder vae"
            )
        k, m = one.x0_coefficients()  # x0 = (noise - k * output) * m; the decoder takes x0 / scaling_factor
        self.c_eps, self.c_out = k, m / one.scaling_factor
        self.timestep = one.timestep
        try:
            modules = load_student_modules(path, self.dtype, decoder=self.decoder)
        except Exception as e:
            raise InvalidModelError(f"student weights in {path} do not load ({first_line(e)})") from None
        self.text_encoder, self.unet, self.vae = modules["text_encoder"], modules["unet"], modules["vae"]
        # The tiny decoder decodes the scaled latent x0: undo the KL VAE's 1/scaling_factor.
        self.latent_scale = one.scaling_factor if self.decoder == "taesd" else 1.0
        if isinstance(self.vae, AutoencoderKL):  # one step only decodes: the encoder is dead weight (34M params)
            self.vae.encoder = self.vae.quant_conv = None
        for m in (self.text_encoder, self.unet, self.vae):
            m.to(device)
        if device.startswith("cuda"):
            # Measured on an H100 (RESULTS.md, levers): channels-last speeds up the UNet and the
            # tiny decoder but slows the KL VAE decoder (cuDNN's NCHW kernels win at 512x512).
            self.unet.to(memory_format=torch.channels_last)
            if self.decoder == "taesd":
                self.vae.to(memory_format=torch.channels_last)
            if fuse_qkv:  # one [3C, C] matmul instead of three (k/v only for cross-attention)
                self.unet.fuse_qkv_projections()
                if isinstance(self.vae, AutoencoderKL):
                    self.vae.fuse_qkv_projections()
        self.use_graph = cuda_graph and device.startswith("cuda")
        self._graphs: dict[tuple, tuple | None] = {}  # (stage, input shapes) -> (graph, static inputs, static output); None: eager
        self.compile = (compile if isinstance(compile, str) else "inductor") if compile else None
        if self.compile:  # default mode (the autotuning modes do not finish compiling in a short GPU slot), static shapes
            # Not the text encoder: compiled, it gained 0.1 ms of 1.6 on an H100 (RESULTS.md, within
            # run-to-run spread) for a longer first call; under its CUDA graph it stays eager.
            self.unet = torch.compile(self.unet, backend=self.compile, dynamic=False)
            self.vae.decode = torch.compile(self.vae.decode, backend=self.compile, dynamic=False)

    def _t(self, a: np.ndarray, dtype: Any = None) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype or self.dtype)

    def _graphed(self, stage: str, fn: Any, *inputs: Any) -> Any:
        """fn(*inputs); on CUDA replayed from a graph captured once per stage and input shapes.

        The result is the graph's static output buffer: copy it out before the next call.
        """
        if not self.use_graph:
            return fn(*inputs)
        key = (stage, *(tuple(x.shape) for x in inputs))
        if key not in self._graphs:
            try:
                self._graphs[key] = capture_cuda_graph(self.torch, fn, *inputs)
            except RuntimeError:  # a stage that syncs with the host cannot be captured: it runs eagerly
                self._graphs[key] = None
        entry = self._graphs[key]
        if entry is None:
            return fn(*inputs)
        graph, static, out = entry
        for buffer, x in zip(static, inputs):
            buffer.copy_(x)
        graph.replay()
        return out

    def _text(self, ids: Any) -> Any:
        return self.text_encoder(ids)[0]

    def _latent(self, noise: Any, emb: Any) -> Any:
        t = self.torch.full((noise.shape[0],), self.timestep, dtype=self.torch.int64, device=self.device)
        out = self.unet(noise.to(self.dtype), t, emb, return_dict=False)[0].float()
        return (noise.float() - self.c_eps * out) * self.c_out

    def _decode(self, latent: Any) -> Any:
        return self.vae.decode((latent * self.latent_scale).to(self.dtype), return_dict=False)[0]

    def _pipeline(self, noise: Any, emb: Any) -> tuple[Any, Any]:
        """The decoder's image and the same as uint8 NHWC, both from one graph.

        The uint8 conversion is to_uint8's math in fp32 on the device, so it rounds the same,
        and a quarter of the bytes (no fp32 upcast) crosses to the host: 0.7 ms of 9.2 per
        512x512 image on an H100, compiled, tiny decoder (RESULTS.md).
        """
        image = self._decode(self._latent(noise, emb))
        u8 = ((image.float() / 2 + 0.5).clamp(0.0, 1.0) * 255).round().to(self.torch.uint8)
        return image, u8.permute(0, 2, 3, 1).contiguous()

    # Each stage, and UNet + decoder together (what generate() runs), under its own CUDA graph, so
    # `swiftbrush bench`'s per-component times are those of the path generate() takes.
    def encode(self, ids: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            ids_t = self.torch.from_numpy(ids.astype(np.int64)).to(self.device)
            return self._graphed("text_encoder", self._text, ids_t).float().cpu().numpy()

    def denoise(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self._graphed("unet", self._latent, self._t(noise, self.torch.float32), self._t(embeddings)).cpu().numpy()

    def decode(self, latent: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self._graphed("decoder", self._decode, self._t(latent, self.torch.float32)).float().cpu().numpy()

    def _run_pipeline(self, noise: np.ndarray, embeddings: np.ndarray) -> tuple[Any, Any]:
        with self.torch.inference_mode():
            z, emb = self._t(noise, self.torch.float32), self._t(embeddings)
            return self._graphed("pipeline", self._pipeline, z, emb)

    def run(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._run_pipeline(noise, embeddings)[0].float().cpu().numpy()

    def run_uint8(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._run_pipeline(noise, embeddings)[1].cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def memory(self) -> dict[str, int]:
        """GPU bytes torch holds now and at its peak (weights, graph pools, activations); empty on CPU."""
        if not self.device.startswith("cuda"):
            return {}
        cuda = self.torch.cuda
        return {"allocated_bytes": int(cuda.memory_allocated(self.device)), "peak_allocated_bytes": int(cuda.max_memory_allocated(self.device))}

    def info(self) -> dict[str, Any]:
        out = {"backend": self.name, "device": self.device, "decoder": self.decoder, "dtype": str(self.dtype).replace("torch.", ""), "torch": self.torch.__version__,
               "compile": self.compile, "cuda_graph": self.use_graph}
        if self.device.startswith("cuda"):
            out["gpu"] = self.torch.cuda.get_device_name(self.device)
        return out

    def close(self) -> None:
        self.text_encoder = self.unet = self.vae = None
        self._graphs.clear()  # each graph holds its private memory pool and static buffers


def capture_cuda_graph(torch: Any, fn: Any, *inputs: Any) -> tuple:
    """fn over static copies of `inputs` as one CUDA graph: (graph, static inputs, static output).

    Warm-up runs on a side stream first, as torch.cuda.graphs asks (and compiles, if fn is compiled).
    """
    static = tuple(x.clone() for x in inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)
    return graph, static, out
