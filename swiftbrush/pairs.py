"""The teacher's own ODE pairs: seeded noise -> its N-step sample, for an image-free warm start.

    swiftbrush pairs --teacher toy --prompts toy --per-prompt 100 --out out/pairs
    accelerate launch --num_processes 8 -m swiftbrush.cli pairs ...     # shards split across ranks
    swiftbrush distill ... --regression-pairs out/pairs --regression-steps 1500

A teacher with no one-step model to start from (the toy, a custom SD fine-tune) still
gives the student a start near itself: regress the student's one call on (noise, prompt)
onto the teacher's deterministic DDIM sample from that noise (Luhman & Luhman; DMD's
regression data). No training images: the pairs are the teacher's own.

This module owns the pairs folder:

    pairs.json          the plan: teacher (and fingerprint), prompts, sampler, seed, shard size; written first
    prompts.json        the prompt texts (pair i uses prompts[prompt[i]])
    shard-<K>.safetensors   z, x0 (float32, the teacher's latents in UNet space), prompt (int64); atomic
    manifest.json       kind "pairs", written last, once every shard exists: a folder without it is unfinished

Pair i is prompt i // per_prompt; shard K holds pairs [K * shard_size, (K + 1) * shard_size) and its
noise comes from a generator seeded by (seed, K), so the pairs do not depend on how many ranks
sampled them or how often the command was interrupted. A rerun with the same arguments
finishes an unfinished folder (complete shards are kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from swiftbrush.errors import InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.manifest import MANIFEST, OutputKind, atomic_write, read_json, read_manifest, resolve_out, check_not_input, swap_in, write_manifest

logger = logging.getLogger(__name__)

PLAN = "pairs.json"
PROMPTS = "prompts.json"
KIND = "pairs"
FORMAT = "swiftbrush-pairs/1"
SCHEDULER = "ddim-trailing"  # DDIM with trailing spacing, eta 0: deterministic, so (z, prompt) -> x0 is a function
DEFAULT_SHARD_SIZE = 256


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def shard_generator_seed(seed: int, shard: int) -> int:
    digest = hashlib.sha256(f"swiftbrush-pairs:{seed}:{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class PairsPlan:
    """What a pairs folder holds and how it was sampled (pairs.json)."""

    teacher: str
    teacher_fingerprint: str
    prompts_source: str
    prompts_digest: str
    prompts_count: int
    per_prompt: int
    steps: int
    guidance_scale: float
    seed: int
    shard_size: int
    latent_shape: tuple[int, int, int]

    @property
    def count(self) -> int:
        return self.prompts_count * self.per_prompt

    @property
    def shards(self) -> int:
        return math.ceil(self.count / self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.count))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "scheduler": SCHEDULER, "teacher": self.teacher, "teacher_fingerprint": self.teacher_fingerprint,
                "prompts": self.prompts_source, "prompts_digest": self.prompts_digest, "prompts_count": self.prompts_count,
                "per_prompt": self.per_prompt, "count": self.count, "steps": self.steps, "guidance_scale": self.guidance_scale,
                "seed": self.seed, "shard_size": self.shard_size, "shards": self.shards, "latent_shape": list(self.latent_shape)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, where: Path) -> "PairsPlan":
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            return cls(str(data["teacher"]), str(data["teacher_fingerprint"]), str(data["prompts"]), str(data["prompts_digest"]),
                       int(data["prompts_count"]), int(data["per_prompt"]), int(data["steps"]), float(data["guidance_scale"]),
                       int(data["seed"]), int(data["shard_size"]), tuple(int(v) for v in data["latent_shape"]))  # fmt: skip
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InvalidModelError(f"{where} is not a pairs plan written by `swiftbrush pairs` ({e})") from None

    def differences(self, other: "PairsPlan") -> list[str]:
        mine, theirs = self.to_json(), other.to_json()
        return [f"{k} {theirs[k]!r} (this command: {mine[k]!r})" for k in mine if mine[k] != theirs[k]]


# ------------------------------------------------------------------ reading


class Pairs:
    """A finished pairs folder: `batch(indices)` -> (z, x0, prompt indices), read lazily shard by shard."""

    def __init__(self, folder: Path, plan: PairsPlan, prompts: list[str]) -> None:
        from safetensors import safe_open

        self.folder, self.plan, self.prompts = folder, plan, prompts
        self._handles = [safe_open(str(folder / shard_name(k)), framework="pt") for k in range(plan.shards)]

    def __len__(self) -> int:
        return self.plan.count

    def batch(self, indices: Sequence[int]) -> tuple[Any, Any, Any]:
        import torch

        rows: dict[str, list[Any]] = {"z": [], "x0": [], "prompt": []}
        for i in indices:
            k, j = divmod(int(i), self.plan.shard_size)
            for name in rows:
                rows[name].append(self._handles[k].get_slice(name)[j : j + 1])
        return torch.cat(rows["z"]), torch.cat(rows["x0"]), torch.cat(rows["prompt"])


def read_plan(folder: Path) -> PairsPlan:
    return PairsPlan.from_json(read_json(Path(folder) / PLAN, missing=f"{folder} is not a pairs folder (no {PLAN}); make one with `swiftbrush pairs`"), folder / PLAN)


def read_pairs(folder: str | Path, teacher_fingerprint: str | None = None, verify: bool = True) -> Pairs:
    """A finished pairs folder, checked: its manifest (hashes with `verify`), plan, prompts, and its teacher.

    An unfinished folder, one sampled from another teacher, or one whose files changed is refused in one line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgumentError(f"--regression-pairs {folder} does not exist; make it with `swiftbrush pairs`")
    plan = read_plan(folder)
    if not (folder / MANIFEST).is_file():
        done = sum((folder / shard_name(k)).is_file() for k in range(plan.shards))
        raise InvalidModelError(f"pairs folder {folder} is unfinished ({done} of {plan.shards} shards); rerun `swiftbrush pairs` with the same arguments to finish it")
    read_manifest(folder, KIND, verify=verify)
    if teacher_fingerprint is not None and plan.teacher_fingerprint != teacher_fingerprint:
        raise InvalidModelError(f"pairs folder {folder} was sampled from another teacher ({plan.teacher}, fingerprint {plan.teacher_fingerprint}); sample pairs from this teacher")
    prompts = read_json(folder / PROMPTS)
    if not isinstance(prompts, list) or len(prompts) != plan.prompts_count or not all(isinstance(p, str) for p in prompts):
        raise InvalidModelError(f"{folder / PROMPTS} does not hold the plan's {plan.prompts_count} prompts; rebuild the pairs folder")
    return Pairs(folder, plan, prompts)


def recognise_pairs(root: Path) -> str | None:
    """None for an earlier (finished or unfinished) pairs output: only a plan, prompts, shards, a manifest."""
    if not (root / PLAN).is_file():
        return f"it has no {PLAN}"
    allowed = {PLAN, PROMPTS, MANIFEST}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if not (rel in allowed or (p.parent == root and p.name.startswith("shard-") and p.suffix == ".safetensors")):
            return f"it holds {rel}, which `swiftbrush pairs` does not write"
    return None


PAIRS_OUTPUT = OutputKind("pairs folder", recognise_pairs)


# ------------------------------------------------------------------ sampling


def sample_pairs(teacher_source: str, prompts_source: str, out: str | Path, per_prompt: int = 1, steps: int = 25,
                 guidance_scale: float | None = None, seed: int = 0, shard_size: int = DEFAULT_SHARD_SIZE,
                 batch_size: int = 64, overwrite: bool = False, progress: bool = True) -> Path:  # fmt: skip
    """Sample (or finish sampling) the teacher's pairs into `out`; every accelerate rank takes every N-th shard.

    `out` is new or empty, or an unfinished pairs folder with the same plan (finished here);
    a finished one is replaced only with `overwrite`, and stays whole until the new one is complete.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from swiftbrush.evaluate import default_guidance_scale
    from swiftbrush.prompts import load_prompts
    from swiftbrush.teacher import load_teacher, teacher_fingerprint

    for name, value, low in (("--per-prompt", per_prompt, 1), ("--steps", steps, 1), ("--shard-size", shard_size, 1), ("--batch-size", batch_size, 1)):
        if value < low:
            raise InvalidArgumentError(f"{name} must be >= {low}, got {value}")
    if steps > 1000:
        raise InvalidArgumentError(f"--steps must be <= 1000, got {steps}")
    scale = default_guidance_scale(teacher_source) if guidance_scale is None else float(guidance_scale)
    if not 1.0 <= scale < math.inf:
        raise InvalidArgumentError(f"--guidance-scale must be a finite number >= 1, got {scale}")
    target = resolve_out(out)
    check_not_input(target, [(flag, p) for flag, p in (("--teacher", teacher_source), ("--prompts", prompts_source)) if Path(p).exists()])
    prompt_set = load_prompts(prompts_source)
    state = PartialState()
    teacher = load_teacher(teacher_source, device=str(state.device))
    unet = teacher.unet.config
    plan = PairsPlan(str(teacher_source), teacher_fingerprint(teacher), prompt_set.source, prompt_set.digest(), len(prompt_set), per_prompt,
                     steps, scale, seed, shard_size, (int(unet.in_channels), int(unet.sample_size), int(unet.sample_size)))  # fmt: skip
    work = _work_folder(target, plan, overwrite, state.is_main_process)
    if state.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        if not (work / PLAN).is_file():
            atomic_write(work / PROMPTS, json.dumps(prompt_set.prompts, ensure_ascii=False) + "\n")
            atomic_write(work / PLAN, json.dumps(plan.to_json(), indent=2) + "\n")  # after the prompts: a plan means both are there
    state.wait_for_everyone()

    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    pipe = teacher.pipeline(DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    mine = [k for k in range(plan.shards) if k % state.num_processes == state.process_index and not (work / shard_name(k)).is_file()]
    todo = sum(len(plan.shard_range(k)) for k in mine)
    with tqdm(total=todo, desc=f"pairs ({steps} teacher steps each)", unit="pair", file=sys.stderr, disable=not (progress and state.is_main_process)) as bar:
        for k in mine:
            idx = plan.shard_range(k)
            z = torch.randn(len(idx), *plan.latent_shape, generator=torch.Generator().manual_seed(shard_generator_seed(seed, k)))
            prompt_ids = torch.tensor([i // per_prompt for i in idx], dtype=torch.long)
            xs = []
            for b in range(0, len(idx), batch_size):
                texts = [prompt_set.prompts[int(i)] for i in prompt_ids[b : b + batch_size]]
                with torch.no_grad():
                    x0 = pipe(prompt=texts, latents=z[b : b + batch_size].to(state.device, teacher.unet.dtype), num_inference_steps=steps,
                              guidance_scale=scale, output_type="latent").images  # fmt: skip
                xs.append(x0.float().cpu())
                bar.update(len(texts))
            tensors = {"z": z.contiguous(), "x0": torch.cat(xs).contiguous(), "prompt": prompt_ids}
            atomic_write(work / shard_name(k), lambda tmp: save_file(tensors, str(tmp)))
    state.wait_for_everyone()
    if state.is_main_process:
        missing = [shard_name(k) for k in range(plan.shards) if not (work / shard_name(k)).is_file()]
        if missing:  # a rank failed: keep what is there for the rerun
            raise InvalidModelError(f"{len(missing)} shard(s) of {work} were not written (first: {missing[0]}); rerun the same command to finish")
        write_manifest(work, KIND, plan=PLAN)
        if work != target:
            swap_in(work, target)
    state.wait_for_everyone()
    return target


def _work_folder(target: Path, plan: PairsPlan, overwrite: bool, main: bool) -> Path:
    """Where to sample: `target` itself (new, empty or unfinished with this plan), or a hidden sibling for --overwrite."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return target
    if not target.is_dir():
        raise InvalidArgumentError(f"--out {target} is a file; pass a folder")
    foreign = recognise_pairs(target)
    if foreign is not None:
        raise InvalidArgumentError(f"--out {target} is not empty and not a pairs folder ({foreign}); choose a new folder")
    finished = (target / MANIFEST).is_file()
    if finished and not overwrite:
        raise InvalidArgumentError(f"--out {target} already holds finished pairs; pass --overwrite to replace them or choose a new folder")
    if not finished:
        recorded = read_plan(target)
        differ = plan.differences(recorded)
        if differ:
            raise InvalidArgumentError(f"--out {target} holds unfinished pairs of another plan ({differ[0]}); rerun with its arguments or choose a new folder")
        return target
    sibling = target.parent / f".{target.name}.overwrite"
    if sibling.exists():
        if recognise_pairs(sibling) is not None and any(sibling.iterdir()):
            raise InvalidArgumentError(f"--overwrite samples in {sibling}, which holds other files; move it away and retry")
        if main and (sibling / PLAN).is_file() and plan.differences(read_plan(sibling)):
            shutil.rmtree(sibling)  # an interrupted --overwrite of another plan
    return sibling
