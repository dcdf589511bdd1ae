"""Student directory -> ONNX directory in optimum's layout, fp32 or fp16.

    swiftbrush export onnx --student out/student --out out/onnx [--dtype fp16]
                           [--height 64] [--width 64] [--batch 1] [--dynamic]
                           [--target desktop|rtx|jetpack6|jetpack6.0|jetpack5] [--opset N]
                           [--decoder vae|taesd] [--taesd DIR|toy]

Writes `text_encoder/model.onnx`, `unet/model.onnx`, `vae_decoder/model.onnx`,
`tokenizer/` (with tokenizer.json), `scheduler/`, `model_index.json` and each
component's `config.json` (what optimum's ORTStableDiffusionPipeline reads),
`onestep.json`, and `manifest.json` last.

What comes from where:
- text encoder and VAE decoder: optimum-onnx's diffusers export configs
  (`get_diffusion_models_for_export` + `export_models`), which carry CLIP's export
  patches and the decoder's `vae.decode` wrapper;
- the UNet: our own one-step graph (optimum's UNet graph takes a timestep input and
  returns eps): the timestep is fixed at T and folded away, there is no CFG batch,
  and the eps -> x0 -> `x0 / scaling_factor` conversion is inside the graph (in fp32
  even in fp16 graphs), so the runtime goes noise -> UNet -> decoder with no math in
  between. Its output is named `out_sample` and it declares an unused `timestep`, so
  optimum's ORTStableDiffusionPipeline runs the folder as it is, in one step:

      pipe = ORTStableDiffusionPipeline.from_pretrained("out/onnx")
      image = pipe(prompt, num_inference_steps=1, guidance_scale=0.0).images[0]

  (the folder's scheduler is DDIM with trailing spacing and prediction_type "sample",
  and `vae_decoder/config.json` says scaling_factor 1.0 because the graph has already
  divided; onestep.json keeps the VAE's real factor). More steps or CFG are not
  meaningful for this graph;
- with --decoder taesd, a tiny autoencoder decoder (`taesd_decoder/`, diffusers
  AutoencoderTiny) beside the VAE decoder, with the same input;
- cleanup, fp16 with fp32 islands, TensorRT op checks, external data: graphs.py;
- `--target` names the TensorRT the engines will be built with (trt_targets.py): it sets
  the default opset (16 for JetPack 5's TensorRT 8.5, else 17) and every graph is
  checked against that parser's operator and type tables before the folder is written,
  so a graph the device would refuse fails here, on the export machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from swiftbrush_export import graphs, trt_targets
from swiftbrush_export.specs import GraphSpec, Shapes, check_shapes, decoder_spec, text_encoder_spec, unet_spec
from swiftbrush_export.specs import fp32_layers as fp32_layer_policy
from swiftbrush_export.student import Student, check_student_dir, load_student
from swiftbrush_runtime.errors import InvalidArgumentError, first_line
from swiftbrush_runtime.manifest import atomic_dir, check_out_dir, package_versions, write_manifest
from swiftbrush_runtime.onestep import OneStep, one_step_scheduler, write_onestep
from swiftbrush_runtime.toy_assets import TOY_TAESD_DIR, TOY_TEACHER_DIR

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16")
DECODERS = ("vae", "taesd")
DEFAULT_TARGET = "desktop"
TOY_TAESD = "toy"  # --taesd toy: the toy world's AutoencoderTiny, shipped in swiftbrush/toy/assets/taesd
VERSIONED = ("torch", "onnx", "diffusers", "transformers", "onnxslim", "onnxconverter_common", "optimum", "optimum-onnx")  # what an onnx manifest's versions list


def export_onnx(
    student: Path | str,
    out: Path | str,
    *,
    dtype: str = "fp32",
    height: int | None = None,
    width: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    opset: int | None = None,
    target: str = DEFAULT_TARGET,
    decoder: str = "vae",
    taesd: Path | str | None = None,
    fp32_layers: str = "auto",
    optimize: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a student; returns the written manifest. Arguments are checked first.

    `decoder="taesd"` also exports a tiny autoencoder decoder (diffusers
    AutoencoderTiny from `taesd`, default `<student>/taesd`; "toy" is the one
    trained for the toy teacher's VAE) as `taesd_decoder/`,
    which the runtime then uses; `vae_decoder/` is always written (optimum's
    pipeline needs it). `fp32_layers` picks which UNet layers stay fp32 in fp16
    graphs (specs.FP32_POLICIES; "auto" keeps the noise-carrying path exact enough
    for images within 2/255 of fp32).
    """
    out = Path(out)
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if decoder not in DECODERS:
        raise InvalidArgumentError(f"--decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    target_info = trt_targets.get_target(target)
    opset = target_info.default_opset if opset is None else opset
    graphs.check_opset(opset)
    if opset > target_info.max_opset:
        raise InvalidArgumentError(
            f"--opset {opset} is above what target {target} ({target_info.description}) parses (up to {target_info.max_opset}); "
            f"leave --opset out for its default, {target_info.default_opset}"
        )
    if opset >= 17 and trt_targets.PARSERS[target_info.tensorrt]["ops"].get("LayerNormalization") is None:
        raise InvalidArgumentError(
            f"--opset {opset} exports LayerNorm as LayerNormalization, which target {target} ({target_info.description}) does not parse; "
            f"use --opset 16 (or leave --opset out)"
        )
    check_out_dir(out, overwrite, kind="onnx", inputs=(("--student", student), ("--taesd", None if str(taesd) == TOY_TAESD else taesd)))
    info = check_student_dir(student)
    onestep = info.onestep
    taesd_dir = None
    if decoder == "taesd":
        taesd_dir = resolve_taesd(taesd, info.path)
        if not (taesd_dir / "config.json").is_file() or not any(taesd_dir.glob("*.safetensors")):
            raise InvalidArgumentError(
                f"--decoder taesd needs a diffusers AutoencoderTiny folder (config.json + safetensors) at {taesd_dir}; "
                f"pass it with --taesd DIR (or --taesd {TOY_TAESD} for the toy world's)"
            )
        check_taesd_fits(taesd_dir, onestep, toy=str(taesd) == TOY_TAESD)
    shapes = check_shapes(
        batch, onestep.resolution if height is None else height, onestep.resolution if width is None else width, dynamic, onestep.vae_scale_factor
    )
    unet_config = json.loads((info.path / "unet" / "config.json").read_text())
    keep_fp32 = fp32_layer_policy(fp32_layers, len(unet_config.get("up_block_types", ())))

    started = time.perf_counter()
    loaded = load_student(info.path, verify=False)
    text_width = int(loaded.pipeline.text_encoder.config.hidden_size)
    specs = [
        text_encoder_spec(shapes, keep_fp32=keep_fp32["text_encoder"] == ("*",)),
        unet_spec(shapes, onestep.latent_channels, text_width, keep_fp32["unet"]),
        decoder_spec(shapes, onestep.latent_channels),
    ]
    if taesd_dir is not None:
        specs.append(decoder_spec(shapes, onestep.latent_channels, name="taesd_decoder"))
    with atomic_dir(out, overwrite, kind="onnx") as tmp:
        with _quiet_tracing():
            _export_text_and_decoder(loaded, tmp, specs[0], specs[2], shapes, opset)
            _export_unet(loaded, tmp, specs[1], opset)
            if taesd_dir is not None:
                _export_taesd(taesd_dir, onestep.scaling_factor, tmp, specs[3], opset)
        graph_info = {spec.name: _finish_graph(tmp, spec, dtype, optimize, target) for spec in specs}
        _write_configs(loaded, tmp)
        versions = _versions()
        manifest = write_manifest(
            tmp,
            "onnx",
            source={
                "student": str(info.path.resolve()),
                "student_manifest_sha256": info.manifest_sha256,
                **({"taesd": str(taesd_dir.resolve())} if taesd_dir is not None else {}),
            },
            dtype=dtype,
            opset=opset,
            target=target,
            tensorrt_parser=target_info.tensorrt,
            decoder=decoder,
            fp32_layers={name: list(kept) for name, kept in keep_fp32.items() if kept} if dtype == "fp16" else {},
            batch={"min": shapes.batch_range()[0], "opt": shapes.batch_range()[1], "max": shapes.batch_range()[2]},
            height=shapes.height,
            width=shapes.width,
            dynamic=dynamic,
            latent_channels=onestep.latent_channels,
            vae_scale_factor=onestep.vae_scale_factor,
            text_len=77,
            text_width=text_width,
            graphs=graph_info,
            onestep=onestep.to_json(),
            versions=versions,
            export_seconds=round(time.perf_counter() - started, 2),
        )
    logger.info("exported %s (%s) in %.1f s", out, dtype, time.perf_counter() - started)
    return manifest


def resolve_taesd(taesd: Path | str | None, student: Path) -> Path:
    """The AutoencoderTiny folder for --decoder taesd: --taesd, "toy" (the packaged toy one), or <student>/taesd."""
    if not taesd:
        return student / "taesd"
    if str(taesd) == TOY_TAESD:
        return TOY_TAESD_DIR
    return Path(taesd)


def check_taesd_fits(folder: Path, onestep: OneStep, toy: bool) -> None:
    """Refuse a tiny decoder that cannot decode this student's latents, before minutes of export."""
    teacher = onestep.extra.get("teacher")
    if toy and teacher is not None and not _is_toy_teacher(str(teacher)):
        raise InvalidArgumentError(
            f"--taesd {TOY_TAESD} was distilled from the toy teacher's VAE and decodes only its latents; this student's teacher "
            f"is {teacher!r}: pass the tiny decoder trained for that VAE with --taesd DIR (for SD 1.x/2.x, madebyollin/taesd)"
        )
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"--taesd {folder}: config.json does not read as JSON ({e})") from None
    channels = int(config.get("latent_channels", 4))
    scale = int(config.get("upsampling_scaling_factor", 2)) ** (len(config.get("decoder_block_out_channels", (64,) * 4)) - 1)
    if (channels, scale) != (onestep.latent_channels, onestep.vae_scale_factor):
        raise InvalidArgumentError(
            f"--taesd {folder} decodes {channels}-channel latents {scale}x up, but this student's VAE makes "
            f"{onestep.latent_channels}-channel latents {onestep.vae_scale_factor}x down: pass the tiny decoder trained for its VAE"
        )


def _is_toy_teacher(teacher: str) -> bool:
    """"toy" or the packaged toy teacher's folder (students record the --teacher they were given)."""
    return teacher == "toy" or Path(teacher).resolve() == TOY_TEACHER_DIR.resolve()


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's per-`if` warnings on shape checks that are constant for a fixed export shape."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(deprecated|TracerWarning|index_put|onnx).*")
        yield


def _export_text_and_decoder(student: Student, out: Path, text: GraphSpec, dec: GraphSpec, shapes: Shapes, opset: int) -> None:
    """Text encoder and VAE decoder through optimum-onnx's diffusers export configs."""
    from optimum.exporters.onnx import export_models
    from optimum.exporters.utils import get_diffusion_models_for_export

    models = get_diffusion_models_for_export(student.pipeline, int_dtype="int32", float_dtype="fp32", exporter="onnx")
    chosen = {name: models[name] for name in (text.name, dec.name)}
    lh, lw = shapes.latent
    export_models(
        models_and_onnx_configs=chosen,
        output_dir=out,
        opset=opset,
        output_names=[f"{name}/model.onnx" for name in chosen],
        device="cpu",
        input_shapes={"batch_size": shapes.batch, "sequence_length": 77, "height": lh, "width": lw},
        no_dynamic_axes=not shapes.dynamic,
    )
    for name, (module, _) in chosen.items():  # the per-component config.json optimum's pipeline reads
        if hasattr(module, "save_config"):
            module.save_config(out / name)
        else:
            module.config.save_pretrained(out / name)


def one_step_module(student: Student) -> Any:
    """The student UNet as the one-step graph: (noise, text) -> x0 / scaling_factor.

    A torch.nn.Module built here so torch stays a lazy import; the output -> latent tail
    (eps or v, the teacher's prediction type) is its own submodule, so its exported
    nodes are named /x0/* and stay fp32.
    """
    import torch

    onestep = student.onestep
    k, m = onestep.x0_coefficients()
    c_eps, c_out = k, m / onestep.scaling_factor

    class ToLatent(torch.nn.Module):
        def forward(self, sample: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return (sample - c_eps * eps) * c_out

    class OneStepUNet(torch.nn.Module):
        def __init__(self, unet: Any) -> None:
            super().__init__()
            self.unet = unet
            self.x0 = ToLatent()

        def forward(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
            t = torch.full((sample.shape[0],), onestep.timestep, dtype=torch.int64, device=sample.device)
            eps = self.unet(sample, t, encoder_hidden_states, return_dict=False)[0]
            return self.x0(sample, eps)

    return OneStepUNet(student.pipeline.unet).eval()


def _export_unet(student: Student, out: Path, spec: GraphSpec, opset: int) -> None:
    import torch

    module = one_step_module(student)
    sample = spec.sample_inputs()
    path = out / spec.name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (sample["sample"], sample["encoder_hidden_states"]),
            str(path),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes or None,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: standard-domain ops TensorRT parses, no onnxscript
        )
    student.pipeline.unet.save_config(out / spec.name)


def _export_taesd(folder: Path, scaling_factor: float, out: Path, spec: GraphSpec, opset: int) -> None:
    """AutoencoderTiny.decode as `taesd_decoder`, taking the same input as `vae_decoder`.

    The UNet graph gives x0 / scaling_factor (the KL VAE's input); TAESD decodes the
    scaled latent x0 itself, so the graph multiplies back first.
    """
    import torch
    from diffusers import AutoencoderTiny

    try:
        tiny = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True).eval().requires_grad_(False)
    except Exception as e:
        raise InvalidArgumentError(f"--taesd {folder} does not load as an AutoencoderTiny ({first_line(e)})") from None

    class TinyDecode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tiny = tiny

        def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
            return self.tiny.decode(latent_sample * scaling_factor, return_dict=False)[0]

    path = out / spec.name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            TinyDecode().eval(), (spec.sample_inputs()["latent_sample"],), str(path), input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes or None, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    tiny.save_config(out / spec.name)


def _finish_graph(root: Path, spec: GraphSpec, dtype: str, optimize: bool, target: str) -> dict[str, Any]:
    """Load, clean up, convert, check for the target's TensorRT parser and re-save one exported graph."""
    path = root / spec.name / "model.onnx"
    model = graphs.load(path)
    optimized = False
    if optimize:
        model, optimized = graphs.optimize(model)
    if dtype == "fp16" and not spec.fp32_graph:
        keep = [n.name for n in model.graph.node if any(n.name.startswith(p) for p in spec.fp32_nodes)]
        model = graphs.to_fp16(model, keep_fp32_nodes=keep)
        model = graphs.collapse_cast_round_trips(graphs.fp32_outputs(model))
    for name, dtype_name in spec.unused_inputs.items():
        graphs.add_unused_input(model, name, dtype_name)
    graphs.float_arg_reductions(model)
    ops = graphs.check_tensorrt_ops(model, spec.name)
    problems = trt_targets.check_model(model, target)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise graphs.GraphError(f"{spec.name}: {problems[0]}{more}")
    for stale in path.parent.glob("*.onnx_data"):
        stale.unlink()
    for stale in path.parent.iterdir():  # torch/optimum may leave per-tensor external files
        if stale.is_file() and stale.suffix not in (".onnx", ".json"):
            stale.unlink()
    files = graphs.save(model, path)
    signature = graphs.io_signature(model)
    return {
        "path": f"{spec.name}/model.onnx",
        "files": [f"{spec.name}/{f}" for f in files],
        "inputs": {
            name: {"dtype": signature["inputs"][name]["dtype"], "min": list(p[0]), "opt": list(p[1]), "max": list(p[2])}
            for name, p in spec.profile.items()
        },
        "unused_inputs": dict(spec.unused_inputs),
        "outputs": signature["outputs"],
        "ops": ops,
        "nodes": len(model.graph.node),
        "optimized": optimized,
        "external_data": len(files) > 1,
        "bytes": sum((root / spec.name / f).stat().st_size for f in files),
    }


def _write_configs(student: Student, out: Path) -> None:
    """The non-graph files: tokenizer (verbatim, with tokenizer.json), scheduler, model_index, onestep."""
    src = student.info.path
    shutil.copytree(src / "tokenizer", out / "tokenizer")
    # optimum's pipeline, num_inference_steps=1: DDIM runs the graph once at t = 999 and, since
    # the graph already returns the decoder's input, takes its output as the sample ...
    student.pipeline.scheduler = one_step_scheduler(student.pipeline.scheduler.config, prediction_type="sample")
    student.pipeline.scheduler.save_pretrained(out / "scheduler")
    student.pipeline.save_config(out)
    # ... and decodes latents / scaling_factor: in this folder the UNet graph has divided already.
    decoder_config = out / "vae_decoder" / "config.json"
    config = json.loads(decoder_config.read_text())
    decoder_config.write_text(json.dumps({**config, "scaling_factor": 1.0}, indent=2) + "\n")
    write_onestep(out, student.onestep)


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), **package_versions(VERSIONED)}
