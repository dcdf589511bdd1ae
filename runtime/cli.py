"""`swiftbrush generate`, `bench` and `doctor` (click; torch-free).

    swiftbrush generate --model DIR (--prompt TEXT ... | --prompts FILE) [--seed N]
                        [--backend auto|tensorrt|onnxruntime|torch] [--device D]
                        [--height H --width W] [--decoder vae|taesd] --out DIR [--overwrite]
    swiftbrush bench    --model DIR [--backend B | --compare b1,b2] [--batch N] [--iters N]
                        [--warmup N] [--decoder vae|taesd] [--compile] [--json FILE]
    swiftbrush doctor   [--json [FILE]]
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from swiftbrush_runtime.cli_options import Integer, probe_output_file, write_text_output
from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.prompts import RULES as PROMPT_RULES


def _has_entries(folder: str) -> bool:
    try:
        return bool(folder.strip()) and any(Path(folder).iterdir())
    except OSError:
        return False


@click.command("generate")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="An engine, ONNX or student directory.")
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable); \"\" is a valid unconditional prompt.")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help=f"A prompt file: {PROMPT_RULES}.")
@click.option("--seed", type=Integer(), default=0, show_default=True, help="Integer seed of the numpy noise (same on every backend).")
@click.option("--backend", default="auto", show_default=True,
              help="auto (the folder's own), tensorrt, tensorrt-rtx, onnxruntime or torch.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the backend's best).")
@click.option("--height", type=Integer(), default=None,
              help="Image height in pixels, a multiple of 8 (default: the folder's own size; an ONNX or engine folder takes other sizes only if exported --dynamic, a student folder any).")
@click.option("--width", type=Integer(), default=None, help="Image width in pixels, a multiple of 8 (default: the folder's own size; same rule as --height).")
@click.option("--decoder", default=None, help="vae or taesd (default: the directory's own; taesd needs an export made with --decoder taesd, or STUDENT/taesd).")
@click.option("--out", metavar="DIR", required=True,
              help="A new or empty folder for 0000.png ... (written as each batch finishes), images.jsonl (file, prompt, seed, index "
                   "of each image) and grid.png (the first 64 images).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace --out if it is an earlier generate output (nothing else is replaced).")
def generate_cmd(model: Path, prompts: tuple[str, ...], prompts_file: Path | None, seed: int, backend: str, device: str | None,
                 height: int | None, width: int | None, decoder: str | None, out: str, overwrite: bool) -> None:  # fmt: skip
    """Make one image per prompt with one UNet call each.

    Ctrl-C keeps the images already written (images.jsonl lists them).
    """
    from swiftbrush_runtime.commands import generate_to_dir, read_prompts

    if prompts and prompts_file:
        raise InvalidArgumentError("pass --prompt or --prompts, not both")
    texts = read_prompts(prompts_file) if prompts_file else list(prompts)
    if not texts:
        raise InvalidArgumentError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    replacing = overwrite and _has_entries(out)  # then an interruption leaves the earlier output in place
    done = 0
    with contextlib.ExitStack() as stack:
        bars: list = []

        def advance(n: int) -> None:  # the bar starts with the first batch: a refused call prints only its error
            nonlocal done
            if not bars:
                bars.append(stack.enter_context(click.progressbar(length=len(texts), label="generate", file=sys.stderr, show_pos=True)))
            done += n
            bars[0].update(n)

        try:
            paths = generate_to_dir(model, texts, out, seed=seed, backend=backend, device=device, decoder=decoder, overwrite=overwrite,
                                    prompts_file=prompts_file, progress=advance, **size)  # fmt: skip
        except KeyboardInterrupt:
            kept = f"{out} was left as it was" if replacing else f"the {done} image{'s' if done != 1 else ''} written to {out} were kept"
            click.echo(f"\ninterrupted: {kept}", err=True)
            sys.exit(130)
    n = len(paths) - 1
    click.echo(f"wrote {n} image{'s' if n != 1 else ''}, images.jsonl and grid.png to {out}")


@click.command("bench")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="An engine, ONNX or student directory.")
@click.option("--backend", default=None,
              help="auto (the folder's own), tensorrt or tensorrt-rtx (engine folder, by its manifest), onnxruntime (ONNX folder) or torch (student folder); default auto.")
@click.option("--compare", default=None,
              help="Comma-separated backends to run side by side, e.g. onnxruntime,torch: each runs the folder of its kind that --model is or was made from (its manifest's sources); not with --backend.")
@click.option("--batch", type=Integer(min=1), default=1, show_default=True, help="Images per call (the timing is reported per image).")
@click.option("--iters", type=Integer(min=1), default=20, show_default=True, help="Timed iterations per measurement.")
@click.option("--warmup", type=Integer(min=0), default=3, show_default=True, help="Untimed iterations before each measurement.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the backend's best).")
@click.option("--decoder", default=None, help="vae or taesd (default: the directory's own; taesd needs an export made with --decoder taesd, or STUDENT/taesd).")
@click.option("--compile", "compile_", is_flag=True,
              help="torch backend: torch.compile (default mode) under its CUDA graph; about a minute to compile at SD size on an H100.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the report here (checked before the benchmark runs).")
def bench_cmd(model: Path, backend: str | None, compare: str | None, batch: int, iters: int, warmup: int, device: str | None, decoder: str | None,
              compile_: bool, json_path: Path | None) -> None:  # fmt: skip
    """ms per image (p50/p90), end to end and per component; warm-up excluded."""
    from swiftbrush_runtime.bench import format_table, run_bench

    if compare is not None and backend is not None:
        raise InvalidArgumentError("pass --backend or --compare, not both (--compare names every backend it runs)")
    names = [b.strip() for b in compare.split(",") if b.strip()] if compare is not None else [backend or "auto"]
    if not names:
        raise InvalidArgumentError("--compare names no backend; pass e.g. --compare onnxruntime,torch")
    if json_path is not None:  # a report that cannot be written fails now, not after the benchmark
        probe_output_file(json_path, "--json")
    report = run_bench(model, names, batch=batch, iters=iters, warmup=warmup, device=device, decoder=decoder, compile=compile_,
                       follow_sources=compare is not None)  # fmt: skip
    click.echo(format_table(report))
    if json_path is not None:
        write_text_output(json_path, json.dumps(report, indent=2))


@click.command("doctor")
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the report as JSON to this file; --json alone (or --json -) prints it.")  # fmt: skip
def doctor_cmd(json_path: Path | None) -> None:
    """What is installed here and which backends will work (and why not)."""
    from swiftbrush_runtime.doctor import doctor_report, format_report

    if json_path is not None and str(json_path) != "-":
        probe_output_file(json_path, "--json")
    report = doctor_report()
    if json_path is None:
        click.echo(format_report(report))
    else:
        write_text_output(json_path, json.dumps(report, indent=2))
