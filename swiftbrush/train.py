"""SwiftBrush distillation: a multi-step teacher becomes a one-step student, no images.

    swiftbrush distill --teacher toy --prompts toy --out out/toy
    swiftbrush distill --teacher stabilityai/stable-diffusion-2-1-base --prompts prompts.txt \
        --out out/sd21 --mixed-precision bf16 --gradient-checkpointing
    accelerate launch --num_processes 8 -m swiftbrush.cli distill ...     # DDP, same flags
    swiftbrush distill ... --out out/sd21 --resume                          # after a kill

Three UNets take part and two are in memory: the student (a full trainable copy of
the teacher UNet) and the teacher UNet carrying peft LoRA adapters, which is the
frozen teacher with its adapters disabled and the LoRA teacher with them enabled.
Each step runs `student_step()` (variational score distillation) and then
`lora_step()` (the LoRA teacher learns the student's current distribution). The
accelerate order follows diffusers' training examples: Accelerator -> models ->
EMA -> save/load hooks -> optimisers -> data -> prepare -> resume -> loop.

Run folder (`--out`):

    run.json                      teacher, prompts and config of the run
    checkpoints/checkpoint-<N>/   student/, lora_teacher/, student_ema/, optimizer_*.safetensors,
                                  trainer_state.json (step, data position, config); no RNG
                                  state is needed: randomness derives from (seed, step, rank)
    logs/train.jsonl              one line per logged step; logs/loss_curve.png
    samples/step-<N>.png          the EMA student on the first prompts, at each checkpoint
    cache/text-embeddings-*/      the prompts' text embeddings (safetensors)
    student/                      the finished student (see swiftbrush/student.py)

For teachers too large for DDP on one GPU each, run the same command under an
accelerate FSDP config (`accelerate config`, FSDP with SHARDED_STATE_DICT and
`fsdp_use_orig_params: true` so peft's frozen and trainable parameters can share
a shard); checkpoints then go through accelerate's FSDP state-dict path (its
optimiser files are torch pickles, read back with weights_only). FSDP needs GPUs:
accelerate 1.15 refuses it on CPU processes, so this path has not run on the
CPU-only machines this was written on (the CLI says so in one line).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from swiftbrush.config import STUDENT_TIMESTEP, DistillConfig
from swiftbrush.errors import InvalidArgumentError, SwiftBrushError
from swiftbrush.launch import lone_accelerate_cpu_rank
from swiftbrush.losses import cfg, lora_denoising_loss, output_to_eps, output_to_x0, sds_loss, vsd_loss
from swiftbrush.optim_state import load_optimizer_state, save_optimizer_state
from swiftbrush_runtime.commands import prepare_out_dir
from swiftbrush_runtime.errors import first_line

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
SCALER_FILE = "grad_scaler.json"  # fp16 loss scale, only with --mixed-precision fp16 on CUDA
RUN_FILE = "run.json"


class TrainingDivergedError(SwiftBrushError):
    """Too many consecutive steps with non-finite losses or gradients."""


# ------------------------------------------------------------------ the step


class VSDTrainer:
    """The SwiftBrush update: one student step (VSD) then one LoRA-teacher step.

    Holds no files and loads nothing, so the real-size benchmark and the tests
    build it from in-memory models. `lora_unet` is the teacher UNet with peft LoRA
    adapters (absent for the SDS ablation); `student` a trainable copy of the
    teacher UNet. Both may be accelerate-wrapped (DDP); no-grad teacher calls go to
    the unwrapped module so they do not touch DDP's gradient hooks. `prediction_type`
    is the teacher's ("epsilon" or "v_prediction"): every output is turned into eps
    (and the student's into x0) before the losses, which are written in eps.
    """

    def __init__(self, config: DistillConfig, accelerator: Any, student: Any, lora_unet: Any, opt_student: Any, opt_lora: Any,
                 ema: Any, alphas_cumprod: torch.Tensor, empty_emb: torch.Tensor, prediction_type: str = "epsilon") -> None:  # fmt: skip
        self.config = config
        self.accelerator = accelerator
        self.student = student
        self.lora_unet = lora_unet
        self.opt_student = opt_student
        self.opt_lora = opt_lora
        self.ema = ema
        self.alphas = alphas_cumprod.to(accelerator.device, torch.float32)
        self.empty = empty_emb.to(accelerator.device)
        self.prediction_type = prediction_type
        # No-grad teacher calls bypass DDP; unwrapped once (unwrap_model walks the module tree: ~3% of a toy step).
        self.teacher = accelerator.unwrap_model(lora_unet)

    def predict_eps(self, unet: Any, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
        """Every teacher call of the method: eps, classifier-free guided when scale != 1 (one batched call)."""
        if scale == 1.0:
            out = unet(latents, t, cond).sample.float()
        else:
            out_uncond, out_cond = unet(torch.cat([latents, latents]), torch.cat([t, t]), torch.cat([uncond, cond])).sample.float().chunk(2)
            out = cfg(out_uncond, out_cond, scale)
        return output_to_eps(out, latents.float(), self.alphas[t], self.prediction_type)

    def _randn(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(self.accelerator.device)

    def _randint(self, low: int, high: int, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(low, high + 1, (n,), generator=gen).to(self.accelerator.device)

    def _noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas[t]
        return a.sqrt().view(-1, 1, 1, 1) * x0 + (1 - a).sqrt().view(-1, 1, 1, 1) * noise, a

    def student_step(self, cond: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float], bool]:
        c = self.config
        b = cond.shape[0]
        shape = (b, self.teacher.config.in_channels, self.teacher.config.sample_size, self.teacher.config.sample_size)
        uncond = self.empty.expand(b, -1, -1).to(cond.dtype)
        # 1. The student maps pure noise z at T to eps (or v), hence to x0 (one UNet call).
        z = self._randn(shape, gen)
        big_t = torch.full((b,), STUDENT_TIMESTEP, device=z.device, dtype=torch.long)
        with self.accelerator.autocast():
            out_student = self.student(z, big_t, cond).sample
        x0 = output_to_x0(out_student.float(), z, self.alphas[big_t], self.prediction_type)
        # 2. Diffuse x0 to a random t in [t_min, t_max].
        t = self._randint(c.t_min, c.t_max, b, gen)
        noise = self._randn(shape, gen)
        x_t, a_t = self._noisy(x0.detach(), noise, t)
        # 3. Frozen teacher (adapters off) and LoRA teacher (adapters on), both guided; no graph.
        with torch.no_grad(), self.accelerator.autocast():
            teacher = self.teacher
            if c.sds:
                eps_teacher = self.predict_eps(teacher, x_t, t, cond, uncond, c.guidance_scale)
            else:
                teacher.disable_adapters()
                eps_teacher = self.predict_eps(teacher, x_t, t, cond, uncond, c.guidance_scale)
                teacher.enable_adapters()
                eps_lora = self.predict_eps(teacher, x_t, t, cond, uncond, c.lora_guidance_scale)
        # 4. VSD: x0 is pulled along w(t) (eps_teacher - eps_lora); SDS uses the noise instead.
        if c.sds:
            loss, logs = sds_loss(x0, eps_teacher, noise, a_t)
        else:
            loss, logs = vsd_loss(x0, eps_teacher, eps_lora, a_t)
        ok = self._update(loss, self.student, self.opt_student)
        if ok and self.ema is not None:
            self.ema.step(self.accelerator.unwrap_model(self.student).parameters())
        return x0.detach(), logs, ok

    def lora_step(self, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> tuple[dict[str, float], bool]:
        c = self.config
        b = x0.shape[0]
        # 5. The LoRA teacher learns to denoise the student's samples: eps loss weighted by a_t,
        #    t over the whole schedule, the empty prompt for the whole batch some of the time.
        t = self._randint(0, 999, b, gen)
        noise = self._randn(tuple(x0.shape), gen)
        x_t, a_t = self._noisy(x0, noise, t)
        if torch.rand((), generator=gen).item() < c.empty_prompt_prob:
            cond = self.empty.expand(b, -1, -1).to(cond.dtype)
        with self.accelerator.autocast():
            pred = self.lora_unet(x_t, t, cond).sample
        loss, logs = lora_denoising_loss(output_to_eps(pred.float(), x_t, a_t, self.prediction_type), noise, a_t)
        return logs, self._update(loss, self.lora_unet, self.opt_lora)

    def _update(self, loss: torch.Tensor, model: Any, optimizer: Any) -> bool:
        """Backward, clip, step; a non-finite gradient norm (the same on every rank) skips the step."""
        self.accelerator.backward(loss)
        params = [p for p in model.parameters() if p.requires_grad]
        norm = self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        ok = bool(torch.isfinite(torch.as_tensor(norm)).item()) and bool(torch.isfinite(loss.detach()).item())
        if ok:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return ok

    def train_step(self, cond: torch.Tensor, gen: torch.Generator) -> tuple[dict[str, float], bool]:
        self.student.train()
        x0, logs, ok = self.student_step(cond, gen)
        if not self.config.sds:
            for _ in range(self.config.lora_updates):  # the LoRA teacher must keep up with the student
                lora_logs, lora_ok = self.lora_step(x0, cond, gen)
                logs.update(lora_logs)
                ok = ok and lora_ok
        return logs, ok


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """All randomness of one step on one rank, derived from (seed, step, rank): resumes reproduce it exactly."""
    digest = hashlib.sha256(f"swiftbrush:{seed}:{step}:{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class PromptOrder:
    """Which prompts each rank reads at each step: epoch-wise shuffles, the global batch split by rank.

    A pure function of the step, so the data position of a checkpoint is just
    `step * global_batch` and a resume continues exactly where the run stopped.
    """

    def __init__(self, count: int, batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.count, self.batch_size, self.world_size, self.rank, self.seed = count, batch_size, world_size, rank, seed
        self._perm: dict[int, np.ndarray] = {}

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def position(self, step: int) -> int:
        return step * self.global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.count)}
        return self._perm[epoch]

    def indices(self, step: int) -> list[int]:
        start = self.position(step) + self.rank * self.batch_size
        out = []
        for p in range(start, start + self.batch_size):
            out.append(int(self._permutation(p // self.count)[p % self.count]))
        return out


# ------------------------------------------------------------------ the run


# What a run folder holds (paths relative to it); --overwrite replaces a folder only if it holds nothing else.
RUN_FILES = re.compile(
    r"run\.json|run\.tmp|\.shared-check-[^/]+"
    r"|checkpoints/(\.tmp-)?checkpoint-\d+/.+"
    r"|logs/(train\.jsonl|loss_curve\.png)"
    r"|samples/step-\d+\.png"
    r"|cache/text-embeddings-[^/]+/[^/]+"
    r"|student/.+|\.student\.(tmp|old)-[^/]+/.+"
)


def recognise_run(root: Path) -> str | None:
    """None if `root` is a distill run folder (a run.json and only a run's files), else why not."""
    if not (root / RUN_FILE).is_file():
        return f"it has no {RUN_FILE}"
    rel = recognise_run_files(root)
    return None if rel is None else f"it holds {rel}, which is not part of a run"


def recognise_run_files(root: Path) -> str | None:
    """The first file under root that no run writes (None if all are a run's: a killed run's leftovers)."""
    from swiftbrush_runtime.manifest import unlisted_file

    return unlisted_file(root, (), lambda rel: bool(RUN_FILES.fullmatch(rel)))


def run_inputs(teacher: str, prompts: str, student_init: str | None) -> list[tuple[str, str | None]]:
    """The local paths a run reads (the built-in 'toy' names and hub ids are not folders of the user's)."""
    return [("--teacher", None if str(teacher) in ("toy", "toy-teacher") else teacher),
            ("--prompts", None if str(prompts) == "toy" else prompts), ("--student-init", student_init)]  # fmt: skip


def check_run_dir(out: Path | str, resume: bool, overwrite: bool, inputs: Iterable[tuple[str, Any]] = ()) -> Path:
    """The out-folder contract for a run; returns the resolved folder. Called before any model loads.

    --resume needs a run there; --overwrite replaces only a run folder (run.json and a
    run's own files); otherwise --out must be new or empty. It may never be, hold or lie
    inside the teacher, the prompts file or the student-init folder.
    """
    from swiftbrush_runtime.manifest import OutputKind, check_out_dir, check_not_input, resolve_out

    if resume and overwrite:
        raise InvalidArgumentError("--resume and --overwrite contradict each other; pass one")
    target = resolve_out(out)
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file; pass a directory")
    if not resume:
        check_not_input(out, inputs)
        if not overwrite and target.is_dir() and any(target.iterdir()) and recognise_run(target) is None:
            raise InvalidArgumentError(f"--out {out} holds an earlier run; pass --resume to continue it or --overwrite to start over, or name a new folder")
        return check_out_dir(out, overwrite, kind=OutputKind("distill run folder", recognise_run), inputs=inputs)
    check_not_input(out, inputs)
    if not target.is_dir() or not (target / RUN_FILE).is_file() and latest_checkpoint(target) is None:
        raise InvalidArgumentError(f"--resume: {out} holds no run to continue (no {RUN_FILE}, no checkpoint); check the path, or drop --resume to start a new run")
    return target


def recorded_config(out: Path) -> dict[str, Any] | None:
    """The config of the run in `out` (its newest checkpoint's, else run.json's); None if there is none.

    `--resume` starts from it, so a flag not given keeps the run's value (a 5-step run stays 5 steps).
    """
    ckpt = latest_checkpoint(Path(out))
    path = ckpt / STATE_FILE if ckpt is not None else Path(out) / RUN_FILE
    try:
        config = json.loads(path.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def check_out_is_shared(accelerator: Any, out: Path) -> None:
    """Refuse a multi-machine run whose --out is not one folder that every rank sees.

    Only the main process writes checkpoints, the prompt cache and the student; a rank that
    cannot read them would resume from nothing and train apart from the others.
    """
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list

    name = [f".shared-check-{os.getpid()}-{time.time_ns()}" if accelerator.is_main_process else None]
    broadcast_object_list(name)
    marker = out / str(name[0])
    if accelerator.is_main_process:
        marker.write_text("")
    accelerator.wait_for_everyone()
    sees = torch.tensor([float(marker.is_file())], device=accelerator.device)
    blind = (accelerator.gather(sees) == 0).nonzero().flatten().tolist()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    if blind:
        raise InvalidArgumentError(
            f"--out {out} is not the same folder on every machine (rank(s) {', '.join(map(str, blind))} cannot see the main "
            "process's files); put it on a filesystem all machines share (NFS, Lustre, a mounted bucket)"
        )


def latest_checkpoint(out: Path) -> Path | None:
    """The newest finished checkpoint (temporary ones are never named checkpoint-<N>)."""
    root = out / "checkpoints"
    found = []
    for p in root.glob(f"{CHECKPOINT_PREFIX}*") if root.is_dir() else []:
        suffix = p.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (p / STATE_FILE).is_file():
            found.append((int(suffix), p))
    return max(found)[1] if found else None


def teacher_fingerprint(teacher: Any) -> str:
    """The teacher's identity: UNet and scheduler configs and the sizes of its weight files."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(teacher.unet.config), sort_keys=True, default=str).encode())
    h.update(json.dumps(dict(teacher.scheduler.config), sort_keys=True, default=str).encode())
    for f in sorted(Path(teacher.path).glob("*/*.safetensors")):
        h.update(f"{f.parent.name}/{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def check_resume(state: dict[str, Any], config: DistillConfig, teacher_id: str, prompts_digest: str, world_size: int, ckpt: Path) -> None:
    """Refuse a checkpoint made from another teacher, prompt set, config or process count."""
    if state.get("teacher_fingerprint") != teacher_id:
        raise InvalidArgumentError(f"{ckpt} was trained from teacher {state.get('teacher')!r}, not this one; resume with the same --teacher or start a new --out")
    if state.get("prompts_digest") != prompts_digest:
        raise InvalidArgumentError(f"{ckpt} was trained on other prompts ({state.get('prompts')!r}); resume with the same --prompts or start a new --out")
    if state.get("config_fingerprint") != config.fingerprint():
        old = state.get("config", {})
        new = config.to_dict()
        diff = [k for k in new if k not in DistillConfig.RESUMABLE_CHANGES and old.get(k) != new[k]]
        detail = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in diff) or "config changed"
        raise InvalidArgumentError(f"{ckpt} was trained with another config ({detail}); resume with the same flags or start a new --out")
    if state.get("world_size") != world_size:
        raise InvalidArgumentError(f"{ckpt} was trained on {state.get('world_size')} process(es), this run has {world_size}; resume with the same number of processes")


def distill(teacher_source: str, prompts_source: str, out: str | Path, config: DistillConfig, resume: bool = False,
            overwrite: bool = False, student_dir: str | Path | None = None) -> Path:  # fmt: skip
    """Run (or resume) a distillation and write the student (default `out/student`); returns its path.

    `overwrite` on an earlier run trains the new one in a hidden sibling, `.OUT.overwrite`,
    and swaps it in only once its student is written: until then OUT keeps the previous
    run whole (its student usable, its checkpoints resumable), and a failed or
    interrupted --overwrite leaves it so (a killed one leaves the sibling, which the next
    --overwrite clears). Building in place instead would mix the new run's checkpoints
    with the old ones, which a --resume could then pick up. A failed start leaves no
    empty folder behind.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from swiftbrush.prompts import load_prompts
    from swiftbrush_runtime.manifest import remove_if_empty, swap_in

    config.validate()
    target = check_run_dir(out, resume, overwrite, run_inputs(teacher_source, prompts_source, config.student_init))
    prompt_set = load_prompts(prompts_source)  # a bad prompts file fails before any model loads
    replacing = overwrite and target.is_dir() and any(target.iterdir())
    run_dir = target.parent / f".{target.name}.overwrite" if replacing else target
    if replacing and run_dir.exists() and (foreign := recognise_run_files(run_dir)) is not None:  # cleared below only if a killed run left it
        raise InvalidArgumentError(f"--overwrite trains in {run_dir}, which holds {foreign}; move it away and retry")

    # 1. Accelerator.
    # Several processes on a machine without CUDA (torchrun, `accelerate launch --multi_gpu`) train on
    # CPU with gloo; accelerate only picks that when told the run is a CPU run.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_gpu = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()  # torch < 2.6: CUDA
    if config.mixed_precision == "fp16" and (cpu or not has_gpu):
        # accelerate runs no fp16 autocast on CPU, so the fp16 teacher would meet the fp32 student's activations
        raise InvalidArgumentError("--mixed-precision fp16 needs a GPU (no fp16 autocast on CPU); on CPU use bf16 or no")
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu, project_config=ProjectConfiguration(project_dir=str(run_dir)))
    except (RuntimeError, ValueError) as e:  # the launch's accelerate config does not fit this machine
        hint = " accelerate's FSDP needs GPUs (it refuses a CPU run); use DDP (--multi_gpu) here." if os.environ.get("ACCELERATE_USE_FSDP") == "true" and not has_gpu else ""
        raise InvalidArgumentError(f"accelerate cannot set up this launch ({first_line(e).rstrip('.')}).{hint} Check the config with `accelerate env`.") from None
    main = accelerator.is_main_process
    if replacing and main:
        shutil.rmtree(run_dir, ignore_errors=True)  # left by a killed --overwrite: never a finished run
    accelerator.wait_for_everyone()
    # Created and probed once every rank has checked it (the rendezvous above), before the teacher loads.
    created = [p for p in reversed((run_dir, *run_dir.parents)) if not p.exists()]  # what prepare_out_dir makes, outermost first
    try:
        prepare_out_dir(run_dir, "--out")
        check_out_is_shared(accelerator, run_dir)
        logging.basicConfig(level=logging.INFO if main else logging.WARNING, format="%(message)s")
        logging.getLogger("accelerate").setLevel(logging.WARNING)
        if replacing and main:
            logger.info("--overwrite: training in %s; it replaces %s once its student is written", run_dir, out)
        student = _train(accelerator, teacher_source, prompt_set, run_dir, config, resume, student_dir)
        if replacing and main:
            swap_in(run_dir, target)
        accelerator.wait_for_everyone()
    except BaseException:
        if main:
            if replacing:
                shutil.rmtree(run_dir, ignore_errors=True)  # OUT still holds the previous run
            else:
                remove_if_empty(created)
        raise
    accelerator.end_training()
    return Path(out) / "student" if student_dir is None else student


def _train(accelerator: Any, teacher_source: str, prompt_set: Any, out: Path, config: DistillConfig, resume: bool,
           student_dir: str | Path | None) -> Path:  # fmt: skip
    """Steps 2-10 of a run in the folder `out`, which exists and which every rank sees."""
    from accelerate.utils import DistributedType, set_seed
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from swiftbrush.prompts import encode_prompts
    from swiftbrush.student import write_student
    from swiftbrush.teacher import load_student_init, load_teacher

    main = accelerator.is_main_process
    if lone_accelerate_cpu_rank():  # the CLI starts the other ranks (swiftbrush/launch.py); a script calling distill() does not
        logger.warning(
            "accelerate launch --cpu --num_processes N started one process (its launcher runs several CPU processes only "
            "through MPI, --mpirun_hostfile); training on this one. For N CPU processes use `swiftbrush distill` under it, "
            "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N` (gloo on CPU)."
        )
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)

    # 2. Models: the teacher, the student (a full copy), LoRA adapters on the teacher.
    teacher = load_teacher(teacher_source)
    teacher_id = teacher_fingerprint(teacher)
    init = load_student_init(config.student_init, teacher) if config.student_init else None
    student, teacher_unet = make_models(config, teacher.unet, weight_dtype, student_init=init)

    # 3. EMA of the student (the released weights).
    ema = EMAModel(student.parameters(), decay=config.ema_decay, use_ema_warmup=config.ema_warmup, foreach=True,
                   model_cls=UNet2DConditionModel, model_config=student.config)  # fmt: skip
    ema.to(accelerator.device)

    # 4. Checkpoint contents. Models go to safetensors folders, not accelerate's default pickles;
    # under FSDP accelerate's save_state/load_state gather and shard them through these hooks.
    def write_models(root: Path) -> None:
        accelerator.unwrap_model(student).save_pretrained(root / "student", safe_serialization=True)
        ema.save_pretrained(root / "student_ema")
        if not config.sds:
            _save_lora(accelerator.unwrap_model(teacher_unet), root / "lora_teacher")

    def read_models(root: Path) -> None:
        from safetensors.torch import load_file

        unwrapped = accelerator.unwrap_model(student)
        unwrapped.load_state_dict(load_file(root / "student" / "diffusion_pytorch_model.safetensors"))
        with _quiet_diffusers():  # EMA bookkeeping rides in the UNet config; diffusers warns about it
            loaded = EMAModel.from_pretrained(root / "student_ema", model_cls=UNet2DConditionModel)
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)
        if not config.sds:
            _load_lora(accelerator.unwrap_model(teacher_unet), root / "lora_teacher")

    def save_hook(models: list[Any], weights: list[Any], output_dir: str) -> None:
        if main:
            write_models(Path(output_dir))
        while weights:
            weights.pop()

    def load_hook(models: list[Any], input_dir: str) -> None:
        read_models(Path(input_dir))
        while models:
            models.pop()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    # 5. Optimisers: Adam, constant lr, no weight decay (SwiftBrush).
    opt_student, opt_lora = make_optimizers(config, student, teacher_unet)

    # 6. Data: text embeddings computed once (main process first, the others reuse the cache).
    with accelerator.main_process_first():
        teacher.text_encoder.to(accelerator.device)
        embeddings = encode_prompts(prompt_set, teacher.tokenizer, teacher.text_encoder, out / "cache",
                                    model_key=f"{teacher_id}:{teacher.path}", dtype=weight_dtype)  # fmt: skip
        teacher.text_encoder.to("cpu")
    if main and (prompt_set.skipped_non_utf8 or embeddings.truncated):
        logger.info("prompts: %d used, %d non-UTF-8 lines skipped, %d truncated to %d tokens",
                    len(prompt_set), prompt_set.skipped_non_utf8, embeddings.truncated, teacher.tokenizer.model_max_length)  # fmt: skip
    order = PromptOrder(len(embeddings), config.batch_size, accelerator.num_processes, accelerator.process_index, config.seed)

    # 7. prepare.
    if config.sds:
        student, opt_student = accelerator.prepare(student, opt_student)
        teacher_unet.to(accelerator.device)
    else:
        student, teacher_unet, opt_student, opt_lora = accelerator.prepare(student, teacher_unet, opt_student, opt_lora)
    trainer = VSDTrainer(config, accelerator, student, teacher_unet, opt_student, opt_lora, ema, teacher.scheduler.alphas_cumprod, embeddings.empty,
                         teacher.prediction_type)  # fmt: skip

    # 8. Resume.
    optimizers = {"optimizer_student": opt_student} if config.sds else {"optimizer_student": opt_student, "optimizer_lora": opt_lora}
    fsdp = accelerator.distributed_type == DistributedType.FSDP

    def write_state(folder: Path) -> None:
        """Models, optimisers (safetensors) and the fp16 grad scaler (JSON); accelerate's own format under FSDP."""
        if fsdp:  # sharded optimiser state needs accelerate's FSDP path (which pickles it)
            accelerator.save_state(str(folder))
        elif main:
            write_models(folder)
            for name, opt in optimizers.items():
                save_optimizer_state(opt.state_dict(), folder / f"{name}.safetensors")
            if accelerator.scaler is not None:
                _write_json(folder / SCALER_FILE, accelerator.scaler.state_dict())

    def read_state(folder: Path) -> None:
        if fsdp or not (folder / "optimizer_student.safetensors").is_file():
            accelerator.load_state(str(folder))  # FSDP, or a checkpoint written by accelerate's save_state
            return
        read_models(folder)
        for name, opt in optimizers.items():
            opt.load_state_dict(load_optimizer_state(folder / f"{name}.safetensors"))
        if accelerator.scaler is not None and (folder / SCALER_FILE).is_file():
            accelerator.scaler.load_state_dict(json.loads((folder / SCALER_FILE).read_text()))

    run_info = {
        "teacher": str(teacher_source), "teacher_path": str(teacher.path), "teacher_fingerprint": teacher_id,
        "prompts": prompt_set.source, "prompts_digest": prompt_set.digest(), "prompts_count": len(prompt_set),
        "prompts_skipped_non_utf8": prompt_set.skipped_non_utf8, "prompts_truncated": embeddings.truncated,
        "world_size": accelerator.num_processes, "config": config.to_dict(), "config_fingerprint": config.fingerprint(),
    }  # fmt: skip
    start_step, nan_total = 0, 0
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None and main:
        logger.info("--resume: no checkpoint in %s, starting from step 0", out / "checkpoints")
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        check_resume(state, config, teacher_id, prompt_set.digest(), accelerator.num_processes, ckpt)
        read_state(ckpt)
        start_step, nan_total = int(state["step"]), int(state.get("nan_steps", 0))
        if main:
            logger.info("resumed from %s (step %d)", ckpt, start_step)
    log = RunLog(out / "logs", main, truncate_after=start_step)
    if main:
        _write_json(out / RUN_FILE, run_info)
    accelerator.wait_for_everyone()

    def checkpoint(step: int) -> None:
        save_checkpoint(accelerator, out, step, write_state, {**run_info, "step": step, "data_position": order.position(step), "nan_steps": nan_total}, config.checkpoints_keep)
        if main:
            log.draw_curve()
            if config.sample_prompts:
                _sample_grid(accelerator.unwrap_model(student), ema, teacher, embeddings, prompt_set.prompts[: config.sample_prompts], config.seed,
                             out / "samples" / f"step-{step:06d}.png")  # fmt: skip

    # 9. The loop.
    nan_run = 0
    started = time.time()
    # Redrawn in place on a terminal; in a log file (make demo > log) one line every 30 s, not per step
    # (maxinterval too: tqdm's monitor thread otherwise forces a line every 10 s).
    interval = 0.1 if sys.stderr.isatty() else 30.0
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not main, desc="distill", dynamic_ncols=True,
               mininterval=interval, maxinterval=max(interval, 10.0))
    for step in range(start_step, config.max_steps):
        cond = embeddings.get(order.indices(step)).to(accelerator.device)
        logs, ok = trainer.train_step(cond, step_generator(config.seed, step, accelerator.process_index))
        if ok:
            nan_run = 0
        else:
            nan_run, nan_total = nan_run + 1, nan_total + 1
            if nan_run >= config.nan_patience:
                last = latest_checkpoint(out)
                raise TrainingDivergedError(
                    f"training diverged: {nan_run} consecutive steps with non-finite losses or gradients up to step {step + 1} "
                    f"({nan_total} skipped in all); last good checkpoint: {last or 'none'}. Lower --student-lr, prefer "
                    "--mixed-precision bf16 over fp16, or check the teacher weights"
                )
        done = step + 1
        # postfix first and without its own refresh, so the bar redraws only as often as mininterval allows
        bar.set_postfix({**{k: f"{v:.4g}" for k, v in logs.items() if k != "grad_abs"}, **({"skipped": nan_total} if nan_total else {})}, refresh=False)
        bar.update(1)
        if done % config.log_every == 0 or done == config.max_steps:
            log.write({"step": done, **{k: round(v, 6) for k, v in logs.items()}, "skipped": nan_total, "ok": ok,
                       "seconds": round(time.time() - started, 2)})  # fmt: skip
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            checkpoint(done)
    bar.close()
    if start_step >= config.max_steps and latest_checkpoint(out) is None:
        checkpoint(config.max_steps)

    # 10. The student: EMA weights, written once, by the main process; ranks must agree.
    unwrapped = accelerator.unwrap_model(student)
    ema.copy_to(unwrapped.parameters())
    fingerprint = torch.tensor([sum(p.detach().double().sum().item() for p in unwrapped.parameters())], device=accelerator.device, dtype=torch.float64)
    per_rank = accelerator.gather(fingerprint).tolist()
    student_dir = Path(student_dir) if student_dir is not None else out / "student"
    if main:
        log.write({"event": "done", "step": config.max_steps, "skipped": nan_total, "weights_fingerprint_per_rank": per_rank,
                   "seconds": round(time.time() - started, 2)})  # fmt: skip
        assert len(set(per_rank)) == 1, f"ranks disagree on the student weights: {per_rank}"
        made_from = {"teacher": str(teacher_source), "teacher_fingerprint": teacher_id, "prompts": prompt_set.source,
                     "steps": config.max_steps, "config": config.to_dict()}  # fmt: skip
        write_student(student_dir, unwrapped.float(), teacher, config.guidance_scale, made_from, overwrite=True)
        logger.info("student written to %s", student_dir)
    accelerator.wait_for_everyone()
    return student_dir


def make_models(config: DistillConfig, teacher_unet: Any, weight_dtype: torch.dtype, student_init: Any = None) -> tuple[Any, Any]:
    """The student (a full fp32 copy of the teacher UNet, or `student_init`) and the teacher UNet with LoRA adapters.

    The teacher's own weights stay frozen (in `weight_dtype` under mixed precision); the
    LoRA weights train in fp32. With `config.sds` no adapters are added.
    """
    student = (student_init if student_init is not None else copy.deepcopy(teacher_unet)).float().requires_grad_(True).train()
    teacher_unet.requires_grad_(False)
    if weight_dtype != torch.float32:
        with _quiet_diffusers():  # a UNet2DConditionModel has no modules that must stay fp32
            teacher_unet.to(weight_dtype)
    if not config.sds:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=list(config.lora_targets), init_lora_weights=True)
        teacher_unet.add_adapter(lora)
        cast_training_params(teacher_unet, dtype=torch.float32)
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()
        teacher_unet.enable_gradient_checkpointing()
    return student, teacher_unet


def make_optimizers(config: DistillConfig, student: Any, teacher_unet: Any) -> tuple[Any, Any]:
    """Adam, constant lr, no weight decay (SwiftBrush); no LoRA optimiser for SDS.

    torch's fused Adam (one kernel for all tensors, CPU and CUDA): the same update, up to float
    rounding, as the per-tensor Python loop torch picks by default on CPU (286 tensors in the toy UNet).
    """
    def adam(params: Any, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=config.adam_betas, weight_decay=config.weight_decay, fused=True)

    opt_student = adam(student.parameters(), config.student_lr)
    if config.sds:
        return opt_student, None
    return opt_student, adam([p for p in teacher_unet.parameters() if p.requires_grad], config.lora_lr)


def save_checkpoint(accelerator: Any, out: Path, step: int, write_state: Callable[[Path], None], state: dict[str, Any], keep: int) -> Path:
    """checkpoint-<step>/: `write_state` fills a temporary folder on every rank, which is then renamed (atomic)."""
    root = out / "checkpoints"
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        finished = sorted((int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.name[len(CHECKPOINT_PREFIX):].isdigit())
        for _, old in finished[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' config warnings (logged and FutureWarning) for one known-benign call."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        dlogging.set_verbosity(level)


def _save_lora(unet: Any, folder: Path) -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, str(folder / "adapter_model.safetensors"))


def _load_lora(unet: Any, folder: Path) -> None:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(unet, load_file(folder / "adapter_model.safetensors"))
    assert not getattr(result, "unexpected_keys", None), f"unexpected LoRA keys: {result.unexpected_keys[:5]}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def _sample_grid(student: Any, ema: Any, teacher: Any, embeddings: Any, prompts: Sequence[str], seed: int, path: Path) -> None:
    """The EMA student's images for the first prompts, fixed noise, as one PNG grid with each prompt under its image."""
    from swiftbrush.student import decode_to_uint8, initial_latents, one_step_x0
    from swiftbrush_runtime.images import prompt_grid

    count = len(prompts)
    size = int(student.config.sample_size)
    latents = torch.from_numpy(initial_latents(seed, count, int(student.config.in_channels), size, size))
    device = next(student.parameters()).device
    params = list(student.parameters())
    ema.store(params)
    ema.copy_to(params)
    try:
        was_training = student.training
        student.eval()
        images = []
        for i in range(0, count, 16):
            emb = embeddings.get(range(i, min(count, i + 16))).to(device)
            x0 = one_step_x0(student, latents[i : i + 16].to(device), emb, 999, float(teacher.scheduler.alphas_cumprod[999]), teacher.prediction_type)
            teacher.vae.to(device)
            images.append(decode_to_uint8(teacher.vae, x0, float(teacher.vae.config.scaling_factor)))
        student.train(was_training)
    finally:
        ema.restore(params)
    arrays = np.concatenate(images)
    grid = prompt_grid(list(arrays), list(prompts), scale=max(1, 128 // arrays.shape[1]))  # small toy images are enlarged
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


class RunLog:
    """logs/train.jsonl (main process) and the loss-curve PNG drawn from it."""

    def __init__(self, folder: Path, main: bool, truncate_after: int) -> None:
        self.folder, self.main = folder, main
        self.path = folder / "train.jsonl"
        if main:
            folder.mkdir(parents=True, exist_ok=True)
            # A resumed run rewrites the lines logged after its checkpoint.
            kept = [r for r in self.records() if "event" not in r and r.get("step", 0) <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return out

    def write(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def draw_curve(self) -> None:
        records = [r for r in self.records() if "event" not in r]
        series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                  for k in ("vsd", "sds", "lora")}  # fmt: skip
        draw_curves({k: v for k, v in series.items() if v}, self.folder / "loss_curve.png")


def draw_curves(series: dict[str, list[tuple[float, float]]], path: Path, size: tuple[int, int] = (640, 360)) -> None:
    """Loss curves with Pillow: one panel per series (each on its own log-y scale), step on x, ticks labelled on both axes."""
    from PIL import Image, ImageDraw

    colours = [(200, 40, 40), (40, 90, 200), (40, 150, 60)]
    width, height = size
    panels = max(1, len(series))
    image = Image.new("RGB", (width, height * panels), "white")
    draw = ImageDraw.Draw(image)
    for i, (name, points) in enumerate(series.items()):
        top = i * height
        left, right, bottom, upper = 70, width - 15, top + height - 40, top + 22
        xs = [p[0] for p in points]
        ys = [math.log10(max(p[1], 1e-12)) for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def px(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * (right - left)

        def py(y: float) -> float:
            return bottom - (y - y0) / (y1 - y0) * (bottom - upper)

        draw.rectangle([left, upper, right, bottom], outline=(160, 160, 160))
        draw.text((left, top + 4), f"{name} loss (log scale)", fill=(0, 0, 0))
        for x in _nice_ticks(x0, x1):
            draw.line([(px(x), bottom), (px(x), bottom + 4)], fill=(0, 0, 0))
            draw.text((px(x) - 3 * len(f"{x:g}"), bottom + 6), f"{x:g}", fill=(0, 0, 0))
        draw.text(((left + right) // 2 - 12, bottom + 20), "step", fill=(0, 0, 0))
        for k in range(5):  # evenly spaced on the log axis, labelled with the loss itself
            y = y0 + (y1 - y0) * k / 4
            draw.line([(left - 4, py(y)), (left, py(y))], fill=(0, 0, 0))
            draw.text((4, py(y) - 6), f"{10 ** y:.3g}", fill=(0, 0, 0))
        line = [(px(x), py(y)) for x, y in zip(xs, ys)]
        if len(line) > 1:
            draw.line(line, fill=colours[i % len(colours)], width=2)
        else:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colours[i % len(colours)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) between low and high."""
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]
