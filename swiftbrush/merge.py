"""Weight merging of two one-step students: SwiftBrush v2's final step.

    swiftbrush merge runs/vsd/student runs/lora/student --weight 0.5 --out runs/merged

Every UNet tensor of the result is theta = w * theta_A + (1 - w) * theta_B, computed in
float32 (stored in A's dtype: float32 for every student `swiftbrush distill` writes).
Everything else (vae, text_encoder, tokenizer, scheduler, model_index.json, a taesd/ folder
when both students have one) is copied from A and must be what B holds too: two students
of one teacher differ only in their UNets. A `student_lora/` adapter is not carried over,
because the merge is of full weights. The result is a student folder like the ones distill
writes (manifest kind "student", onestep.json), so eval, export, the runtime and diffusers'
StableDiffusionPipeline load it; its manifest's made_from names both inputs and the weight.

Weights are read with safetensors one tensor at a time, so a merge holds the result and
one pair of input tensors in memory, not both students.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from swiftbrush.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.errors import first_line
from swiftbrush_runtime.manifest import MANIFEST, OutputKind, atomic_dir, check_out_dir, manifest_kind, package_versions, read_json, read_manifest, write_manifest
from swiftbrush_runtime.onestep import ONESTEP, OneStep, read_onestep, write_onestep

UNET = "unet"
NOT_COPIED = ("student_lora/",)  # a LoRA student's adapter: it describes that student's weights, not the merge's
VERSION_KEYS = ("_diffusers_version", "transformers_version", "_name_or_path")  # config keys that name the writer, not the model
SHOWN = 3  # names listed in an error about missing or extra tensors


def _recognise_merge(root: Path) -> str | None:
    """None for an earlier `swiftbrush merge` output (a student folder whose manifest records a merge), else why not."""
    reason = manifest_kind("student").recognise(root)
    if reason is not None:
        return reason
    made_from = read_json(root / MANIFEST).get("made_from")
    if not isinstance(made_from, dict) or "merge" not in made_from:
        return f"its {MANIFEST} says it is a student that `swiftbrush merge` did not write"
    return None


MERGE_OUTPUT = OutputKind("`swiftbrush merge` folder", _recognise_merge)


def check_weight(weight: float) -> float:
    """The share of student A, a finite number in [0, 1]."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        raise InvalidArgumentError(f"--weight must be a number in [0, 1] (the share of STUDENT_A), got {weight!r}")
    return float(weight)


def merge_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """{name: weight * a + (1 - weight) * b} in float32, cast back to a's dtype; the names and shapes must agree.

    `a` and `b` may be lazy mappings (tensors read on access), so only the result is held in
    full. A tensor that is not floating point (an integer buffer) must be equal in both.
    """
    weight = check_weight(weight)
    _check_names(set(a), set(b))
    merged = {}
    for name in a:
        ta, tb = a[name], b[name]
        if ta.shape != tb.shape:
            raise InvalidModelError(f"different UNet architectures: {name} has shape {tuple(ta.shape)} in A and {tuple(tb.shape)} in B")
        if not ta.is_floating_point():
            if not torch.equal(ta, tb):
                raise InvalidModelError(f"{name} is an integer tensor that differs between A and B; it cannot be averaged")
            merged[name] = ta.clone()
            continue
        merged[name] = (weight * ta.float() + (1 - weight) * tb.float()).to(ta.dtype)
    return merged


def _check_names(a: set[str], b: set[str]) -> None:
    if a != b:
        only_a, only_b = sorted(a - b), sorted(b - a)
        parts = [f"{len(names)} only in {side} ({', '.join(names[:SHOWN])}{', ...' if len(names) > SHOWN else ''})"
                 for side, names in (("A", only_a), ("B", only_b)) if names]  # fmt: skip
        raise InvalidModelError(f"different UNet architectures: the parameter names differ, {'; '.join(parts)}")


class SafetensorsWeights(Mapping[str, torch.Tensor]):
    """The tensors of one model's safetensors files, read on access; shapes from the headers alone."""

    def __init__(self, files: list[Path]) -> None:
        self._handles = {}
        for f in files:
            try:
                self._handles[f] = safe_open(str(f), framework="pt")
            except Exception as e:  # a truncated or foreign file: one line, not a traceback
                raise InvalidModelError(f"{f} is not a readable safetensors file ({first_line(e)}); rebuild the student") from None
        self._where: dict[str, Path] = {}
        for f, handle in self._handles.items():
            for name in handle.keys():
                if name in self._where:
                    raise InvalidModelError(f"{name} is in both {self._where[name].name} and {f.name}: {f.parent} holds more than one set of weights")
                self._where[name] = f

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._handles[self._where[name]].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def in_file(self, f: Path) -> list[str]:
        return [name for name, where in self._where.items() if where == f]

    def subset(self, names: list[str]) -> Mapping[str, torch.Tensor]:
        """These tensors only, still read on access."""
        return _Subset(self, names)


class _Subset(Mapping[str, torch.Tensor]):
    def __init__(self, weights: Mapping[str, torch.Tensor], names: list[str]) -> None:
        self._weights, self._names = weights, dict.fromkeys(names)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._weights[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class _Student:
    """A checked student folder: its manifest (every file's hash verified), its onestep.json and its UNet weight files."""

    def __init__(self, path: Path | str, name: str) -> None:
        self.path, self.name = Path(path), name
        self.manifest = read_manifest(self.path, "student", verify=True)
        self.onestep = read_onestep(self.path / ONESTEP)
        files = self.manifest.get("files")
        self.files: dict[str, str] = files if isinstance(files, dict) else {}
        self.weight_files = sorted(self.path / rel for rel in self.files if rel.startswith(f"{UNET}/") and rel.endswith(".safetensors"))
        if not (self.path / UNET / "config.json").is_file() or not self.weight_files:
            raise InvalidModelError(f"{name} {self.path} has no unet/config.json and safetensors weights: it is not a student folder written by `swiftbrush distill`")
        made_from = self.manifest.get("made_from")
        self.made_from: dict[str, Any] = made_from if isinstance(made_from, dict) else {}

    def teacher(self) -> str | None:
        """The teacher as recorded (made_from, else onestep.json), or None."""
        found = self.made_from.get("teacher", self.onestep.extra.get("teacher"))
        return None if found is None else str(found)

    def unet_config(self) -> dict[str, Any]:
        config = read_json(self.path / UNET / "config.json")
        if not isinstance(config, dict):
            raise InvalidModelError(f"{self.path / UNET / 'config.json'} is not a JSON object")
        return {k: v for k, v in config.items() if k not in VERSION_KEYS}


def _same_teacher(a: _Student, b: _Student) -> None:
    fa, fb = a.made_from.get("teacher_fingerprint"), b.made_from.get("teacher_fingerprint")
    if fa is not None and fb is not None:
        if fa != fb:
            raise InvalidModelError(f"STUDENT_A and STUDENT_B were distilled from different teachers ({a.teacher()} {fa}, {b.teacher()} {fb}); "
                                    "merge students of one teacher")  # fmt: skip
        return
    ta, tb = a.teacher(), b.teacher()
    if ta is None or tb is None:
        student = a if ta is None else b
        raise InvalidModelError(f"{student.name} {student.path} records no teacher; merge students written by `swiftbrush distill`")
    if ta != tb and not (Path(ta).exists() and Path(tb).exists() and Path(ta).resolve() == Path(tb).resolve()):  # one folder, named two ways
        raise InvalidModelError(f"STUDENT_A and STUDENT_B were distilled from different teachers ({ta}, {tb}); merge students of one teacher")


def _same_onestep(a: OneStep, b: OneStep) -> None:
    if a.prediction_type != b.prediction_type:
        raise InvalidModelError(f"STUDENT_A predicts {a.prediction_type} and STUDENT_B {b.prediction_type}; merge students of one prediction type")
    if a.resolution != b.resolution:
        raise InvalidModelError(f"STUDENT_A makes {a.resolution}px images and STUDENT_B {b.resolution}px; merge students of one resolution")
    for field in ("timestep", "alpha_T", "latent_channels", "vae_scale_factor", "scaling_factor"):
        if getattr(a, field) != getattr(b, field):
            raise InvalidModelError(f"{ONESTEP} differs: {field} is {getattr(a, field)} in STUDENT_A and {getattr(b, field)} in STUDENT_B; "
                                    "merge students of one teacher")  # fmt: skip


def _same_architecture(a: _Student, b: _Student, wa: SafetensorsWeights, wb: SafetensorsWeights) -> None:
    ca, cb = a.unet_config(), b.unet_config()
    if ca != cb:
        key = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))[0]
        raise InvalidModelError(f"different UNet architectures: unet/config.json's {key} is {ca.get(key)!r} in STUDENT_A and {cb.get(key)!r} in STUDENT_B")
    _check_names(set(wa), set(wb))
    for name in wa:
        if wa.shape(name) != wb.shape(name):
            raise InvalidModelError(f"different UNet architectures: {name} has shape {wa.shape(name)} in STUDENT_A and {wb.shape(name)} in STUDENT_B")


def _copied_files(a: _Student, b: _Student) -> list[str]:
    """A's files the merged folder takes as they are (all but the UNet weights, onestep.json, a LoRA adapter).

    B must hold the same ones, bar the UNet's: its config was compared with the weights'
    names and shapes, and a shard index may differ where the tensors do not.
    """
    both_taesd = any(rel.startswith("taesd/") for rel in b.files)
    copied = []
    for rel in sorted(a.files):
        if rel in (MANIFEST, ONESTEP) or rel.startswith(NOT_COPIED) or (rel.startswith(f"{UNET}/") and rel.endswith(".safetensors")):
            continue
        if rel.startswith("taesd/") and not both_taesd:
            continue
        if not rel.startswith(f"{UNET}/") and not _same_file(a.path, b.path, rel, a.files[rel], b.files.get(rel)):
            component = rel.split("/")[0] if "/" in rel else rel
            raise InvalidModelError(f"STUDENT_A and STUDENT_B differ in {rel}; students of one teacher share their {component}: merge students of one teacher")
        copied.append(rel)
    return copied


def _same_file(root_a: Path, root_b: Path, rel: str, digest_a: str, digest_b: str | None) -> bool:
    """The same content: equal hashes, or for a JSON config equal values once the writers' version fields are set aside."""
    if digest_b is None:
        return False
    if digest_a == digest_b:
        return True
    if not rel.endswith(".json"):
        return False
    ja, jb = read_json(root_a / rel), read_json(root_b / rel)
    if not isinstance(ja, dict) or not isinstance(jb, dict):
        return False
    return {k: v for k, v in ja.items() if k not in VERSION_KEYS} == {k: v for k, v in jb.items() if k not in VERSION_KEYS}


def _merged_onestep(a: OneStep, b: OneStep) -> OneStep:
    """A's one-step config; of its extra fields, the teacher and those B records alike (a guidance scale that differs is dropped)."""
    return dataclasses.replace(a, extra={k: v for k, v in a.extra.items() if k == "teacher" or b.extra.get(k) == v})


def merge_students(a: Path | str, b: Path | str, weight: float, out: Path | str, overwrite: bool = False) -> Path:
    """Write the student theta = weight * theta_A + (1 - weight) * theta_B to `out`; returns `out`.

    Every check runs before anything is written; the folder is built beside `out` and
    swapped in at the end, so an interrupted --overwrite leaves the earlier merge usable.
    """
    from swiftbrush.student import VERSIONED

    weight = check_weight(weight)
    inputs = (("STUDENT_A", a), ("STUDENT_B", b))
    check_out_dir(out, overwrite, kind=MERGE_OUTPUT, inputs=inputs)
    sa, sb = _Student(a, "STUDENT_A"), _Student(b, "STUDENT_B")
    _same_teacher(sa, sb)
    _same_onestep(sa.onestep, sb.onestep)
    wa, wb = SafetensorsWeights(sa.weight_files), SafetensorsWeights(sb.weight_files)
    _same_architecture(sa, sb, wa, wb)
    copied = _copied_files(sa, sb)
    made_from: dict[str, Any] = {"merge": {"a": str(a), "b": str(b), "weight": weight}, "teacher": sa.teacher()}
    if "teacher_fingerprint" in sa.made_from:
        made_from["teacher_fingerprint"] = sa.made_from["teacher_fingerprint"]
    with atomic_dir(out, overwrite, kind=MERGE_OUTPUT, inputs=inputs) as tmp:
        for rel in copied:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sa.path / rel, tmp / rel)
        for f in sa.weight_files:  # A's file layout (one file or shards with their index), one file's tensors at a time
            names = wa.in_file(f)
            merged = merge_state_dicts(wa.subset(names), wb.subset(names), weight)
            target = tmp / f.relative_to(sa.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_file(merged, str(target), metadata={"format": "pt"})
            del merged  # before the next file's tensors are read: one file's result in memory at a time
        onestep = write_onestep(tmp, _merged_onestep(sa.onestep, sb.onestep))
        write_manifest(tmp, "student", made_from=made_from, onestep=onestep.to_json(), versions=package_versions(VERSIONED))
    return Path(out)
