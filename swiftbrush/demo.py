"""`make demo` / `swiftbrush demo`: the whole chain on the built-in toy world.

    swiftbrush demo --out out/demo [--overwrite]

Offline, CPU, minutes. Every stage of the artifact chain on the toy world:
the toy teacher at 25 steps and at 1 step, VSD distillation with the `toy`
preset (student/), ONNX export (onnx/), the slim runtime's ONNX Runtime
benchmark, the student's images through the runtime, all scored by the toy
evaluator (alignment and FD); a labelled image grid and `report.json`; a
manifest.json of kind "demo" marks the folder as the demo's (`--overwrite` may replace it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from swiftbrush.evaluate import default_guidance_scale, sample_teacher, score_fields, toy_prompts
from swiftbrush.teacher import load_teacher
from swiftbrush.toy.grammar import all_captions
from swiftbrush_runtime.images import labelled_grid
from swiftbrush_runtime.manifest import MANIFEST, OutputKind, atomic_dir, atomic_write, check_out_dir, manifest_kind, relocate_source, write_manifest

# Columns of grid.png: one caption per (colour, shape) pair, the background cycling, so every
# colour, shape and background appears (captions are ordered colour, shape, background).
GRID_CAPTIONS = [3 * i + i % 3 for i in range(12)]


def _grid_columns(images: np.ndarray, per_caption: int) -> list[np.ndarray]:
    """The first image of each grid caption (images are grouped by caption)."""
    return [images[i * per_caption] for i in GRID_CAPTIONS]


def recognise_demo(root: Path) -> str | None:
    """None for an earlier demo output: a "demo" manifest listing every file, or (older demos, no
    manifest) a toy-world report.json beside only the demo's own entries."""
    if (root / MANIFEST).is_file():
        return manifest_kind("demo").recognise(root)
    try:
        report = json.loads((root / "report.json").read_text())
    except (OSError, ValueError):
        return "it has no report.json"
    if not isinstance(report, dict) or report.get("world") != "toy":
        return "its report.json is not a demo report"
    extra = sorted(p.name for p in root.iterdir() if p.name not in DEMO_ENTRIES)
    return f"it holds {extra[0]}, which the demo does not write" if extra else None


DEMO_ENTRIES = ("report.json", "grid.png", "student", "onnx", "distill", MANIFEST)
DEMO = OutputKind("demo output", recognise_demo)


def run_demo(out: Path | str, per_caption: int = 8, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage, write out/report.json and out/grid.png, print a table.

    Every stage is built in a hidden sibling of `out` that replaces it at the end, so an
    interrupted demo leaves no half-made `out`, and an interrupted --overwrite the
    previous demo whole. `overwrite` replaces only an earlier demo output.
    """
    target = check_out_dir(out, overwrite, kind=DEMO)  # checked before minutes of sampling
    with atomic_dir(target, overwrite, kind=DEMO) as work:
        report = _run_stages(work, target, per_caption, seed)
        write_manifest(work, "demo", world="toy", report="report.json")
    _print_table(report)
    print(f"[demo] wrote {target / 'report.json'} and {target / 'grid.png'}")
    return report


def _run_stages(work: Path, target: Path, per_caption: int, seed: int) -> dict[str, Any]:
    """The demo's stages, written into `work` (which becomes `target`); returns the report."""
    from swiftbrush.toy.evaluator import Evaluator

    evaluator = Evaluator.load()
    prompts = toy_prompts(per_caption)
    teacher = load_teacher("toy")
    scale = default_guidance_scale("toy")
    report: dict[str, Any] = {"world": "toy", "images_per_method": len(prompts), "guidance_scale": scale}
    rows: list[tuple[str, list[np.ndarray]]] = []

    for key, steps in (("teacher_multistep", 25), ("teacher_onestep", 1)):
        start = time.time()
        images = sample_teacher(teacher, prompts, steps=steps, guidance_scale=scale, seed=seed)
        scores = evaluator.score(images, prompts)
        report[key] = {
            "steps": steps,
            **score_fields(scores),
            "seconds": round(time.time() - start, 1),
        }
        rows.append((f"teacher {steps} step{'s' if steps > 1 else ''}", _grid_columns(images, per_caption)))
        print(f"[demo] {key}: alignment {scores.alignment:.3f}, FD {scores.fd:.1f} ({time.time() - start:.0f}s)", flush=True)

    # Distil: the toy preset, written as out/student (diffusers layout + onestep.json).
    from swiftbrush.config import build_config
    from swiftbrush.student import sample_student
    from swiftbrush.train import distill

    config = build_config("toy", "toy")
    start = time.time()
    student = distill("toy", "toy", work / "distill", config, student_dir=work / "student")
    report["distill"] = {"steps": config.max_steps, "seconds": round(time.time() - start, 1), "preset": "toy", "run_dir": str(target / "distill")}
    print(f"[demo] distilled {config.max_steps} steps in {time.time() - start:.0f}s -> {target / 'student'}", flush=True)
    start = time.time()
    images = sample_student(student, prompts, seed=seed)
    scores = evaluator.score(images, prompts)
    report["student"] = {
        "steps": 1,
        **score_fields(scores),
        "seconds": round(time.time() - start, 1),
    }
    rows.append(("student 1 step", _grid_columns(images, per_caption)))
    print(f"[demo] student: alignment {scores.alignment:.3f}, FD {scores.fd:.1f}", flush=True)

    # Export and run through the slim runtime (ONNX Runtime, no torch in the loop).
    from swiftbrush_export.onnx_export import export_onnx
    from swiftbrush_runtime import Generator
    from swiftbrush_runtime.bench import run_bench

    start = time.time()
    export_onnx(student, work / "onnx", dtype="fp32")
    relocate_source(work / "onnx", "student", target / "student")  # where the student will be once `work` is moved
    report["export"] = {"dtype": "fp32", "seconds": round(time.time() - start, 1), "dir": str(target / "onnx")}
    with Generator.load(work / "onnx", backend="onnxruntime") as gen:
        runtime_images = gen.generate(prompts, seed=seed)
    agree = float(np.abs(runtime_images.astype(int) - images.astype(int)).max())
    runtime_scores = evaluator.score(runtime_images, prompts)
    report["student_onnxruntime"] = {
        "steps": 1,
        "alignment": round(runtime_scores.alignment, 4),
        "fd": round(runtime_scores.fd, 2),
        "max_abs_diff_vs_torch_uint8": agree,
    }
    rows.append(("runtime (ORT) 1 step", _grid_columns(runtime_images, per_caption)))
    bench = run_bench(work / "onnx", ["onnxruntime"], batch=1, iters=30, warmup=5)["results"][0]
    report["bench"] = {
        "backend": "onnxruntime",
        "device": bench["device"],
        "device_name": bench["device_name"],
        "batch": 1,
        "ms_per_image": bench["end_to_end"]["p50_ms"],
        "p90_ms": bench["end_to_end"]["p90_ms"],
        "components_p50_ms": {k: v["p50_ms"] for k, v in bench["components"].items()},
    }
    print(f"[demo] exported and benchmarked: {bench['end_to_end']['p50_ms']:.1f} ms/image on onnxruntime CPU", flush=True)

    columns = [all_captions()[i].text.removeprefix("a ").removesuffix(" background").replace(" on a ", " on ") for i in GRID_CAPTIONS]
    grid = labelled_grid([r for _, r in rows], [label for label, _ in rows], columns)
    grid.save(work / "grid.png")
    atomic_write(work / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _print_table(report: dict[str, Any]) -> None:
    print(f"\n{'method':<20}{'steps':>6}{'alignment':>11}{'FD':>9}")
    for key in ("teacher_multistep", "teacher_onestep", "student", "student_onnxruntime"):
        if key in report:
            r = report[key]
            print(f"{key:<20}{r['steps']:>6}{r['alignment']:>11.3f}{r['fd']:>9.1f}")
    if "bench" in report:
        b = report["bench"]
        print(f"bench: {b['ms_per_image']:.1f} ms/image ({b['backend']}, {b['device']}, batch {b['batch']})")
    if "distill" in report:
        print(f"distill: {report['distill']['steps']} steps in {report['distill']['seconds']:.0f} s")
    print()
