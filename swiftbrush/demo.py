"""`make demo` / `swiftbrush demo`: the whole chain on the built-in toy world.

    swiftbrush demo --out out/demo [--overwrite]

Offline, CPU, minutes. Every stage of the artifact chain on the toy world:
the toy teacher at 25 steps and at 1 step; SwiftBrush v2's recipe on the toy: the
shipped one-step start (start/: a UNet regressed onto the teacher's own samples by
swiftbrush/toy/train_warm_start.py, the toy's SD-Turbo), VSD distillation from it with
the `toy` preset and `--recipe swiftbrush-v2` (vsd-student/, run in distill/), and the
weight merge of the two (student/); ONNX export (onnx/), the slim runtime's ONNX Runtime
benchmark, the student's images through the runtime, all scored by the toy evaluator
(alignment and FD), the start's scores beside the student's; a labelled image grid and
`report.json`; a manifest.json of kind "demo" marks the folder as the demo's (`--overwrite`
may replace it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from swiftbrush.evaluate import default_guidance_scale, sample_teacher, score_fields, toy_prompts
from swiftbrush.teacher import TOY_WARM_START, load_teacher
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


DEMO_ENTRIES = ("report.json", "grid.png", "start", "vsd-student", "student", "onnx", "distill", MANIFEST)
DEMO_RECIPE = "swiftbrush-v2"  # the best recipe on the toy that fits the demo's budget (benchmarks/RESULTS.md)
MERGE_WEIGHT = 0.5  # the VSD student's share in the final merge with its start (SwiftBrush v2: 0.5)
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

    # Distil with SwiftBrush v2's toy recipe from the shipped one-step start (the toy's SD-Turbo),
    # then merge the VSD student with that start (v2's last step): out/student is the merge.
    from swiftbrush.config import build_config
    from swiftbrush.merge import merge_students
    from swiftbrush.student import sample_student
    from swiftbrush.train import distill

    config = build_config("toy", "toy", recipe=DEMO_RECIPE)
    start = time.time()
    write_start_student(work / "start", teacher)
    images = sample_student(work / "start", prompts, seed=seed)
    report["start"] = {"steps": 1, "model": TOY_WARM_START, **score_fields(evaluator.score(images, prompts)), "seconds": round(time.time() - start, 1)}
    rows.append(("start 1 step", _grid_columns(images, per_caption)))
    print(f"[demo] start ({TOY_WARM_START}): alignment {report['start']['alignment']:.3f}, FD {report['start']['fd']:.1f}", flush=True)

    start = time.time()
    vsd = distill("toy", "toy", work / "distill", config, student_dir=work / "vsd-student")
    report["distill"] = {"steps": config.max_steps, "seconds": round(time.time() - start, 1), "preset": "toy", "recipe": config.recipe,
                         "run_dir": str(target / "distill")}  # fmt: skip
    print(f"[demo] distilled {config.max_steps} steps ({config.recipe}) in {time.time() - start:.0f}s -> {target / 'vsd-student'}", flush=True)
    images = sample_student(vsd, prompts, seed=seed)
    report["vsd_student"] = {"steps": 1, **score_fields(evaluator.score(images, prompts))}
    rows.append(("VSD student", _grid_columns(images, per_caption)))
    print(f"[demo] VSD student: alignment {report['vsd_student']['alignment']:.3f}, FD {report['vsd_student']['fd']:.1f}", flush=True)

    student = merge_students(vsd, work / "start", MERGE_WEIGHT, work / "student")
    relocate_merge_sources(student, target)
    start = time.time()
    images = sample_student(student, prompts, seed=seed)
    scores = evaluator.score(images, prompts)
    report["student"] = {
        "steps": 1,
        "merge_weight": MERGE_WEIGHT,
        **score_fields(scores),
        "seconds": round(time.time() - start, 1),
    }
    report["student_vs_start"] = {"alignment_higher": scores.alignment > report["start"]["alignment"], "fd_lower": scores.fd < report["start"]["fd"]}
    rows.append((f"student (merge {MERGE_WEIGHT})", _grid_columns(images, per_caption)))
    print(f"[demo] student ({MERGE_WEIGHT} VSD student + {1 - MERGE_WEIGHT} start): alignment {scores.alignment:.3f}, FD {scores.fd:.1f}", flush=True)

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


def write_start_student(out: Path, teacher: Any) -> Path:
    """The shipped one-step start as a student folder (the teacher's other parts), to score and merge with."""
    from swiftbrush.teacher import load_student_init, teacher_fingerprint
    from swiftbrush.student import write_student

    unet = load_student_init(TOY_WARM_START, teacher)
    made_from = {"teacher": "toy", "teacher_fingerprint": teacher_fingerprint(teacher), "start": TOY_WARM_START}
    return write_student(out, unet, teacher, default_guidance_scale("toy"), made_from, overwrite=False)


def relocate_merge_sources(student: Path, target: Path) -> None:
    """The merged student's manifest names its parents where they will be once the demo folder is in place."""
    from swiftbrush_runtime.manifest import read_json

    manifest = read_json(student / MANIFEST)
    merge = manifest["made_from"]["merge"]
    merge["a"], merge["b"] = str(target / "vsd-student"), str(target / "start")
    atomic_write(student / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _print_table(report: dict[str, Any]) -> None:
    print(f"\n{'method':<20}{'steps':>6}{'alignment':>11}{'FD':>9}")
    for key in ("teacher_multistep", "teacher_onestep", "start", "vsd_student", "student", "student_onnxruntime"):
        if key in report:
            r = report[key]
            print(f"{key:<20}{r['steps']:>6}{r['alignment']:>11.3f}{r['fd']:>9.1f}")
    if "bench" in report:
        b = report["bench"]
        print(f"bench: {b['ms_per_image']:.1f} ms/image ({b['backend']}, {b['device']}, batch {b['batch']})")
    if "distill" in report:
        d = report["distill"]
        print(f"distill: --recipe {d['recipe']}, {d['steps']} steps from the shipped start in {d['seconds']:.0f} s; student = merge weight {report['student']['merge_weight']}")
    if "student_vs_start" in report:
        better = [name for name, key in (("alignment", "alignment_higher"), ("FD", "fd_lower")) if report["student_vs_start"][key]]
        print(f"student vs its start: better on {', '.join(better) if better else 'neither alignment nor FD'}")
    print()
