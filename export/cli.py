"""`swiftbrush export onnx` and `swiftbrush export engine` (click; no heavy imports here).

    swiftbrush export onnx   --student DIR --out DIR [--dtype fp32|fp16] [--height H] [--width W]
                             [--batch B] [--dynamic] [--opset 17] [--decoder vae|taesd] [--taesd DIR|toy]
                             [--fp32-layers auto|none|PREFIXES]
    swiftbrush export engine --onnx DIR --out DIR [--static|--dynamic] [--batch B]
                             [--timing-cache FILE] [--workspace-gb 4]
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
@click.option("--opset", type=Integer(), default=17, show_default=True,
              help="ONNX opset: 17 for TensorRT 8.6 and later (JetPack 6, desktop TensorRT 10 and 11); 16 for TensorRT 8.5 (JetPack 5); "
                   "TensorRT 10 also parses 18-21 (no faster here).")  # fmt: skip
@click.option("--decoder", type=click.Choice(["vae", "taesd"]), default="vae", show_default=True,
              help="vae, or taesd: also export a tiny autoencoder decoder and use it.")
@click.option("--taesd", type=click.Path(path_type=Path), default=None,
              help="With --decoder taesd: an AutoencoderTiny folder, or 'toy' for the one trained for the toy teacher (default: STUDENT/taesd).")
@click.option("--fp32-layers", default=None,
              help="With --dtype fp16: layers kept fp32. auto (the default: the text encoder and the UNet's noise-carrying path, within 2/255 of fp32), "
                   "unet (only the UNet's path: half the text encoder's memory), none (fastest), or UNet node-name prefixes.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@needs_extra("train", "export")  # the student is read with diffusers, which [export] alone does not install
def export_onnx_cmd(
    student: Path, out: Path, dtype: str, height: int | None, width: int | None, batch: int, dynamic: bool, opset: int,
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
        student, out, dtype=dtype, height=height, width=width, batch=batch, dynamic=dynamic, opset=opset,
        decoder=decoder, taesd=taesd, fp32_layers=fp32_layers or "auto", overwrite=overwrite,
    )
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in m["graphs"].items())
    click.echo(f"wrote {out} ({m['dtype']}, opset {m['opset']}, {m['height']}x{m['width']}, batch {m['batch']['min']}..{m['batch']['max']}): {sizes}")


@export_group.command("engine")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(path_type=Path), help="An ONNX directory (from `swiftbrush export onnx`).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The engine directory to write.")
@click.option("--static/--dynamic", "static", default=True, show_default=True, help="Static shapes (fastest, CUDA graphs) or the ONNX's dynamic ranges.")
@click.option("--batch", type=int, default=None, help="Batch of a static engine (default: the ONNX's).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Reuse and update this TensorRT timing cache.")
@click.option("--workspace-gb", type=float, default=4.0, show_default=True, help="Builder workspace limit.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def export_engine_cmd(onnx_dir: Path, out: Path, static: bool, batch: int | None, timing_cache: Path | None, workspace_gb: float, overwrite: bool) -> None:
    """Build TensorRT engines on this GPU (needs TensorRT)."""
    from swiftbrush_export.engine import build_engines, describe

    m = build_engines(onnx_dir, out, dynamic=not static, batch=batch, timing_cache=timing_cache, workspace_gb=workspace_gb, overwrite=overwrite)
    click.echo(f"wrote {out}: {describe(m)}")
