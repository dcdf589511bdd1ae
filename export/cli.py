"""`swiftbrush export onnx` and `swiftbrush export engine` (click; no heavy imports here).

    swiftbrush export onnx   --student DIR --out DIR [--dtype fp32|fp16] [--height H] [--width W]
                             [--batch B] [--dynamic] [--target desktop|rtx|jetpack6|jetpack6.0|jetpack5] [--opset N]
                             [--decoder vae|taesd] [--taesd DIR|toy]
                             [--fp32-layers auto|none|PREFIXES]
    swiftbrush export engine --onnx DIR --out DIR [--backend tensorrt|tensorrt-rtx] [--arch sm86]
                             [--static|--dynamic] [--batch B] [--timing-cache FILE] [--workspace-gb GB]
"""

from __future__ import annotations

from pathlib import Path

import click

from swiftbrush_runtime.cli_options import Integer, needs_extra
from swiftbrush_runtime.errors import InvalidArgumentError


@click.group("export")
def export_group() -> None:
    """Student -> ONNX directory -> TensorRT engines."""


@export_group.command("onnx")
@click.option("--student", required=True, type=click.Path(path_type=Path), help="A student directory (from `swiftbrush distill`).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The ONNX directory to write (must not exist or be empty).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="fp32, or fp16 (normalisations and softmax kept fp32).")
@click.option("--height", type=Integer(), default=None, help="Image height in pixels (multiple of 8); default: the student's resolution.")
@click.option("--width", type=Integer(), default=None, help="Image width in pixels (multiple of 8); default: the student's resolution.")
@click.option("--batch", type=Integer(min=1), default=1, show_default=True, help="Batch of static graphs; the largest batch of dynamic ones.")
@click.option("--dynamic", is_flag=True, help="Dynamic batch (1..--batch) and resolution (half to double).")
@click.option("--target", type=click.Choice(["desktop", "rtx", "jetpack6", "jetpack6.0", "jetpack5"]), default="desktop", show_default=True,
              help="The TensorRT the engines will be built with: desktop (TensorRT 10/11), rtx (TensorRT for RTX), jetpack6 (6.1/6.2: TensorRT 10.3), "
                   "jetpack6.0 (8.6) or jetpack5 (8.5). Sets the default opset and checks every graph against that parser.")
@click.option("--opset", type=Integer(), default=None,
              help="ONNX opset (16..21, up to what --target parses); default: the target's, 16 for jetpack5 (TensorRT 8.5 has no "
                   "LayerNormalization), else 17 (no gain from higher ones here).")  # fmt: skip
@click.option("--decoder", type=click.Choice(["vae", "taesd"]), default="vae", show_default=True,
              help="vae, or taesd: also export a tiny autoencoder decoder and use it.")
@click.option("--taesd", type=click.Path(path_type=Path), default=None,
              help="With --decoder taesd: an AutoencoderTiny folder, or 'toy' for the one trained for the toy teacher (default: STUDENT/taesd).")
@click.option("--fp32-layers", default=None,
              help="With --dtype fp16: layers kept fp32. auto (the default: the text encoder and the UNet's noise-carrying path, within 2/255 of fp32), "
                   "unet (only the UNet's path: half the text encoder's memory), none (fastest), or UNet node-name prefixes.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace --out if it is this command's own earlier output (its manifest says so); built beside it, swapped in at the end.")
@needs_extra("train", "export")  # the student is read with diffusers, which [export] alone does not install
def export_onnx_cmd(
    student: Path, out: Path, dtype: str, height: int | None, width: int | None, batch: int, dynamic: bool, target: str, opset: int | None,
    decoder: str, taesd: Path | None, fp32_layers: str | None, overwrite: bool,
) -> None:
    """Export a student to ONNX graphs in optimum's layout, with a manifest.

    \b
    The folder runs in swiftbrush generate/bench and in optimum's own pipeline:
      ORTStableDiffusionPipeline.from_pretrained(OUT)(prompt, num_inference_steps=1, guidance_scale=0.0)
    Static graphs (the default) take only --batch images of --height x --width per call
    in optimum's pipeline (swiftbrush generate splits longer lists itself); export with
    --dynamic for prompt lists or num_images_per_prompt there.
    """
    if fp32_layers is not None and dtype != "fp16":
        raise InvalidArgumentError(f"--fp32-layers applies to --dtype fp16 only; drop it or add --dtype fp16 (got --dtype {dtype})")
    if taesd is not None and decoder != "taesd":
        raise InvalidArgumentError("--taesd applies to --decoder taesd only; add --decoder taesd or drop --taesd")
    from swiftbrush_export.onnx_export import export_onnx

    m = export_onnx(
        student, out, dtype=dtype, height=height, width=width, batch=batch, dynamic=dynamic, target=target, opset=opset,
        decoder=decoder, taesd=taesd, fp32_layers=fp32_layers or "auto", overwrite=overwrite,
    )
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in m["graphs"].items())
    click.echo(f"wrote {out} ({m['dtype']}, target {m['target']}, opset {m['opset']}, {m['height']}x{m['width']}, batch {m['batch']['min']}..{m['batch']['max']}): {sizes}")


@export_group.command("engine")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(path_type=Path), help="An ONNX directory (from `swiftbrush export onnx`).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The engine directory to write.")
@click.option("--backend", default="tensorrt", show_default=True,
              help="tensorrt (desktop TensorRT 10/11, Jetson 8.5/8.6/10.3; builds on the GPU that will run it) or tensorrt-rtx "
                   "(TensorRT for RTX: RTX desktops and laptops; builds ahead of time, no GPU needed with --arch).")
@click.option("--arch", default=None, help="tensorrt-rtx only: the compute capability to build for, e.g. sm86 (RTX 30), sm89 (RTX 40), sm120 (RTX 50); default: the GPU present.")
@click.option("--static/--dynamic", "static", default=True, show_default=True, help="Static shapes (fastest, CUDA graphs) or the ONNX's dynamic ranges.")
@click.option("--batch", type=Integer(min=1), default=None, help="Batch of a static engine (default: the ONNX's).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None, help="tensorrt only: reuse and update this timing cache (a cache from another GPU or version is replaced).")
@click.option("--workspace-gb", type=float, default=None, help="Builder workspace limit in GiB (default: 4, or a quarter of the GPU's memory if less).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is this command's own earlier output (its manifest says so); built beside it, swapped in at the end.")
def export_engine_cmd(onnx_dir: Path, out: Path, backend: str, arch: str | None, static: bool, batch: int | None, timing_cache: Path | None,
                      workspace_gb: float | None, overwrite: bool) -> None:  # fmt: skip
    """Build TensorRT (or TensorRT for RTX) engines from an ONNX directory."""
    from swiftbrush_export.engine import build_engines, describe

    m = build_engines(onnx_dir, out, backend=backend, arch=arch, dynamic=not static, batch=batch, timing_cache=timing_cache,
                      workspace_gb=workspace_gb, overwrite=overwrite)  # fmt: skip
    click.echo(f"wrote {out}: {describe(m)}")
