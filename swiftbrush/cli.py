"""The `swiftbrush` command line (click).

Each command is a thin function that parses flags and calls one importable
function; heavy libraries are imported inside the commands, so `--help` is fast
and the runtime commands work without torch installed.

Exit status: 0 done, 2 a user error (one line on stderr, no traceback), 1 an
internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from swiftbrush_runtime.cli_options import Integer, needs_extra, probe_output_file, write_text_output
from swiftbrush_runtime.errors import SwiftBrushError
from swiftbrush_runtime.prompts import RULES as PROMPT_RULES

# distill's options whose defaults come from the preset, and the config field each sets.
PRESET_OPTIONS = {
    "--max-steps": "max_steps", "--batch-size": "batch_size", "--checkpoint-every": "checkpoint_every", "--seed": "seed",
    "--guidance-scale": "guidance_scale", "--lora-rank": "lora_rank", "--student-lr": "student_lr", "--lora-lr": "lora_lr",
    "--lora-updates": "lora_updates", "--mixed-precision": "mixed_precision", "--gradient-checkpointing": "gradient_checkpointing",
}  # fmt: skip


class _PresetDefaults(click.Command):
    """distill's --help ends with each preset's defaults (read from the presets, so it cannot drift)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from swiftbrush.config import PRESETS

        names = list(PRESETS)
        rows = [("option", *names)] + [(flag, *(str(getattr(PRESETS[n], field)) for n in names)) for flag, field in PRESET_OPTIONS.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        formatter.write_paragraph()
        formatter.write_text("Defaults per --preset (an option given on the command line wins):")
        for row in rows:
            formatter.write("  " + "".join(f"{cell:<{w + 2}}" for cell, w in zip(row, widths)).rstrip() + "\n")
        super().format_epilog(ctx, formatter)


class _Group(click.Group):
    """Turns the project's typed errors and click's usage errors into one stderr line and exit status 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SwiftBrushError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except click.ClickException as e:  # a missing option, a value outside a Choice: click's own message, without the usage block
            click.echo(f"error: {(e.format_message().strip().splitlines() or [type(e).__name__])[0]}", err=True)
            sys.exit(e.exit_code)
        except OSError as e:  # a full disk, a path that vanished mid-run: one line naming the file, not a traceback
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="swiftbrush")
def cli() -> None:
    """SwiftBrush: one-step text-to-image, from teacher to TensorRT engine.

    \b
    teacher --distill--> student --export onnx--> onnx dir --export engine--> engines
    then `generate` / `bench`, or swiftbrush_runtime.Generator in your app.
    Start with `swiftbrush demo` (the built-in toy world, offline, CPU).
    """


@cli.command("eval")
@click.option("--model", required=True, help="A teacher or student folder, or 'toy-teacher'.")
@click.option("--steps", type=Integer(1, 1000), default=25, show_default=True, help="Sampling steps (DDIM, trailing spacing) for a teacher.")
@click.option("--guidance-scale", type=float, default=None, help="CFG scale; default: the toy preset's scale for the toy teacher, 4.5 otherwise.")
@click.option("--per-caption", type=Integer(1, 1000), default=8, show_default=True, help="Images per toy caption.")
@click.option("--seed", type=Integer(), default=0, show_default=True, help="Sampling seed, 0..4294967295.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the scores here (checked before the sampling).")
@needs_extra("train")
def eval_cmd(model: str, steps: int, guidance_scale: float | None, per_caption: int, seed: int, json_path: Path | None) -> None:
    """Score a model on the toy world: alignment and FD over the full caption grid.

    A progress bar goes to stderr; stdout is the scores as JSON.
    """
    if json_path is not None:  # checked before the sampling, so the scores are not lost at the end
        probe_output_file(json_path, "--json")
    from swiftbrush.evaluate import evaluate_model

    result = evaluate_model(model, steps=steps, guidance_scale=guidance_scale, per_caption=per_caption, seed=seed, progress=True)
    text = json.dumps(result, indent=2)
    click.echo(text)
    if json_path is not None:
        write_text_output(json_path, text)


@cli.command("distill", cls=_PresetDefaults)
@click.option("--teacher", required=True, help="Teacher: a diffusers folder, a hub id, or 'toy'.")
@click.option("--prompts", required=True, help=f"'toy' (the toy caption grid), or a prompt file: {PROMPT_RULES}.")
@click.option("--out", metavar="DIR", required=True, help="Run folder, new or empty (or the run to --resume); the student is written to OUT/student.")
@click.option("--preset", default=None, help="sd21-base, sd15, sd-turbo or toy (default: from the teacher).")
@click.option("--student-init", default=None,
              help="Start the student from this UNet instead of the teacher's (SwiftBrush v2: stabilityai/sd-turbo for an SD 2.1-base "
                   "teacher): a pipeline folder, a student folder, a hub id or a UNet folder of the teacher's architecture.")  # fmt: skip
@click.option("--student-lora-rank", type=Integer(0, 1024), default=None,
              help="Train rank-N LoRA adapters on the student instead of all its weights (SwiftBrush v2's resource-efficient "
                   "student: 256 for an SD 2.1-size UNet, alpha 2 x rank); OUT/student then holds the merged weights and the "
                   "adapter in student_lora/. 0 (default): the full student.")  # fmt: skip
@click.option("--max-steps", type=Integer(), default=None, help="Training steps (default: the preset's, see below).")
@click.option("--batch-size", type=Integer(), default=None,
              help="Prompts per process per training step (default: the preset's); not export's or bench's --batch, the images per inference call.")
@click.option("--checkpoint-every", type=Integer(), default=None, help="Steps between checkpoints (default: the preset's).")
@click.option("--keep-checkpoints", "checkpoints_keep", type=Integer(), default=None,
              help="Newest checkpoints kept in OUT/checkpoints; older ones are deleted (default 2).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its newest checkpoint; flags not given keep the run's values (--max-steps too).")
@click.option("--overwrite", is_flag=True,
              help="Replace the earlier run in --out (a folder with run.json and only a run's files); it stays whole until the new student is written.")
@click.option("--seed", type=Integer(), default=None, help="Seed of everything random in the run, 0..4294967295 (default: the preset's).")
@click.option("--guidance-scale", type=float, default=None, help="CFG scale of both teacher and LoRA predictions (default: the preset's).")
@click.option("--lora-rank", type=Integer(), default=None, help="Rank of the LoRA teacher's adapters (default: the preset's).")
@click.option("--student-lr", type=float, default=None, help="Adam learning rate of the student (default: the preset's).")
@click.option("--lora-lr", type=float, default=None, help="Adam learning rate of the LoRA teacher (default: the preset's).")
@click.option("--lora-updates", type=Integer(), default=None, help="LoRA-teacher updates per student update (paper: 1; default: the preset's).")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None,
              help="Autocast precision of the UNets; the VAE stays fp32 (default: the preset's; fp16/bf16 need a GPU).")
@click.option("--gradient-checkpointing", is_flag=True, default=None, help="Trade compute for memory in both UNets (default: the preset's).")
@click.option("--sds", is_flag=True, default=None, help="Ablation: SDS (no LoRA teacher) instead of VSD.")
@needs_extra("train")
def distill_cmd(teacher: str, prompts: str, out: str, preset: str | None, resume: bool, overwrite: bool, guidance_scale: float | None, **overrides) -> None:
    """Distill a teacher into a one-step student (SwiftBrush VSD), no images needed.

    \b
    OUT/student is a diffusers folder; besides swiftbrush eval/export/generate it runs in
      StableDiffusionPipeline.from_pretrained(OUT/student)(prompt, num_inference_steps=1, guidance_scale=0.0)
    """
    from swiftbrush.launch import relaunch_as_accelerate_cpu_ranks

    relaunch_as_accelerate_cpu_ranks()  # `accelerate launch --cpu --num_processes N` starts N ranks
    from swiftbrush.config import build_config
    from swiftbrush.run_dir import recorded_config
    from swiftbrush.train import distill

    from swiftbrush_runtime.manifest import resolve_out

    base = recorded_config(resolve_out(out)) if resume else None  # a resumed run keeps its own settings
    config = build_config(preset, teacher, base=base, guidance_scale=guidance_scale, lora_guidance_scale=guidance_scale, **overrides)
    student = distill(teacher, prompts, out, config, resume=resume, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # one line for the run, not one per DDP rank
        click.echo(f"student: {student}")


@cli.command("demo")
@click.option("--out", metavar="DIR", default="out/demo", show_default=True, help="A new or empty folder for report.json, grid.png and every stage's output (student/, onnx/, distill/).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an earlier demo output (nothing else is replaced).")
@click.option("--per-caption", type=Integer(2, 100), default=8, show_default=True, help="Images per caption for the scores.")
@needs_extra("train", "export")  # the demo distills, then exports to ONNX
def demo_cmd(out: str, overwrite: bool, per_caption: int) -> None:
    """Run the whole chain on the toy world and write report.json and grid.png."""
    from swiftbrush.demo import run_demo

    run_demo(out, per_caption=per_caption, overwrite=overwrite)


from swiftbrush_export.cli import export_group  # noqa: E402  (export onnx / export engine)
from swiftbrush_runtime.cli import bench_cmd, doctor_cmd, generate_cmd  # noqa: E402

cli.add_command(export_group)
cli.add_command(generate_cmd)
cli.add_command(bench_cmd)
cli.add_command(doctor_cmd)


def main() -> None:
    cli(prog_name="swiftbrush")


if __name__ == "__main__":
    main()
