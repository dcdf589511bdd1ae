"""Speed on the GPU: the one-step pipeline at SD 2.1-base size, run several ways in one process.

    python -m benchmarks.gpu_bench --tiny --out /tmp/gb              # CPU: tiny widths, fp32, well under a minute
    python -m benchmarks.gpu_bench --out out/gpu_bench               # GPU: every case, both decoders, batch 1 and 4
    python -m benchmarks.gpu_bench --out out/gpu_bench --cases eager,runtime_torch --decoders taesd --batches 1
    python -m benchmarks.gpu_bench --out out/gpu_bench --train       # + distillation step it/s (batch 16, bf16)
    python -m benchmarks.gpu_bench --out out/gpu_bench --compile-batches 1,4   # compiled cases at batch 4 too
    python -m benchmarks.gpu_bench --out out/gpu_bench --cases compile_graph,fp8 --toy-quality out/demo/student

On a lent GPU machine (PyTorch, transformers 5, accelerate and peft there; no diffusers, no
network), carry diffusers as a wheel in the git-ignored .whl/ and install this repo without
its dependencies; the compiled cases run last and every row is saved as it finishes:

    pip download diffusers==0.39.0 --no-deps -d .whl/          # here, once
    pip download torchao==0.18.0 --no-deps -d .whl/            # for the fp8 case (CUDA 13 build, torch >= 2.11)
    # there, with carry [".whl"]:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . &&
    export PYTHONPATH=/tmp/site && set -o pipefail &&
    PYTHONUNBUFFERED=1 timeout 450 python3 -m benchmarks.gpu_bench --out $OUT 2>&1 | tee $OUT/gpu_bench.log

On one H100 (2026-11-26) that command with --train took 272 s (about 120 s of it compiling);
--compile-batches 1,4 adds about 150 s of compiling more. Figures: benchmarks/RESULTS.md.

What runs: SD 2.1-base's architecture with random weights (no download): the 23-layer
1024-wide CLIP text encoder, the 866M UNet and the KL VAE decoder (configs from
benchmarks/sd_configs.py), and a tiny autoencoder decoder (diffusers AutoencoderTiny's default
config, TAESD's architecture). They are written once as a student directory through
`swiftbrush.student.write_student` (weights stored fp16, so fp32 and fp16 runs share
them exactly), 512x512 images from 64x64x4 latents, one UNet call at t=999.

Cases, each for every --decoders and --batches (compiled ones for --compile-batches):
  eager          diffusers-style fp16 modules: text encoder -> UNet -> eps->x0 -> decode
  levers         the eager modules with a CUDA graph, then the torch backend's levers added one
                 at a time (channels-last for the UNet and tiny decoder, fused q/k/v), batch 1:
                 each lever's own effect, no compile time
  compile_graph  torch.compile (default mode, static shapes) on UNet and decoder, each stage
                 and the whole pipeline captured as a CUDA graph; first call = compile time.
                 Plain NCHW, cuDNN autotuner off: the anchor of ../shared/REFERENCE.md
  compile_channels_last  compile_graph with the UNet and the decoders channels-last: whether
                 Inductor's own GroupNorm/SiLU kernels make NHWC win for the KL VAE decoder,
                 which the levers case measured 28% slower in NHWC without compile
  runtime_torch  swiftbrush_runtime.Generator, torch backend (levers + its CUDA graph), numpy in/out
  runtime_torch_compile  the same with torch.compile (default mode): the runtime's fastest torch path
  fp8            compile_graph with the UNet's Linear layers in FP8 (torchao 0.18 quantize_, float8
                 dynamic activations and weights), once per --fp8-granularity: "tensor" (per-tensor
                 scales, fp16 UNet, compile_graph's dtype) and "row" (per-row scales, which torchao
                 takes only from bf16 weights: bf16 UNet). Convolutions (UNet and decoders) keep
                 their dtype: torchao 0.18's float8 conv needs the mslk package and, with its
                 default kernel choice, an SM100 GPU. Linear layers whose features are not
                 multiples of 16 (torch._scaled_mm) and the time-embedding ones (one row per
                 image) keep theirs too. Images also against compile_graph's from this run.
                 Skipped, with the reason, without torchao or without a CUDA GPU of compute
                 capability >= 8.9
  runtime_ort    the same Generator on an fp16 ONNX export, ONNX Runtime on the bench device
  runtime_trt    the same on TensorRT engines (static batch); both skipped, with the reason,
                 where their provider or library is missing
Timings: warm-up excluded; CUDA events around each synchronised call (perf_counter on
CPU); median and p90 ms per call. FLOPs per image from FlopCounterMode (matmuls,
convolutions, attention) at batch 1, the floor at --peak-tflops and measured/floor.
Parity: each case's images against an fp32 run (TF32 off) of the same weights and
inputs; max |a - b| on [0, 1] (unclipped), must be finite and <= 2/255 (fp16) or 1e-4
(fp32). Writes OUT/gpu_bench.json after every row (a timeout keeps what finished) and
prints a markdown table last.

--toy-quality STUDENT_DIR adds the quality check FP8 needs beside image error: a toy
student's alignment and FD (swiftbrush.toy's evaluator, 288 images, the same noise) with
only its UNet changed: fp32, the bench dtype, and each FP8 granularity with its base dtype.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks import sd_configs as sizes
from benchmarks.bench_report import format_table, machine, one_line, save_report
from benchmarks.fp8 import FP8_ROWS, fp8_filter, fp8_unavailable, fp8_unet_dtype, linear_flops, quantise_fp8
from swiftbrush_runtime.manifest import MANIFEST
from swiftbrush_runtime.onestep import ONESTEP

CASES = ("eager", "levers", "compile_graph", "compile_channels_last", "fp8", "runtime_torch", "runtime_torch_compile", "runtime_ort", "runtime_trt")
COMPILED = ("compile_graph", "fp8", "compile_channels_last", "runtime_torch_compile")  # run last (longest) and at --compile-batches, the anchor first: fp8 compares its images with it
# The torch backend's levers, added one at a time in this order by the "levers" case.
LEVERS = ("fp16 NCHW", "+ channels-last UNet, TAESD", "+ fused q/k/v")
DECODERS = ("vae", "taesd")
PROMPTS = (
    "a red circle on a black background",
    "a green square on a white background",
    "a blue triangle on a gray background",
    "a yellow circle on a white background",
)
TOLERANCE = {"fp16": 2 / 255, "fp32": 1e-4}  # max abs error on [0, 1] images against fp32
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# --- the student directory --------------------------------------------------------------


def build_models(tiny: bool, seed: int) -> dict[str, torch.nn.Module]:
    """Random-weight text encoder, UNet, VAE and tiny decoder (diffusers' default init), fp16 on CPU."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from swiftbrush.teacher import TOY_TEACHER_DIR
    from swiftbrush_runtime.tokenizer import ClipTokenizer

    tok = ClipTokenizer(TOY_TEACHER_DIR / "tokenizer")  # the shipped CLIP-format toy vocabulary (SD's needs a download)
    bos = int(tok.encode([""])[0][0, 0])
    torch.manual_seed(seed)
    text_cfg = sizes.TINY_TEXT if tiny else sizes.SD21_TEXT
    ids = dict(bos_token_id=bos, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    models = {
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text_cfg, **ids)),
        "unet": UNet2DConditionModel(**(sizes.TINY_UNET if tiny else sizes.SD21_UNET)),
        "vae": AutoencoderKL(**(sizes.TINY_VAE if tiny else sizes.SD21_VAE)),
        "taesd": AutoencoderTiny(**(sizes.TINY_TAESD if tiny else {})),
    }
    return {k: m.to(torch.float16).eval().requires_grad_(False) for k, m in models.items()}


def write_student_dir(out: Path, models: dict[str, torch.nn.Module], tiny: bool) -> Path:
    """The repo's student directory (write_student), plus taesd/ and a manifest covering it."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    from swiftbrush.student import write_student
    from swiftbrush.teacher import TOY_TEACHER_DIR, Teacher
    from swiftbrush_runtime.manifest import read_manifest, write_manifest

    source = "sd21-base architecture, random weights" + (" (tiny widths)" if tiny else "")
    teacher = Teacher(
        source=source, path=TOY_TEACHER_DIR, unet=models["unet"], vae=models["vae"], text_encoder=models["text_encoder"],
        tokenizer=CLIPTokenizer.from_pretrained(TOY_TEACHER_DIR / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(TOY_TEACHER_DIR, subfolder="scheduler"),  # SD's scaled-linear schedule
    )  # fmt: skip
    write_student(out, models["unet"], teacher, guidance_scale=4.5, made_from={"benchmark": "benchmarks/gpu_bench.py", "weights": "random"})
    models["taesd"].save_pretrained(out / "taesd", safe_serialization=True)
    fields = {k: v for k, v in read_manifest(out, "student", verify=False).items() if k not in ("kind", "format_version", "files")}
    write_manifest(out, "student", **fields)
    return out


# --- the pipeline as torch stages -----------------------------------------------------


class Stages:
    """Text encoder -> UNet at T (eps -> x0 in fp32) -> decoder, diffusers-style, on one device, each module in its dtype."""

    def __init__(self, models: dict[str, torch.nn.Module], decoder: str, onestep: Any, compile: str | None = None) -> None:
        self.text_encoder = models["text_encoder"]
        self.unet = models["unet"]
        self.dtype = self.unet.dtype
        self.decoder = decoder
        self.onestep = onestep
        # x0 = (z - k * output) * m: the one-step map the export and every runtime backend use. Python
        # floats, so a CUDA graph capture sees scalar kernel arguments, no host -> device copy.
        self.k, self.m = onestep.x0_coefficients()
        self.decoder_dtype = models[decoder].dtype
        self._decode = models[decoder].decode
        if compile:  # default mode: autotuning modes do not finish inside a short GPU slot
            self.unet = torch.compile(self.unet, backend=compile, dynamic=False)
            self._decode = torch.compile(self._decode, backend=compile, dynamic=False)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)[0]

    def denoise(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        t = torch.full((z.shape[0],), self.onestep.timestep, dtype=torch.long, device=z.device)
        eps = self.unet(z.to(self.dtype), t, emb.to(self.dtype), return_dict=False)[0]
        return (z.float() - self.k * eps.float()) * self.m

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        # The KL VAE decodes x0 / scaling_factor; TAESD decodes the UNet-space latent x0 itself.
        latent = x0 / self.onestep.scaling_factor if self.decoder == "vae" else x0
        return self._decode(latent.to(self.decoder_dtype), return_dict=False)[0]

    def pipeline(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.denoise(z, self.encode(ids)))


def on_device(models: dict[str, torch.nn.Module], device: str, dtype: torch.dtype, names: Sequence[str]) -> dict[str, torch.nn.Module]:
    """Copies of the named modules on `device` in `dtype` (the CPU fp16 originals stay as they are)."""
    import copy

    return {k: copy.deepcopy(models[k]).to(device, dtype) for k in names}


# --- timing, FLOPs, parity ------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], Any], device: str, iters: int, warmup: int) -> list[float]:
    """ms per call of fn, each call synchronised; CUDA events on the GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    cuda = device.startswith("cuda")
    out = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: Sequence[float], batch: int) -> dict[str, float]:
    med = float(np.median(ms))
    return {"median_ms": round(med, 3), "p90_ms": round(float(np.percentile(ms, 90)), 3), "per_image_ms": round(med / batch, 3)}


def cuda_graph(fn: Callable[[], Any]) -> tuple[Callable[[], Any], Any]:
    """fn (static inputs closed over) captured as one CUDA graph, as the runtime captures: (replay, static output)."""
    from swiftbrush_runtime.backends.pt import capture_cuda_graph

    graph, _, out = capture_cuda_graph(torch, fn)
    return graph.replay, out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention); SDPA on its math path so CPU attention counts too."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def parity(image: np.ndarray, ref: np.ndarray, tolerance: float) -> dict[str, Any]:
    """Images in [-1, 1] against the fp32 reference; the error is on the [0, 1] scale, unclipped."""
    image, ref = image.astype(np.float64), ref.astype(np.float64)
    finite = bool(np.isfinite(image).all())
    if not (finite and np.isfinite(ref).all()):
        return {"finite": finite, "reference_finite": bool(np.isfinite(ref).all()), "max_abs_err_01": None, "rel_err": None, "pass": False}
    err = float(np.abs(image - ref).max() / 2)
    rel = float(np.linalg.norm(image - ref) / max(np.linalg.norm(ref), 1e-12))
    return {"finite": True, "max_abs_err_01": err, "rel_err": rel, "ref_std": float(ref.std()), "tolerance_01": tolerance, "pass": err <= tolerance}


def images_np(image: torch.Tensor) -> np.ndarray:
    return image.float().cpu().numpy()












# --- cases ------------------------------------------------------------------------------


class Bench:
    """Shared state of one run: settings, inputs, the student directory, references, the report."""

    def __init__(self, args: argparse.Namespace, device: str, work: Path, report: dict[str, Any]) -> None:
        from swiftbrush_runtime.generator import initial_latents
        from swiftbrush_runtime.onestep import ONESTEP, read_onestep
        from swiftbrush_runtime.tokenizer import ClipTokenizer

        self.args, self.device, self.work, self.report = args, device, work, report
        self.cuda = device.startswith("cuda")
        self.dtype = torch.float16 if self.cuda else torch.float32
        self.precision = "fp16" if self.cuda else "fp32"
        self.tolerance = TOLERANCE[self.precision]
        t0 = time.perf_counter()
        self.models = build_models(args.tiny, args.seed)
        self.student = write_student_dir(work / "student", self.models, args.tiny)
        report["setup"]["student_seconds"] = round(time.perf_counter() - t0, 1)
        report["setup"]["params_m"] = {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for k, m in self.models.items()}
        self.onestep = read_onestep(self.student / ONESTEP)
        n = max(args.batches)
        self.prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        self.ids = ClipTokenizer(self.student / "tokenizer").encode(self.prompts)[0]  # int32 [n, 77], the runtime's ids
        side = self.onestep.resolution // self.onestep.vae_scale_factor
        # Generator.noise's draw: one numpy stream for the whole list, so batch b is the first b rows.
        self.noise = initial_latents(args.seed, n, self.onestep.latent_channels, side, side)
        report["settings"].update(resolution=self.onestep.resolution, latent=[self.onestep.latent_channels, side, side],
                                  timestep=self.onestep.timestep, prompts=self.prompts)  # fmt: skip
        self.refs: dict[tuple[str, int], np.ndarray] = {}
        self.compiled: dict[tuple[str, int], np.ndarray] = {}  # compile_graph's images, for the fp8 rows
        self.flops: dict[str, int] = {}
        self._onnx: Path | None = None
        self.memory_base = 0  # bytes allocated before the current case (set by run_case)

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(self.ids[:batch].astype(np.int64)).to(self.device)
        return ids, torch.from_numpy(self.noise[:batch]).to(self.device)

    # -- once per run --

    def reference(self) -> None:
        """fp32 images (TF32 off) for every decoder and batch; FLOPs per image at batch 1."""
        t0 = time.perf_counter()
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            models = on_device(self.models, self.device, torch.float32, ("text_encoder", "unet", *self.args.decoders))
            for decoder in self.args.decoders:
                st = Stages(models, decoder, self.onestep)
                for b in self.args.batches:
                    self.refs[(decoder, b)] = images_np(st.pipeline(*self.inputs(b)))
                ids, z = self.inputs(1)
                emb = st.encode(ids)
                x0 = st.denoise(z, emb)
                if not self.flops:
                    self.flops["text_encoder"] = count_flops(lambda: st.encode(ids))
                    self.flops["unet"] = count_flops(lambda: st.denoise(z, emb))
                self.flops[decoder] = count_flops(lambda: st.decode(x0))
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        self.report["setup"]["reference_seconds"] = round(time.perf_counter() - t0, 1)
        self.report["flops_per_image"] = dict(self.flops)
        self.save()

    def pipeline_flops(self, decoder: str) -> int:
        return self.flops["text_encoder"] + self.flops["unet"] + self.flops[decoder]

    # -- rows --

    def row(self, case: str, decoder: str, batch: int, result: dict[str, Any]) -> dict[str, Any]:
        """Fill in img/s, the compute floor and memory; record and save the row."""
        row: dict[str, Any] = {"case": case, "decoder": decoder, "batch": batch, "status": "ok", **result}
        t = row["timings"]
        e2e = t["end_to_end"]["median_ms"]
        row["images_per_second"] = round(batch * 1e3 / e2e, 2)
        peak = self.args.peak_tflops * 1e12
        floors = {"text_encoder": self.flops["text_encoder"], "unet": self.flops["unet"], "decoder": self.flops[decoder], "end_to_end": self.pipeline_flops(decoder)}
        for name, flops in floors.items():
            floor_ms = flops * batch / peak * 1e3
            t[name]["floor_ms"] = float(f"{floor_ms:.4g}")
            t[name]["measured_over_floor"] = float(f"{t[name]['median_ms'] / floor_ms:.4g}")
        self.report["cases"].append(row)
        self.save()
        err = row["parity"]["max_abs_err_01"]
        print(f"  {case} {decoder} b{batch}: e2e {e2e:.2f} ms, {row['images_per_second']} img/s, "
              f"err {'-' if err is None else f'{err * 255:.3f}/255'}, {'ok' if row['parity']['pass'] else 'PARITY FAIL'}", flush=True)  # fmt: skip
        return row

    def skip(self, case: str, reason: str, decoder: str | None = None, batch: int | None = None, status: str = "skipped") -> None:
        self.report["cases"].append({"case": case, "decoder": decoder, "batch": batch, "status": status, "reason": reason})
        self.save()
        print(f"  {case}: {status}: {reason}", flush=True)

    def memory_start(self) -> float | None:
        """GPU memory this case holds now (weights, earlier rows' graphs), past what was allocated before it."""
        if not self.cuda:
            return None
        torch.cuda.reset_peak_memory_stats()
        return (torch.cuda.memory_allocated() - self.memory_base) / 2**30

    def memory_peak(self, resident: float | None) -> dict[str, float | None]:
        if not self.cuda:
            return {"resident_gib": None, "peak_gib": None}
        peak = (torch.cuda.max_memory_allocated() - self.memory_base) / 2**30
        return {"resident_gib": round(resident or 0.0, 3), "peak_gib": round(peak, 3)}

    def torch_case(self, case: str) -> None:
        """eager / compile_graph / compile_channels_last: the modules on the device in the bench dtype, one Stages per decoder."""
        compiled = case in ("compile_graph", "compile_channels_last")
        graph = compiled and self.cuda
        batches = self.args.compile_batches if case in COMPILED else self.args.batches
        models = on_device(self.models, self.device, self.dtype, ("text_encoder", "unet", *self.args.decoders))
        if case == "compile_channels_last":
            for name in ("unet", *self.args.decoders):
                models[name].to(memory_format=torch.channels_last)
        for decoder in self.args.decoders:
            st = Stages(models, decoder, self.onestep, compile=self.args.compile_backend if compiled else None)
            for b in batches:
                result, image = self.time_stages(st, decoder, b, graph)
                if case == "compile_graph":
                    self.compiled[(decoder, b)] = image
                self.row(case, decoder, b, result)

    def fp8(self) -> None:
        """compile_graph with the UNet's Linear layers in FP8, once per --fp8-granularity; a failure costs only its rows."""
        why = fp8_unavailable(self.device)
        if why:
            return self.skip("fp8", why)
        for granularity in self.args.fp8_granularity:
            try:
                self.fp8_rows(granularity)
            except Exception as e:
                self.skip(FP8_ROWS[granularity], one_line(e), status="failed")
            free(self.device)

    def fp8_rows(self, granularity: str) -> None:
        models = on_device(self.models, self.device, self.dtype, ("text_encoder", "unet", *self.args.decoders))
        unet = models["unet"].to(fp8_unet_dtype(granularity, self.dtype))
        st = Stages(models, self.args.decoders[0], self.onestep)
        ids, z = self.inputs(1)
        emb = st.encode(ids)
        share = linear_flops(unet, fp8_filter(granularity), lambda: st.denoise(z, emb)) / self.flops["unet"]
        info = {**quantise_fp8(unet, granularity), "linear_share_of_unet_flops": round(share, 4)}
        for decoder in self.args.decoders:
            st = Stages(models, decoder, self.onestep, compile=self.args.compile_backend)
            for b in self.args.compile_batches:
                result, image = self.time_stages(st, decoder, b, graph=self.cuda)
                base = self.compiled.get((decoder, b))
                result["vs_compile_graph"] = None if base is None else parity(image, base, self.tolerance)
                self.row(FP8_ROWS[granularity], decoder, b, {**result, "fp8": info})

    def levers(self) -> None:
        """Batch 1, CUDA graph where there is one: LEVERS applied cumulatively to one set of modules."""
        models = on_device(self.models, self.device, self.dtype, ("text_encoder", "unet", *self.args.decoders))
        # The KL VAE decoder stays NCHW: channels-last made it slower on an H100 (RESULTS.md).
        conv = [models["unet"], *(models[d] for d in self.args.decoders if d == "taesd")]
        apply: dict[str, Callable[[], Any]] = {
            "fp16 NCHW": lambda: None,
            "+ channels-last UNet, TAESD": lambda: [m.to(memory_format=torch.channels_last) for m in conv],
            "+ fused q/k/v": lambda: [m.fuse_qkv_projections() for m in (models["unet"], models.get("vae")) if m is not None],
        }
        for lever in LEVERS:
            apply[lever]()
            for decoder in self.args.decoders:
                result, _ = self.time_stages(Stages(models, decoder, self.onestep), decoder, 1, graph=self.cuda)
                self.row(f"levers: {lever}", decoder, 1, result)

    def time_stages(self, st: Stages, decoder: str, batch: int, graph: bool) -> tuple[dict[str, Any], np.ndarray]:
        """The row's timings and parity, and its images."""
        resident = self.memory_start()
        ids, z = self.inputs(batch)
        t0 = time.perf_counter()
        st.pipeline(ids, z)  # compiles (compile_graph) on the first call of each shape
        sync(self.device)
        first_call_s = time.perf_counter() - t0
        emb = st.encode(ids)
        x0 = st.denoise(z, emb)
        calls: dict[str, Callable[[], Any]] = {
            "text_encoder": lambda: st.encode(ids),
            "unet": lambda: st.denoise(z, emb),
            "decoder": lambda: st.decode(x0),
            "end_to_end": lambda: st.pipeline(ids, z),
        }
        outputs: dict[str, Any] = {}
        notes = []
        if graph:
            for name, fn in list(calls.items()):
                try:
                    calls[name], outputs[name] = cuda_graph(fn)
                except RuntimeError as e:  # a stage that syncs with the host cannot be captured: time it without
                    notes.append(f"{name}: no CUDA graph ({str(e).splitlines()[0][:160]})")
        timings = {name: stats(time_ms(fn, self.device, self.args.iters, self.args.warmup), batch) for name, fn in calls.items()}
        if "end_to_end" in outputs:
            calls["end_to_end"]()
            sync(self.device)
            image = images_np(outputs["end_to_end"])
        else:
            image = images_np(st.pipeline(ids, z))
        result = {
            "timings": timings,
            "first_call_s": round(first_call_s, 2),
            "cuda_graph": graph and not notes,
            "parity": parity(image, self.refs[(decoder, batch)], self.tolerance),
            **self.memory_peak(resident),
        }
        if notes:
            result["notes"] = notes
        del calls, outputs
        return result, image

    def generator_case(self, case: str, path: Path, backend: str, decoder: str, batches: Sequence[int], **options: Any) -> None:
        """Time a swiftbrush_runtime Generator through its own numpy-in/numpy-out calls."""
        from swiftbrush_runtime import Generator

        t0 = time.perf_counter()
        gen = Generator.load(path, backend=backend, device=self.device, verify=False, cache_size=0, decoder=decoder, **options)
        load_s = time.perf_counter() - t0
        try:
            for b in batches:
                self.row(case, decoder, b, self.time_generator(gen, decoder, b, load_s))
        finally:
            gen.close()
            free(self.device)  # the next decoder's row must not count this one's graphs

    def time_generator(self, gen: Any, decoder: str, batch: int, load_s: float) -> dict[str, Any]:
        from swiftbrush_runtime.images import to_uint8

        resident = self.memory_start()
        b = gen.backend
        prompts = self.prompts[:batch]
        t0 = time.perf_counter()
        gen.generate(prompts, seed=self.args.seed)  # the torch backend compiles and captures its graphs here
        first_call_s = time.perf_counter() - t0
        generate_only = self.memory_peak(resident)  # what an app that only calls generate() holds at most
        ids, _ = gen.tokenizer.encode(prompts)
        z = gen.noise(batch, self.args.seed)
        assert np.array_equal(z, self.noise[:batch]) and np.array_equal(ids, self.ids[:batch]), "the runtime's inputs differ from the reference's"
        emb = gen.run_batched(b.encode, ids)
        latent = gen.run_batched(b.denoise, z, emb)
        calls = {
            "text_encoder": lambda: gen.run_batched(b.encode, ids),
            "unet": lambda: gen.run_batched(b.denoise, z, emb),
            "decoder": lambda: gen.run_batched(b.decode, latent),
            # what an app gets from generate(): tokenizer, text encoder, UNet + decoder, uint8 HxWx3 on the host
            "end_to_end": lambda: gen.generate(prompts, seed=self.args.seed),
            "end_to_end_float": lambda: gen.generate(prompts, seed=self.args.seed, output="float"),  # float NCHW on the host
        }
        timings = {name: stats(time_ms(fn, self.device, self.args.iters, self.args.warmup), batch) for name, fn in calls.items()}
        cache_size = gen.cache_size
        gen.cache_size = len(prompts)  # the prompt embedding cache: an app that repeats its prompts skips the text encoder
        gen.generate(prompts, seed=self.args.seed)
        timings["end_to_end_cached_prompts"] = stats(time_ms(lambda: gen.generate(prompts, seed=self.args.seed), self.device, self.args.iters, self.args.warmup), batch)
        gen.cache_size = cache_size
        profiled = profile_generate(lambda: gen.generate(prompts, seed=self.args.seed), self.device) if self.args.profile else None
        image = gen.generate(prompts, seed=self.args.seed, output="float")
        out = {
            "timings": timings,
            "peak_gib_generate_only": generate_only["peak_gib"],
            "uint8_matches_float": bool(np.array_equal(gen.generate(prompts, seed=self.args.seed), to_uint8(image))),
            "first_call_s": round(first_call_s, 2),
            "load_s": round(load_s, 1),
            "backend_info": gen.info(),
            "parity": parity(image, self.refs[(decoder, batch)], self.tolerance),
            **self.memory_peak(resident),
        }
        if profiled:
            out["profile"] = profiled
        mem = getattr(b, "memory", None)
        if callable(mem):  # ONNX Runtime / TensorRT memory is not torch's: the backend's own count
            out["backend_memory"] = mem()
        return out

    def runtime_torch(self) -> None:
        for decoder in self.args.decoders:
            self.generator_case("runtime_torch", self.student, "torch", decoder, self.args.batches)

    def runtime_torch_compile(self) -> None:
        for decoder in self.args.decoders:
            self.generator_case("runtime_torch_compile", self.student, "torch", decoder, self.args.compile_batches,
                                compile=self.args.compile_backend)  # fmt: skip

    def onnx_dir(self) -> Path:
        """One ONNX export for both ORT and TRT: dynamic batch up to the largest, every decoder asked for."""
        if self._onnx is None:
            from swiftbrush_export.onnx_export import export_onnx

            t0 = time.perf_counter()
            out = self.work / "onnx"
            export_onnx(self.student, out, dtype=self.precision, batch=max(self.args.batches), dynamic=True,
                        decoder="taesd" if "taesd" in self.args.decoders else "vae", overwrite=True)  # fmt: skip
            self._onnx = out
            self.report["setup"]["onnx_export_seconds"] = round(time.perf_counter() - t0, 1)
        return self._onnx

    def runtime_ort(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            return self.skip("runtime_ort", "onnxruntime is not installed")
        provider = "CUDAExecutionProvider" if self.cuda else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            return self.skip("runtime_ort", f"this onnxruntime {ort.__version__} has no {provider} (has {', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu")
        try:
            path = self.onnx_dir()
        except ImportError as e:
            return self.skip("runtime_ort", f"the ONNX export needs the [export] extra ({e})")
        for decoder in self.args.decoders:
            self.generator_case("runtime_ort", path, "onnxruntime", decoder, self.args.batches)

    def runtime_trt(self) -> None:
        if not self.cuda:
            return self.skip("runtime_trt", "TensorRT runs on CUDA devices only")
        try:
            from swiftbrush_runtime.backends.trt import import_tensorrt

            import_tensorrt()
        except Exception as e:
            return self.skip("runtime_trt", f"tensorrt is not importable ({str(e).splitlines()[0]})")
        try:
            path = self.onnx_dir()
        except ImportError as e:
            return self.skip("runtime_trt", f"the ONNX export needs the [export] extra ({e})")
        from swiftbrush_export.engine import build_engines

        for b in self.args.batches:  # static engines (they take CUDA graphs), one set per batch
            t0 = time.perf_counter()
            build_engines(path, self.work / f"engine-b{b}", dynamic=False, batch=b, overwrite=True)
            self.report["setup"][f"engine_build_seconds_b{b}"] = round(time.perf_counter() - t0, 1)
            for decoder in self.args.decoders:
                self.generator_case("runtime_trt", self.work / f"engine-b{b}", "tensorrt", decoder, [b])

    def toy_quality(self, student: Path) -> None:
        """Alignment and FD of a toy student with its UNet in fp32, in the bench dtype, and in FP8 (with its base dtype).

        Only the UNet changes from row to row (text encoder and VAE fp32, eager, the same noise),
        so a row's difference from fp32 is the UNet's precision alone; no compile: quality only.
        """
        from swiftbrush.evaluate import score_fields, toy_prompts
        from swiftbrush.student import OneStepPipeline, sample_student
        from swiftbrush.toy.evaluator import Evaluator
        from swiftbrush_runtime.manifest import read_manifest

        print("toy quality:", flush=True)
        prompts = toy_prompts(8)  # 288 images: the size of every toy figure in RESULTS.md
        out: dict[str, Any] = {"student": str(student), "made_from": read_manifest(student, "student", verify=False).get("made_from"),
                               "images": len(prompts), "seed": self.args.seed, "rows": []}  # fmt: skip
        self.report["toy_quality"] = out
        why = fp8_unavailable(self.device)
        # (row label, UNet dtype, FP8 granularity or None): fp32 first (the others are compared with it),
        # then the bench dtype, then each granularity after its base dtype.
        variants: list[tuple[str, torch.dtype, str | None]] = [("fp32", torch.float32, None)]
        for dtype, granularity in [(self.dtype, None)] + [(fp8_unet_dtype(g, self.dtype), g) for g in ([] if why else self.args.fp8_granularity)]:
            if not any(d == dtype and g is None for _, d, g in variants):
                variants.append((DTYPE_NAMES[dtype], dtype, None))
            if granularity:
                variants.append((FP8_ROWS[granularity], dtype, granularity))
        evaluator = Evaluator.load()
        fp32_images: np.ndarray | None = None
        for label, dtype, granularity in variants:
            t0 = time.perf_counter()
            try:
                pipe = OneStepPipeline.from_pretrained(student, device=self.device)
                pipe.unet.to(dtype)
                fp8 = quantise_fp8(pipe.unet, granularity) if granularity else None
                images = sample_student(pipe, prompts, seed=self.args.seed)
                row = {"unet": label, "status": "ok", **score_fields(evaluator.score(images, prompts))}
            except Exception as e:
                out["rows"].append({"unet": label, "status": "failed", "reason": one_line(e)})
                print(f"  {label}: failed: {one_line(e)}", flush=True)
                continue
            fp32_images = images if label == "fp32" else fp32_images
            if fp32_images is not None:
                diff = np.abs(images.astype(np.int16) - fp32_images.astype(np.int16))
                row.update(max_abs_diff_vs_fp32_uint8=int(diff.max()), mean_abs_diff_vs_fp32_uint8=round(float(diff.mean()), 3))
            row.update(seconds=round(time.perf_counter() - t0, 1), **({"fp8": fp8} if fp8 else {}))
            out["rows"].append(row)
            print(f"  {label}: alignment {row['alignment']}, FD {row['fd']}, max |diff| vs fp32 {row.get('max_abs_diff_vs_fp32_uint8', '-')}/255", flush=True)
            del pipe
            free(self.device)
        if why:
            out["rows"].append({"unet": "fp8", "status": "skipped", "reason": why})
            print(f"  fp8: skipped: {why}", flush=True)
        self.save()

    def run_case(self, case: str) -> None:
        print(f"{case}:", flush=True)
        self.memory_base = torch.cuda.memory_allocated() if self.cuda else 0
        try:
            if case in ("eager", "compile_graph", "compile_channels_last"):
                self.torch_case(case)
            else:
                getattr(self, case)()
        except Exception as e:  # one broken case must not lose the others' numbers
            self.skip(case, one_line(e), status="failed")
        free(self.device)  # the case's modules, graphs and sessions went out of scope with it

    def save(self) -> None:
        save_report(self.args.out, self.report)


def profile_generate(call: Callable[[], Any], device: str, calls: int = 5, top: int = 12) -> dict[str, Any]:
    """Where a warm generate() (the caller has already run it) spends its time: wall, device-busy and the top ops by host and by device time, per call.

    The runtime's compiled path sat ~1.5 ms above the same modules' whole-pipeline graph on an
    H100 (RESULTS.md, run 4); this says whether that is host work, copies or kernels.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()

    def ranked(attr: str) -> list[dict[str, Any]]:
        rows = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
        return [{"name": e.key, "calls": e.count // calls, "ms_per_call": round(getattr(e, attr) / 1e3 / calls, 4)} for e in rows if getattr(e, attr) > 0]

    return {
        "calls": calls,
        "wall_ms_per_call": round(wall * 1e3 / calls, 3),  # the profiler's own overhead included
        "device_busy_ms_per_call": round(sum(e.self_device_time_total for e in events) / 1e3 / calls, 3) if cuda else None,
        "top_host": ranked("self_cpu_time_total"),
        "top_device": ranked("self_device_time_total") if cuda else [],
    }








def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# --- training (optional) -----------------------------------------------------------------


def train(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """The distillation step of benchmarks/train_sd_size.py: it/s and peak memory."""
    from benchmarks import train_sd_size

    try:
        if args.tiny:
            return train_sd_size.run(tiny=True, batch_size=2, steps=2, warmup=0, mixed_precision="no", gradient_checkpointing=True)
        mixed = "bf16" if cuda else "no"
        return train_sd_size.run(tiny=False, batch_size=args.train_batch, steps=args.train_steps, warmup=2, mixed_precision=mixed, gradient_checkpointing=True)
    except ImportError as e:
        return {"status": "skipped", "reason": f"training needs accelerate and peft ({e})"}
    except Exception as e:  # out of memory, say: keep the inference numbers and say why
        return {"status": "failed", "reason": one_line(e)}














# --- main --------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: list(dict.fromkeys(kind(x.strip()) for x in text.split(",") if x.strip()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny widths at 64 px: the whole script in seconds on a CPU")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json")
    ap.add_argument("--cases", type=_csv(str), default=list(CASES), help=f"comma list from {','.join(CASES)} (default: all)")
    ap.add_argument("--decoders", type=_csv(str), default=list(DECODERS), help="comma list from vae,taesd")
    ap.add_argument("--batches", type=_csv(int), default=[1, 4], help="comma list of batch sizes")
    ap.add_argument("--compile-batches", type=_csv(int), default=None,
                    help="batch sizes for the compiled cases, each a compile of its own (default: 1; with --tiny: --batches)")  # fmt: skip
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 20; 3 with --tiny)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3; 1 with --tiny)")
    ap.add_argument("--peak-tflops", type=float, default=800.0, help="dense fp16 peak for the compute floor (H100 SXM ~800)")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager, i.e. dynamo capture only, with --tiny on CPU)")
    ap.add_argument("--fp8-granularity", type=_csv(str), default=list(FP8_ROWS),
                    help="the fp8 case's scales, comma list from tensor,row (row: the UNet in bf16, which torchao's per-row scales need)")  # fmt: skip
    ap.add_argument("--toy-quality", type=Path, default=None, metavar="STUDENT_DIR",
                    help="also score this toy student (alignment, FD) with its UNet in fp32, the bench dtype and FP8")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="where the student and exports go (default: a temp dir, removed)")
    ap.add_argument("--train", action="store_true", help="also time the distillation step (train_sd_size.py)")
    ap.add_argument("--profile", action="store_true", help="runtime rows: also profile 5 warm generate() calls (torch.profiler; top ops by host and device time)")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=5)
    args = ap.parse_args(argv)
    args.iters = args.iters if args.iters is not None else (3 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    bad = [c for c in args.cases if c not in CASES]
    if bad or not args.cases:
        ap.error(f"--cases must be a comma list from {', '.join(CASES)}, got {','.join(args.cases)}")
    if not args.decoders or any(d not in DECODERS for d in args.decoders):
        ap.error(f"--decoders must be a comma list from {', '.join(DECODERS)}, got {','.join(args.decoders)}")
    if not args.fp8_granularity or any(g not in FP8_ROWS for g in args.fp8_granularity):
        ap.error(f"--fp8-granularity must be a comma list from {', '.join(FP8_ROWS)}, got {','.join(args.fp8_granularity)}")
    if args.toy_quality and not all((args.toy_quality / f).is_file() for f in (ONESTEP, MANIFEST)):
        ap.error(f"--toy-quality {args.toy_quality} is not a student directory (no onestep.json or manifest.json); `make demo` writes one to out/demo/student")
    args.compile_batches = args.compile_batches or (args.batches if args.tiny else [1])
    for name, batches in (("--batches", args.batches), ("--compile-batches", args.compile_batches)):
        if not batches or min(batches) < 1 or max(batches) > 64:
            ap.error(f"{name} must be between 1 and 64, got {batches}")
    if max(args.compile_batches) > max(args.batches):
        ap.error(f"--compile-batches must not exceed the largest of --batches ({max(args.batches)}): the inputs are made for those")
    if args.iters < 1 or args.warmup < 0 or args.peak_tflops <= 0 or args.train_steps < 1 or args.train_batch < 1:
        ap.error("--iters, --train-steps, --train-batch and --peak-tflops must be positive and --warmup >= 0")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Inductor's C++ build of even the tiny models takes minutes on 2 cores (and aot_eager trips a CPU group-norm
    # layout check in torch 2.13): the CPU smoke run checks dynamo's capture of the models only.
    args.compile_backend = args.compile_backend or ("eager" if args.tiny and args.device == "cpu" else "inductor")
    if args.device.split(":")[0] not in ("cpu", "cuda"):
        ap.error(f"--device must be cpu, cuda or cuda:N, got {args.device}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA GPU")
    return args


def quiet_libraries() -> None:
    """Errors only from diffusers and transformers: their per-load notices would bury the table."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    if ":" in args.device and args.device.startswith("cuda"):  # torch.cuda.* timers and memory counters read the current device
        torch.cuda.set_device(torch.device(args.device))
    report: dict[str, Any] = {
        "machine": machine(args.device),
        "settings": {"tiny": args.tiny, "precision": "fp16" if args.device.startswith("cuda") else "fp32", "cases": args.cases,
                     "decoders": args.decoders, "batches": args.batches, "compile_batches": args.compile_batches, "iters": args.iters, "warmup": args.warmup,
                     "peak_tflops": args.peak_tflops, "seed": args.seed, "compile_backend": args.compile_backend,
                     "fp8_granularity": args.fp8_granularity, "toy_quality": None if args.toy_quality is None else str(args.toy_quality), "profile": args.profile},  # fmt: skip
        "setup": {},
        "cases": [],
    }
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with torch.inference_mode():
            bench = Bench(args, args.device, work, report)
            bench.reference()
            free(args.device)  # the fp32 copies
            for case in [c for c in CASES if c in args.cases and c not in COMPILED]:
                bench.run_case(case)
            if args.toy_quality:  # seconds, so before the compiled cases: a timeout there keeps it
                try:
                    bench.toy_quality(args.toy_quality)
                except Exception as e:
                    report["toy_quality"] = {"student": str(args.toy_quality), "status": "failed", "reason": one_line(e)}
                    bench.save()
                free(args.device)
        if args.train:  # before the compiled cases: their compile time is the hardest to predict
            print("train:", flush=True)
            report["train"] = train(args, args.device.startswith("cuda"))
            save_report(args.out, report)
            free(args.device)
        with torch.inference_mode():
            for case in [c for c in COMPILED if c in args.cases]:
                bench.run_case(case)
            del bench
            free(args.device)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(report), flush=True)
    return report


if __name__ == "__main__":
    main()
