"""SwiftBrush distillation: a multi-step teacher becomes a one-step student, no images.

    swiftbrush distill --teacher toy --prompts toy --out out/toy
    swiftbrush distill --teacher stabilityai/stable-diffusion-2-1-base --prompts prompts.txt \
        --out out/sd21 --mixed-precision bf16 --gradient-checkpointing
    accelerate launch --num_processes 8 -m swiftbrush.cli distill ...     # DDP, same flags
    swiftbrush distill ... --out out/sd21 --resume                          # after a kill

Three UNets take part and two are in memory: the student (a full trainable copy of
the teacher UNet; with --student-lora-rank a frozen copy that trains LoRA adapters of
its own, swiftbrush/lora_student.py) and the teacher UNet carrying peft LoRA adapters,
which is the frozen teacher with its adapters disabled and the LoRA teacher with them
enabled.
Each step runs `student_step()` (variational score distillation) and then
`lora_step()` (the LoRA teacher learns the student's current distribution). Three
stages may come first or join it, each off by default: `--regression-steps` regress the
student onto the teacher's own pairs (`swiftbrush pairs`, an image-free warm start;
`--regression-weight` keeps that term beside VSD later), `--lora-warmup-steps` let only
the LoRA teacher learn, and SwiftBrush v2's clamped CLIP loss (`--clip-weight`) joins the
student's loss. `--recipe swiftbrush-v2` (swiftbrush/config.py) sets v2's values. The
accelerate order follows diffusers' training examples: Accelerator -> models ->
EMA -> save/load hooks -> optimisers -> data -> prepare -> resume -> loop.
Checkpoint I/O lives in swiftbrush/checkpoints.py, the out-folder contract in
swiftbrush/run_dir.py, logs, the loss curve and sample grids in swiftbrush/runlog.py.

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
a shard); checkpoints then go through accelerate's FSDP state-dict path (the same
folders; its optimiser files are torch pickles, read back with weights_only). FSDP
needs GPUs (accelerate refuses it on CPU processes, and the CLI says so in one line),
so the CPU test suite does not run this path.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swiftbrush.checkpoints import Checkpointer, check_resume, latest_checkpoint, read_trainer_state, write_json
from swiftbrush.config import DistillConfig
from swiftbrush_runtime.onestep import STUDENT_TIMESTEP
from swiftbrush.errors import InvalidArgumentError, SwiftBrushError
from swiftbrush.launch import lone_accelerate_cpu_rank
from swiftbrush.losses import cfg, clamped_clip_loss, clip_loss_weight, lora_denoising_loss, output_to_eps, output_to_x0, regression_loss, sds_loss, vsd_loss
from swiftbrush.run_dir import RUN_FILE, check_out_is_shared, check_run_dir, recognise_run_files, run_inputs
from swiftbrush.teacher import teacher_fingerprint
from swiftbrush.runlog import RunLog, progress_bar, quiet_diffusers, show_step, write_sample_grid
from swiftbrush_runtime.commands import prepare_out_dir
from swiftbrush_runtime.errors import first_line

logger = logging.getLogger(__name__)


class TrainingDivergedError(SwiftBrushError):
    """Too many consecutive steps with non-finite losses or gradients."""


# ------------------------------------------------------------------ the step


class VSDTrainer:
    """The SwiftBrush update: one student step (VSD, plus v2's CLIP term and DMD's regression
    term when configured) then `lora_updates` LoRA-teacher steps; and the warm-start steps.

    Holds no files and loads nothing, so the real-size benchmark and the tests
    build it from in-memory models. `lora_unet` is the teacher UNet with peft LoRA
    adapters (absent for the SDS ablation); `student` a trainable copy of the
    teacher UNet. Both may be accelerate-wrapped (DDP); no-grad teacher calls go to
    the unwrapped module so they do not touch DDP's gradient hooks. `prediction_type`
    is the teacher's ("epsilon" or "v_prediction"): every output is turned into eps
    (and the student's into x0) before the losses, which are written in eps.
    """

    def __init__(self, config: DistillConfig, accelerator: Any, student: Any, lora_unet: Any, opt_student: Any, opt_lora: Any,
                 ema: Any, alphas_cumprod: torch.Tensor, empty_emb: torch.Tensor, prediction_type: str = "epsilon",
                 clip: Any = None, pairs: Any = None, pair_embeddings: Any = None) -> None:  # fmt: skip
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
        self.clip = clip  # ClipGuidance (frozen CLIP + tiny decoder) for the clamped CLIP loss, or None
        self.pairs, self.pair_embeddings = pairs, pair_embeddings  # the teacher's (noise, prompt) -> x0 pairs, or None
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

    def student_x0(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The student's one call at T on noise z, its eps (or v) mapped to x0 (float32, with graph)."""
        big_t = torch.full((z.shape[0],), STUDENT_TIMESTEP, device=z.device, dtype=torch.long)
        with self.accelerator.autocast():
            out_student = self.student(z, big_t, cond).sample
        return output_to_x0(out_student.float(), z, self.alphas[big_t], self.prediction_type)

    def regression_batch(self, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """b random teacher pairs: noise, the teacher's x0 from it, and the pair's prompt embedding."""
        idx = torch.randint(0, len(self.pairs), (b,), generator=gen).tolist()
        z, x0, prompt = self.pairs.batch(idx)
        cond = self.pair_embeddings.get(prompt.tolist())
        dev = self.accelerator.device
        return z.to(dev), x0.to(dev), cond.to(dev, self.empty.dtype)

    def regression_step(self, b: int, gen: torch.Generator) -> tuple[dict[str, float], bool]:
        """A warm-start step: the student's one call regressed onto the teacher's own sample (no VSD, no LoRA update)."""
        self.student.train()
        z, target, cond = self.regression_batch(b, gen)
        loss, logs = regression_loss(self.student_x0(z, cond), target)
        ok = self._update(loss, self.student, self.opt_student)
        if ok and self.ema is not None:
            self.ema.step(self.accelerator.unwrap_model(self.student).parameters())
        return logs, ok

    def student_step(self, cond: torch.Tensor, gen: torch.Generator, clip_weight: float = 0.0,
                     texts: list[str] | None = None) -> tuple[torch.Tensor, dict[str, float], bool]:  # fmt: skip
        c = self.config
        b = cond.shape[0]
        shape = (b, self.teacher.config.in_channels, self.teacher.config.sample_size, self.teacher.config.sample_size)
        uncond = self.empty.expand(b, -1, -1).to(cond.dtype)
        # 1. The student maps pure noise z at T to eps (or v), hence to x0 (one UNet call). With the
        #    regression term, the teacher pairs' noises ride in the same call (one forward for DDP).
        z = self._randn(shape, gen)
        regress = self.pairs is not None and c.regression_weight > 0
        if regress:
            z_pairs, x0_teacher, cond_pairs = self.regression_batch(b, gen)
            x0, x0_pairs = self.student_x0(torch.cat([z, z_pairs]), torch.cat([cond, cond_pairs])).split([b, b])
        else:
            x0 = self.student_x0(z, cond)
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
        # 5. SwiftBrush v2's clamped CLIP loss on the decoded x0, and DMD's regression term.
        if self.clip is not None and clip_weight > 0 and texts is not None:
            text_emb, _ = self.clip.encode_prompts(texts)
            clip_loss, clip_logs = clamped_clip_loss(self.clip.image_embeddings(x0), text_emb.to(x0.device), c.clip_tau)
            loss = loss + clip_weight * clip_loss
            logs.update(clip_logs)
        if regress:
            reg_loss, reg_logs = regression_loss(x0_pairs, x0_teacher)
            loss = loss + c.regression_weight * reg_loss
            logs.update(reg_logs)
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

    def lora_warmup_step(self, cond: torch.Tensor, gen: torch.Generator) -> tuple[dict[str, float], bool]:
        """Only the LoRA teacher learns, on the student's current samples: from a good start (a
        one-step model), VSD's first steps would otherwise pull the student along a LoRA teacher
        that still scores the frozen teacher's distribution, not the student's."""
        b = cond.shape[0]
        shape = (b, self.teacher.config.in_channels, self.teacher.config.sample_size, self.teacher.config.sample_size)
        with torch.no_grad():
            x0 = self.student_x0(self._randn(shape, gen), cond)
        logs: dict[str, float] = {}
        ok = True
        for _ in range(self.config.lora_updates):
            lora_logs, lora_ok = self.lora_step(x0, cond, gen)
            logs.update(lora_logs)
            ok = ok and lora_ok
        return logs, ok

    def train_step(self, cond: torch.Tensor, gen: torch.Generator, clip_weight: float = 0.0,
                   texts: list[str] | None = None) -> tuple[dict[str, float], bool]:  # fmt: skip
        self.student.train()
        x0, logs, ok = self.student_step(cond, gen, clip_weight, texts)
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
    target = check_run_dir(out, resume, overwrite, run_inputs(teacher_source, prompts_source, config.student_init, regression_pairs=config.regression_pairs,
                                                       clip_model=config.clip_model, clip_decoder=config.clip_decoder))
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
    from accelerate.utils import set_seed

    from swiftbrush.lora_student import StudentAdapter, is_lora_student, merge_adapter
    from swiftbrush.prompts import encode_prompts
    from swiftbrush.student import write_student
    from swiftbrush_runtime.prompts import PromptSet
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
    clip, pairs = load_extras(config, accelerator, teacher_id, prompt_set)  # checked before anything is written
    student, teacher_unet = make_models(config, teacher.unet, weight_dtype, student_init=init)

    # 3. EMA of the student (the released weights).
    ema = make_ema(config, student)
    ema.to(accelerator.device)

    # 4. Checkpoints: models to safetensors folders, also through accelerate's save/load hooks.
    checkpointer = Checkpointer(accelerator, student, None if config.sds else teacher_unet, ema)

    # 5. Optimisers: Adam, constant lr, no weight decay (SwiftBrush).
    opt_student, opt_lora = make_optimizers(config, student, teacher_unet)

    # 6. Data: text embeddings computed once (main process first, the others reuse the cache).
    #    The teacher pairs' prompts (regression) are embedded the same way, in the same pass.
    pair_embeddings = None
    with accelerator.main_process_first():
        teacher.text_encoder.to(accelerator.device)
        embeddings = encode_prompts(prompt_set, teacher.tokenizer, teacher.text_encoder, out / "cache",
                                    model_key=f"{teacher_id}:{teacher.path}", dtype=weight_dtype)  # fmt: skip
        if pairs is not None:
            pair_embeddings = encode_prompts(PromptSet(pairs.prompts, f"pairs:{config.regression_pairs}"), teacher.tokenizer, teacher.text_encoder,
                                             out / "cache", model_key=f"{teacher_id}:{teacher.path}", dtype=weight_dtype)  # fmt: skip
        teacher.text_encoder.to("cpu")
    if main and (prompt_set.skipped_non_utf8 or embeddings.truncated):
        logger.info("prompts: %d used, %d non-UTF-8 lines skipped, %d truncated to %d tokens",
                    len(prompt_set), prompt_set.skipped_non_utf8, embeddings.truncated, teacher.tokenizer.model_max_length)  # fmt: skip
    order = PromptOrder(len(embeddings), config.batch_size, accelerator.num_processes, accelerator.process_index, config.seed)

    # 7. prepare.
    if config.sds:
        student, opt_student = accelerator.prepare(student, opt_student)
        teacher_unet.to(accelerator.device)
        checkpointer.optimizers = {"optimizer_student": opt_student}
    else:
        student, teacher_unet, opt_student, opt_lora = accelerator.prepare(student, teacher_unet, opt_student, opt_lora)
        checkpointer.optimizers = {"optimizer_student": opt_student, "optimizer_lora": opt_lora}
    trainer = VSDTrainer(config, accelerator, student, teacher_unet, opt_student, opt_lora, ema, teacher.scheduler.alphas_cumprod, embeddings.empty,
                         teacher.prediction_type, clip=clip, pairs=pairs, pair_embeddings=pair_embeddings)  # fmt: skip

    # 8. Resume.
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
        state = read_trainer_state(ckpt)
        check_resume(state, config, teacher_id, prompt_set.digest(), accelerator.num_processes, ckpt)
        checkpointer.load(ckpt)
        start_step, nan_total = int(state["step"]), int(state.get("nan_steps", 0))
        if main:
            logger.info("resumed from %s (step %d)", ckpt, start_step)
    log = RunLog(out / "logs", main, truncate_after=start_step)
    if main:
        write_json(out / RUN_FILE, run_info)
    accelerator.wait_for_everyone()

    # 9. The loop.
    nan_run = 0
    started = time.time()
    bar = progress_bar(config.max_steps, start_step, main)
    for step in range(start_step, config.max_steps):
        gen = step_generator(config.seed, step, accelerator.process_index)
        if step < config.regression_steps:  # the warm-start stage
            logs, ok = trainer.regression_step(config.batch_size, gen)
        else:
            indices = order.indices(step)
            cond = embeddings.get(indices).to(accelerator.device)
            if step < config.regression_steps + config.lora_warmup_steps:
                logs, ok = trainer.lora_warmup_step(cond, gen)
            else:
                texts = [prompt_set.prompts[i] for i in indices] if clip is not None else None
                logs, ok = trainer.train_step(cond, gen, clip_loss_weight(step, config.max_steps, config.clip_weight), texts)
        if ok:
            nan_run = 0
        else:
            nan_run, nan_total = nan_run + 1, nan_total + 1
            if nan_run >= config.nan_patience:
                raise TrainingDivergedError(
                    f"training diverged: {nan_run} consecutive steps with non-finite losses or gradients up to step {step + 1} "
                    f"({nan_total} skipped in all); last good checkpoint: {latest_checkpoint(out) or 'none'}. Lower --student-lr, "
                    "prefer --mixed-precision bf16 over fp16, or check the teacher weights"
                )
        done = step + 1
        show_step(bar, logs, nan_total)
        if done % config.log_every == 0 or done == config.max_steps:
            log.write({"step": done, **{k: round(v, 6) for k, v in logs.items()}, "skipped": nan_total, "ok": ok,
                       "seconds": round(time.time() - started, 2)})  # fmt: skip
        if done % config.checkpoint_every == 0 or done == config.max_steps:
            state = {**run_info, "step": done, "data_position": order.position(done), "nan_steps": nan_total}
            checkpointer.save(out, done, state, config.checkpoints_keep)
            if main:
                log.draw_curve()
                if config.sample_prompts:
                    write_sample_grid(accelerator.unwrap_model(student), ema, teacher, embeddings, prompt_set.prompts[: config.sample_prompts],
                                      config.seed, out / "samples" / f"step-{done:06d}.png")  # fmt: skip
    bar.close()

    # 10. The student: EMA weights, written once, by the main process; ranks must agree.
    unwrapped = accelerator.unwrap_model(student)
    ema.copy_to(unwrapped.parameters())
    weight_sum = torch.tensor([sum(p.detach().double().sum().item() for p in unwrapped.parameters())], device=accelerator.device, dtype=torch.float64)
    per_rank = accelerator.gather(weight_sum).tolist()
    student_dir = Path(student_dir) if student_dir is not None else out / "student"
    if main:
        log.write({"event": "done", "step": config.max_steps, "skipped": nan_total, "weights_fingerprint_per_rank": per_rank,
                   "seconds": round(time.time() - started, 2)})  # fmt: skip
        assert len(set(per_rank)) == 1, f"ranks disagree on the student weights: {per_rank}"
        made_from = {"teacher": str(teacher_source), "teacher_fingerprint": teacher_id, "prompts": prompt_set.source,
                     "steps": config.max_steps, "config": config.to_dict()}  # fmt: skip
        # A LoRA student's folder holds the merged weights in unet/ and the adapter in student_lora/.
        adapter = StudentAdapter.from_unet(unwrapped, base=config.student_init or str(teacher_source)) if is_lora_student(unwrapped) else None
        unet = merge_adapter(unwrapped) if adapter is not None else unwrapped
        write_student(student_dir, unet.float(), teacher, config.guidance_scale, made_from, overwrite=True, adapter=adapter)
        logger.info("student written to %s", student_dir)
    accelerator.wait_for_everyone()
    return student_dir


def load_extras(config: DistillConfig, accelerator: Any, teacher_id: str, prompt_set: Any) -> tuple[Any, Any]:
    """SwiftBrush v2's CLIP (with its tiny decoder) and the teacher's pairs, where the config asks for them."""
    clip = pairs = None
    if config.clip_weight > 0:
        from swiftbrush.clip_guidance import ClipGuidance

        clip = ClipGuidance.load(str(config.clip_model), str(config.clip_decoder), device=accelerator.device)
        truncated = clip.count_truncated(prompt_set.prompts)
        if truncated and accelerator.is_main_process:
            logger.info("CLIP loss: %d of %d prompts are longer than the CLIP tokenizer's limit and are truncated", truncated, len(prompt_set))
    if config.regression_pairs and (config.regression_steps > 0 or config.regression_weight > 0):
        from swiftbrush.pairs import read_pairs

        pairs = read_pairs(config.regression_pairs, teacher_fingerprint=teacher_id, verify=accelerator.is_main_process)
    return clip, pairs


def make_models(config: DistillConfig, teacher_unet: Any, weight_dtype: torch.dtype, student_init: Any = None) -> tuple[Any, Any]:
    """The student (a full fp32 copy of the teacher UNet, or `student_init`) and the teacher UNet with LoRA adapters.

    The teacher's own weights stay frozen (in `weight_dtype` under mixed precision); the
    LoRA weights train in fp32. With `config.sds` no adapters are added to the teacher. With
    `config.student_lora_rank` the student is frozen too, in fp32 (its finished weights are
    base + adapter merged), and trains a LoRA adapter of its own (swiftbrush/lora_student.py).
    """
    student = (student_init if student_init is not None else copy.deepcopy(teacher_unet)).float().requires_grad_(True).train()
    if config.student_lora_rank:
        from swiftbrush.lora_student import add_student_adapter

        add_student_adapter(student, config)
    teacher_unet.requires_grad_(False)
    if weight_dtype != torch.float32:
        with quiet_diffusers():  # a UNet2DConditionModel has no modules that must stay fp32
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


def make_ema(config: DistillConfig, student: Any) -> Any:
    """The student's EMA (diffusers' EMAModel): of every weight of a full student, of the adapter of a LoRA student."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    if config.student_lora_rank:
        from swiftbrush.lora_student import AdapterEMA

        return AdapterEMA(student, decay=config.ema_decay, use_ema_warmup=config.ema_warmup, foreach=True)
    return EMAModel(student.parameters(), decay=config.ema_decay, use_ema_warmup=config.ema_warmup, foreach=True,
                    model_cls=UNet2DConditionModel, model_config=student.config)  # fmt: skip


def make_optimizers(config: DistillConfig, student: Any, teacher_unet: Any) -> tuple[Any, Any]:
    """Adam, constant lr, no weight decay (SwiftBrush; SwiftBrush v2: AdamW); no LoRA optimiser for SDS.

    torch's fused Adam (one kernel for all tensors, CPU and CUDA): the same update, up to float
    rounding, as the per-tensor Python loop torch picks by default on CPU (286 tensors in the toy UNet).
    """
    def adam(params: Any, lr: float) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return kind(params, lr=lr, betas=config.adam_betas, weight_decay=config.weight_decay, fused=True)

    opt_student = adam([p for p in student.parameters() if p.requires_grad], config.student_lr)  # a LoRA student's adapter only
    if config.sds:
        return opt_student, None
    return opt_student, adam([p for p in teacher_unet.parameters() if p.requires_grad], config.lora_lr)
