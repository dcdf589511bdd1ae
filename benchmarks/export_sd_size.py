"""Export the SD 2.1-base architecture (random weights) through `export onnx`, on CPU.

    python -m benchmarks.export_sd_size --tiny                 # minutes-free smoke run (same code path)
    python -m benchmarks.export_sd_size --dtype fp16 --json benchmarks/export_sd_size.fp16.json
    python -m benchmarks.export_sd_size --dtype fp32 --work /big/disk/sd

Builds a student directory with SD 2.1-base's exact configs (UNet 866M parameters,
23-layer 1024-wide CLIP text encoder, the 4-channel KL VAE; diffusers' default
random initialisation, no download), exports it, and records: export time, peak
resident memory, each graph's size and whether it went to external data (the UNet
passes 2 GB in fp32), and the fp16 overflow check: the fp16 graphs run in ONNX
Runtime on realistic inputs (noise, text embeddings from the fp32 text encoder) and
are compared with the fp32 torch student per component: all outputs finite, max
and relative error. Needs ~20 GB RAM and ~10 GB disk at full size; run it on a
machine that is not training.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.sd_configs import SD21_TEXT, SD21_UNET, SD21_VAE, TINY_TEXT, TINY_UNET, TINY_VAE


def build_student(out: Path, tiny: bool) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from swiftbrush.toy.models import SCHEDULER_CONFIG
    from swiftbrush.toy.vocab import write_tokenizer
    from swiftbrush_runtime.manifest import write_manifest
    from swiftbrush_runtime.onestep import STUDENT_TIMESTEP, OneStep, write_onestep

    torch.manual_seed(0)
    write_tokenizer(out / "tokenizer")  # CLIP format; SD's own vocabulary would need a download
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text_cfg = TINY_TEXT if tiny else SD21_TEXT
    text = CLIPTextModel(CLIPTextConfig(**text_cfg, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD21_UNET))
    vae = AutoencoderKL(**(TINY_VAE if tiny else SD21_VAE))
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out / "tokenizer")
    resolution = unet.config.sample_size * 8
    teacher = "sd21-base-architecture-random"
    write_onestep(out, OneStep(
        timestep=STUDENT_TIMESTEP, alpha_T=float(scheduler.alphas_cumprod[STUDENT_TIMESTEP]), prediction_type="epsilon", resolution=resolution,
        latent_channels=4, vae_scale_factor=8, scaling_factor=float(vae.config.scaling_factor), extra={"teacher": teacher, "guidance_scale": 4.5},
    ))  # fmt: skip
    write_manifest(out, "student", teacher=teacher, step=0)
    return out


def overflow_check(student: Path, onnx_dir: Path) -> dict:
    """fp16 ONNX (ORT CPU) vs the fp32 torch student on realistic activations, per component."""
    import onnxruntime as ort
    import torch

    from swiftbrush_export.onnx_export import one_step_module
    from swiftbrush_export.student import load_student
    from swiftbrush_runtime.generator import initial_latents
    from swiftbrush_runtime.manifest import read_manifest

    s = load_student(student, verify=False)
    manifest = read_manifest(onnx_dir, "onnx", verify=False)
    b = manifest["batch"]["opt"]
    ids = s.pipeline.tokenizer(["a red circle on a blue background"] * b, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids.astype(np.int32)
    h, w = manifest["height"] // 8, manifest["width"] // 8
    z = initial_latents(0, b, 4, h, w)
    with torch.no_grad():
        emb = s.pipeline.text_encoder(torch.from_numpy(ids).long())[0]
        lat = one_step_module(s)(torch.from_numpy(z), emb)
        img = s.pipeline.vae.decode(lat).sample
    refs = {"text_encoder": emb.numpy(), "unet": lat.numpy(), "vae_decoder": img.numpy()}
    feeds = {"text_encoder": {"input_ids": ids}, "unet": {"sample": z, "encoder_hidden_states": refs["text_encoder"], "timestep": np.zeros((), np.int64)},
             "vae_decoder": {"latent_sample": refs["unet"]}}
    out = {}
    for name, feed in feeds.items():
        sess = ort.InferenceSession(str(onnx_dir / name / "model.onnx"), providers=["CPUExecutionProvider"])
        t0 = time.perf_counter()
        got = sess.run(None, feed)[0]
        ref = refs[name]
        out[name] = {
            "finite": bool(np.isfinite(got).all()),
            "max_abs_err": float(np.abs(got - ref).max()),
            "rel_err": float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)),
            "ref_abs_max": float(np.abs(ref).max()),
            "ort_cpu_seconds": round(time.perf_counter() - t0, 2),
        }
    img01 = lambda x: np.clip(x / 2 + 0.5, 0, 1)  # noqa: E731
    sess = ort.InferenceSession(str(onnx_dir / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    lat16 = ort.InferenceSession(str(onnx_dir / "unet" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds["unet"])[0]
    img16 = sess.run(None, {"latent_sample": lat16})[0]
    out["image_end_to_end_max_abs_err_01"] = float(np.abs(img01(img16) - img01(refs["vae_decoder"])).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy widths at 64 px: checks the script in seconds")
    ap.add_argument("--dtype", default="fp16", choices=("fp32", "fp16"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--work", type=Path, default=None, help="where the student and ONNX go (default: a temp dir, removed)")
    ap.add_argument("--no-check", action="store_true", help="skip the fp16 overflow check")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    from swiftbrush_export.onnx_export import export_onnx

    work = args.work or Path(tempfile.mkdtemp(prefix="sd-size-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"architecture": "sd21-base (tiny widths)" if args.tiny else "sd21-base", "dtype": args.dtype, "batch": args.batch, "opset": args.opset}
    try:
        t0 = time.perf_counter()
        student = build_student(work / "student", args.tiny)
        result["build_student_seconds"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        m = export_onnx(student, work / "onnx", dtype=args.dtype, batch=args.batch, opset=args.opset, overwrite=True)
        result["export_seconds"] = round(time.perf_counter() - t0, 1)
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        result["resolution"] = [m["height"], m["width"]]
        result["graphs"] = {
            name: {"mb": round(g["bytes"] / 1e6, 1), "external_data": g["external_data"], "files": g["files"], "nodes": g["nodes"]}
            for name, g in m["graphs"].items()
        }
        if args.dtype == "fp16" and not args.no_check:
            result["fp16_check"] = overflow_check(student, work / "onnx")
            result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    checks = result.get("fp16_check", {})
    if checks and not all(v["finite"] for k, v in checks.items() if isinstance(v, dict)):
        sys.exit(1)
    assert math.isfinite(result["export_seconds"])


if __name__ == "__main__":
    main()
