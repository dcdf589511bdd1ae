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
        from swiftbrush.config import RECIPES

        formatter.write_paragraph()
        formatter.write_text("--recipe swiftbrush-v2 changes, per preset (before the options given):")
        for name, fields in RECIPES["swiftbrush-v2"].items():
            formatter.write_text(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
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
@click.option("--recipe", type=click.Choice(["swiftbrush", "swiftbrush-v2"]), default=None,
              help="swiftbrush (v1, the default) or swiftbrush-v2: AdamW, LoRA teacher r64/a128, the clamped CLIP loss via TAESD, "
                   "a one-step start when given (the toy: its shipped start); the options below still win.")  # fmt: skip
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha of the LoRA teacher (scale alpha / rank; default: the preset's).")
@click.option("--optimizer", type=click.Choice(["adam", "adamw"]), default=None, help="Optimiser of both networks (v1: adam, v2: adamw).")
@click.option("--weight-decay", type=float, default=None, help="Weight decay of both optimisers (default: the recipe's).")
@click.option("--clip-model", default=None, help="CLIP for the clamped CLIP loss: a CLIPModel folder, hub id (openai/clip-vit-base-patch32) or 'toy'.")
@click.option("--clip-decoder", default=None, help="Tiny decoder for the CLIP loss: an AutoencoderTiny folder, hub id (madebyollin/taesd) or 'toy'.")
@click.option("--clip-weight", type=float, default=None, help="Weight of the clamped CLIP loss at step 0, decayed linearly to 0 (v2: 0.1; 0 = off).")
@click.option("--lora-warmup-steps", type=Integer(), default=None,
              help="Steps (after any regression stage) in which only the LoRA teacher learns, the student held: spares a good start VSD's first pull.")
@click.option("--regression-pairs", default=None, help="A `swiftbrush pairs` folder of this teacher: its own (noise -> sample) pairs.")
@click.option("--regression-steps", type=Integer(), default=None, help="First N steps: regress the student onto the pairs only (an image-free warm start).")
@click.option("--regression-weight", type=float, default=None, help="Weight of the regression term added to VSD after those steps (DMD's; 0 = off).")
@needs_extra("train")
def distill_cmd(teacher: str, prompts: str, out: str, preset: str | None, resume: bool, overwrite: bool, guidance_scale: float | None,
                recipe: str | None, **overrides) -> None:  # fmt: skip
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
    config = build_config(preset, teacher, base=base, recipe=recipe, guidance_scale=guidance_scale, lora_guidance_scale=guidance_scale, **overrides)
    student = distill(teacher, prompts, out, config, resume=resume, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # one line for the run, not one per DDP rank
        click.echo(f"student: {student}")


@cli.command("pairs")
@click.option("--teacher", required=True, help="Teacher: a diffusers folder, a hub id, or 'toy'.")
@click.option("--prompts", required=True, help=f"'toy' (the toy caption grid), or a prompt file: {PROMPT_RULES}.")
@click.option("--out", metavar="DIR", required=True,
              help="A new or empty folder, or an unfinished pairs folder of the same arguments (finished where it stopped).")
@click.option("--per-prompt", type=Integer(1, 100_000), default=1, show_default=True, help="Pairs (noises) per prompt.")
@click.option("--steps", type=Integer(1, 1000), default=25, show_default=True, help="Teacher sampling steps (DDIM, trailing spacing, deterministic).")
@click.option("--guidance-scale", type=float, default=None, help="CFG scale of the teacher's samples; default: the toy's for the toy teacher, 4.5 otherwise.")
@click.option("--seed", type=Integer(), default=0, show_default=True, help="Seed of the noises, 0..4294967295 (shard K draws from (seed, K)).")
@click.option("--shard-size", type=Integer(1, 1_000_000), default=256, show_default=True, help="Pairs per safetensors shard (the unit of resuming).")
@click.option("--batch-size", type=Integer(1, 4096), default=64, show_default=True, help="Prompts per teacher call.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier finished pairs folder in --out; it stays whole until the new one is complete.")
@needs_extra("train")
def pairs_cmd(teacher: str, prompts: str, out: str, per_prompt: int, steps: int, guidance_scale: float | None, seed: int,
              shard_size: int, batch_size: int, overwrite: bool) -> None:  # fmt: skip
    """Sample the teacher's own (noise -> N-step sample) pairs for an image-free warm start.

    \b
    The student can then be regressed onto them before (or beside) VSD:
      swiftbrush distill ... --regression-pairs OUT --regression-steps 1500
    Interrupted? Run the same command again: finished shards are kept. Under
    `accelerate launch --num_processes N` the shards are split across the ranks.
    """
    from swiftbrush.launch import relaunch_as_accelerate_cpu_ranks

    relaunch_as_accelerate_cpu_ranks()
    from swiftbrush.pairs import sample_pairs

    folder = sample_pairs(teacher, prompts, out, per_prompt=per_prompt, steps=steps, guidance_scale=guidance_scale, seed=seed,
                          shard_size=shard_size, batch_size=batch_size, overwrite=overwrite)  # fmt: skip
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"pairs: {folder}")


@cli.command("merge")
@click.argument("student_a", metavar="STUDENT_A")
@click.argument("student_b", metavar="STUDENT_B")
@click.option("--weight", type=float, metavar="W", required=True, help="The share of STUDENT_A, in [0, 1]: every UNet tensor becomes W·A + (1−W)·B (0.5: their mean).")
@click.option("--out", metavar="DIR", required=True, help="A new or empty folder for the merged student.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an earlier merge output (nothing else is replaced); it stays whole until the new one is written.")
@needs_extra("train")
def merge_cmd(student_a: str, student_b: str, weight: float, out: str, overwrite: bool) -> None:
    """Merge two students of one teacher: W·A + (1−W)·B in every UNet tensor.

    SwiftBrush v2's final step: merge a VSD student with the one-step student it
    started from, or with a LoRA student. Both must be student folders of the same teacher,
    UNet architecture, prediction type and resolution; the rest (VAE, text encoder,
    tokenizer, scheduler, taesd/) is copied from STUDENT_A. The result is a student
    folder for eval, export and generate.
    """
    from swiftbrush.merge import merge_students

    click.echo(f"student: {merge_students(student_a, student_b, weight, out, overwrite=overwrite)}")


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
