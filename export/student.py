"""Read and check a student directory, the input of `swiftbrush export onnx`.

    swiftbrush export onnx --student out/student --out out/onnx

A student directory is a diffusers StableDiffusionPipeline folder (safetensors
only) plus `onestep.json` (timestep, alpha_T, prediction type, resolution, VAE
scaling) and a `manifest.json` of kind "student". Everything is checked from the
JSON files before any weights are read; torch and diffusers load inside
`load_student` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftbrush_runtime.errors import InvalidModelError, first_line
from swiftbrush_runtime.manifest import MANIFEST, read_manifest, sha256_file
from swiftbrush_runtime.onestep import COMPONENTS, ONESTEP, OneStep, load_student_modules, read_onestep


@dataclass
class StudentInfo:
    """What a checked student directory holds, before any weights are loaded."""

    path: Path
    onestep: OneStep
    manifest: dict[str, Any]
    manifest_sha256: str  # identifies the exact student an export came from


def check_student_dir(path: Path | str, verify: bool = True) -> StudentInfo:
    """Refuse anything that is not a finished, unchanged student directory."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidModelError(f"--student {path} does not exist or is not a directory")
    if not (path / "model_index.json").is_file():
        raise InvalidModelError(f"{path} is not a student directory (no model_index.json); pass the --out of `swiftbrush distill`")
    manifest = read_manifest(path, "student", verify=verify)
    onestep = read_onestep(path / ONESTEP)
    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise InvalidModelError(f"{path} lacks the component folder(s) {', '.join(missing)}")
    if not (path / "tokenizer" / "tokenizer.json").is_file():
        raise InvalidModelError(f"{path}/tokenizer has no tokenizer.json (the fast-tokenizer file the runtime reads); re-save the student's tokenizer with CLIPTokenizerFast")
    pickles = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt", ".pkl"))
    if pickles:
        raise InvalidModelError(f"{path} holds pickle weights ({', '.join(pickles[:3])}); only safetensors students are loaded")
    return StudentInfo(path, onestep, manifest, sha256_file(path / MANIFEST))


@dataclass
class Student:
    """A loaded student: torch modules in fp32 eval mode on CPU, plus its one-step config."""

    info: StudentInfo
    pipeline: Any  # diffusers StableDiffusionPipeline

    @property
    def onestep(self) -> OneStep:
        return self.info.onestep


def load_student(path: Path | str, verify: bool = True) -> Student:
    """Check, then load the student pipeline from safetensors (fp32, CPU, eval)."""
    info = check_student_dir(path, verify=verify)
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # a second of "Loading pipeline components" bar says nothing to an exporter
    try:
        modules = load_student_modules(info.path, torch.float32)
        pipe = StableDiffusionPipeline.from_pretrained(
            info.path, **modules, use_safetensors=True, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    except Exception as e:  # truncated or mismatched weights: one line, not a traceback
        raise InvalidModelError(f"student weights in {info.path} do not load ({first_line(e)}); re-run `swiftbrush distill` or re-copy the directory") from None
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()
    return Student(info, pipe)
