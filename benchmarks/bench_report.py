"""gpu_bench's report: the machine it ran on, the JSON written after every row, and the markdown tables printed last.

    from benchmarks.bench_report import format_table, save_report
    save_report(out, report)                 # OUT/gpu_bench.json, atomically
    print(format_table(report))
"""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.fp8 import FP8_ROWS
from swiftbrush_runtime.manifest import atomic_write, package_versions

REPORT = "gpu_bench.json"
VERSIONED = ("diffusers", "transformers", "onnxruntime", "tensorrt", "accelerate", "peft", "torchao")  # None where not installed


def machine(device: str) -> dict[str, Any]:
    from swiftbrush_runtime.bench import cpu_name

    out: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
    }
    versions = package_versions(VERSIONED)
    return {**out, **{name: versions.get(name) for name in VERSIONED}}

def save_report(out: Path, report: dict[str, Any]) -> None:
    atomic_write(Path(out) / REPORT, json.dumps(report, indent=2, allow_nan=False) + "\n")

def one_line(e: BaseException) -> str:
    """An exception as the one line a report keeps: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _ms(t: dict[str, Any], key: str) -> str:
    return f"{t[key]['median_ms']:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """A header line or two, then the markdown table (ms per call of the whole batch, medians unless marked)."""
    m, settings = report["machine"], report["settings"]
    gflop = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in report.get("flops_per_image", {}).items())
    lines = [
        f"{m['device_name']}, torch {m['torch']}, {settings['precision']}, {settings.get('resolution')} px, "
        f"GFLOP per image: {gflop}; floor at {settings['peak_tflops']:g} TFLOP/s; {m['date']}",
    ]
    tr = report.get("train")
    if tr and "it_per_s" in tr:
        mem = "—" if tr.get("peak_memory_gib") is None else f"{tr['peak_memory_gib']} GiB"
        lines.append(f"Distillation step ({tr['size']}, batch {tr['batch_size']}, {tr['mixed_precision']}, gradient checkpointing): "
                     f"{tr['it_per_s']} it/s, peak {mem}")  # fmt: skip
    elif tr:
        lines.append(f"Distillation step: {tr.get('status')}: {tr.get('reason')}")
    lines += format_toy_quality(report.get("toy_quality")) + format_fp8(report["cases"]) + format_profiles(report["cases"])
    lines += [
        "",
        "| case | decoder | batch | text enc ms | UNet ms | decoder ms | e2e ms | e2e p90 ms | img/s | e2e floor ms | × floor | first call s | peak GiB | max err ×255 | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["cases"]:
        if r["status"] != "ok":
            where = " ".join(str(x) for x in (r.get("decoder"), r.get("batch")) if x is not None)
            lines.append(f"| {r['case']} | {where or '—'} | | {r['status']}: {r['reason']} | | | | | | | | | | | |")
            continue
        t, p = r["timings"], r["parity"]
        err = "—" if p["max_abs_err_01"] is None else f"{p['max_abs_err_01'] * 255:.3f}"
        mem = "—" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
        e2e = t["end_to_end"]
        lines.append(
            f"| {r['case']} | {r['decoder']} | {r['batch']} | {_ms(t, 'text_encoder')} | {_ms(t, 'unet')} | {_ms(t, 'decoder')} | "
            f"{e2e['median_ms']:.2f} | {e2e['p90_ms']:.2f} | {r['images_per_second']:.1f} | {e2e['floor_ms']:.3g} | "
            f"{e2e['measured_over_floor']:.3g} | {r['first_call_s']:.1f} | {mem} | {err} | {'yes' if p['pass'] else '**no**'} |"
        )
    runtime = [r for r in report["cases"] if r["status"] == "ok" and "end_to_end_float" in r["timings"]]
    if runtime:
        lines += ["", "Runtime rows: e2e above is generate()'s uint8 images on the host; beside it, float images, and prompts found in the cache:", ""]
        lines += ["| case | decoder | batch | e2e uint8 ms | e2e float ms | e2e cached prompts ms | uint8 = to_uint8(float) | peak GiB, generate() only |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in runtime:
            t, peak = r["timings"], r.get("peak_gib_generate_only")
            lines.append(f"| {r['case']} | {r['decoder']} | {r['batch']} | {_ms(t, 'end_to_end')} | {_ms(t, 'end_to_end_float')} | "
                         f"{_ms(t, 'end_to_end_cached_prompts')} | {r.get('uint8_matches_float')} | {'—' if peak is None else f'{peak:.2f}'} |")  # fmt: skip
    return "\n".join(lines)


def _err255(p: dict[str, Any] | None) -> str:
    if p is None:
        return "— (compile_graph not run)"
    return "—" if p["max_abs_err_01"] is None else f"{p['max_abs_err_01'] * 255:.3f}{'' if p['pass'] else ' (over)'}"


def format_fp8(cases: list[dict[str, Any]]) -> list[str]:
    """The fp8 rows beside compile_graph's of the same decoder and batch: what FP8 bought and cost."""
    rows = [r for r in cases if r["case"] in FP8_ROWS.values() and r["status"] == "ok"]
    if not rows:
        return []
    base = {(r["decoder"], r["batch"]): r["timings"] for r in cases if r["case"] == "compile_graph" and r["status"] == "ok"}
    lines = ["", "FP8 beside compile_graph (ms medians; errors ×255 on [0, 1] images, '(over)': past the tolerance):", "",
             "| row | decoder | batch | Linear in FP8 | their share of UNet FLOPs | UNet ms (compile_graph) | e2e ms (compile_graph) | err vs fp32 | err vs compile_graph |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        f, t, b = r["fp8"], r["timings"], base.get((r["decoder"], r["batch"]))
        was = {k: f" ({b[k]['median_ms']:.2f})" if b else "" for k in ("unet", "end_to_end")}
        lines.append(f"| {r['case']} | {r['decoder']} | {r['batch']} | {f['linear_quantised']} of {f['linear_total']} | {f['linear_share_of_unet_flops']:.1%} | "
                     f"{t['unet']['median_ms']:.2f}{was['unet']} | {t['end_to_end']['median_ms']:.2f}{was['end_to_end']} | "
                     f"{_err255(r['parity'])} | {_err255(r['vs_compile_graph'])} |")  # fmt: skip
    return lines


def format_toy_quality(toy: dict[str, Any] | None) -> list[str]:
    """--toy-quality's rows: the toy student's scores with only its UNet's precision changed."""
    if not toy:
        return []
    if "rows" not in toy:
        return ["", f"Toy quality: {toy.get('status')}: {toy.get('reason')}"]
    lines = ["", f"Toy quality ({toy['student']}, {toy['images']} images, seed {toy['seed']}; only the UNet's precision changes):", "",
             "| UNet | alignment | FD | max abs diff vs fp32 /255 | mean abs diff vs fp32 /255 |", "|---|---|---|---|---|"]  # fmt: skip
    for r in toy["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['unet']} | {r['status']}: {r['reason']} | | | |")
            continue
        lines.append(f"| {r['unet']} | {r['alignment']:.4f} | {r['fd']:.2f} | {r.get('max_abs_diff_vs_fp32_uint8', '—')} | {r.get('mean_abs_diff_vs_fp32_uint8', '—')} |")
    return lines


def format_profiles(cases: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in cases:
        p = r.get("profile")
        if r["status"] != "ok" or not p:
            continue
        busy = "—" if p["device_busy_ms_per_call"] is None else f"{p['device_busy_ms_per_call']:.2f}"
        lines += ["", f"Profile of generate(), {r['case']} {r['decoder']} b{r['batch']}: {p['wall_ms_per_call']:.2f} ms per call under the profiler, device busy {busy} ms"]
        for where in ("host", "device"):
            top = ", ".join(f"{e['name']} {e['ms_per_call']:.3f} ms ×{e['calls']}" for e in p[f"top_{where}"][:6])
            if top:
                lines.append(f"  top {where}: {top}")
    return lines

