"""Capacity probe: can the toy UNet map noise to the teacher's image in ONE call?

    python benchmarks/toy_regression_probe.py [--pairs-per-caption 100] [--steps 1500] [--lr 1e-4] [--out out/regression_probe]

Not SwiftBrush: a diagnostic for it. The teacher (25 DDIM steps, trailing spacing, the toy
CFG) turns seeded noise into latents for every toy caption; a copy of the teacher UNet is
then regressed onto those (noise, prompt) -> x0 pairs in one call at t = 999 (MSE on x0,
Adam, clip 1.0, EMA 0.99 with warm-up; every 10th pair held out), and scored like the
VSD students (3 sampling seeds, 288 images each). No training images: the pairs are the
teacher's own samples (DMD's regression data). If this student reaches the teacher's
quality, the toy UNet has the capacity for one-step generation and the VSD student's FD
gap lies in the objective. About 10 min of teacher sampling and 8 min of training on 2
cores at the defaults. Needs a finished student folder only for its non-UNet files
(`--student`, default out/demo/student from `make demo`).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from swiftbrush.evaluate import evaluate_model
from swiftbrush.student import one_step_x0
from swiftbrush.teacher import load_teacher
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.models import TOY_GUIDANCE_SCALE


def teacher_pairs(per_caption: int, path: Path) -> dict[str, torch.Tensor]:
    """(z, x0, cond) for every caption `per_caption` times, cached in `path` (safetensors)."""
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file, save_file

    if not path.exists():
        teacher = load_teacher("toy")
        pipe = teacher.pipeline(DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing"))
        pipe.set_progress_bar_config(disable=True)
        prompts = [c.text for c in all_captions() for _ in range(per_caption)]
        z = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(1234))
        xs, cs = [], []
        for i in range(0, len(prompts), 144):
            batch = prompts[i : i + 144]
            with torch.no_grad():
                cond, _ = pipe.encode_prompt(batch, "cpu", 1, False)
                x = pipe(prompt=batch, latents=z[i : i + 144].clone(), num_inference_steps=25,
                         guidance_scale=TOY_GUIDANCE_SCALE, output_type="latent").images  # fmt: skip
            xs.append(x)
            cs.append(cond)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"z": z, "x0": torch.cat(xs).contiguous(), "cond": torch.cat(cs).contiguous()}, str(path))
    return load_file(str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs-per-caption", type=int, default=100)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--student", type=Path, default=Path("out/demo/student"))
    p.add_argument("--out", type=Path, default=Path("out/regression_probe"))
    args = p.parse_args()
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    started = time.time()
    pairs = teacher_pairs(args.pairs_per_caption, args.out / f"pairs-{args.pairs_per_caption}.safetensors")
    print(f"pairs: {len(pairs['z'])} in {time.time() - started:.0f} s", flush=True)
    z, x0, cond = pairs["z"], pairs["x0"], pairs["cond"]
    held = torch.arange(len(z)) % 10 == 0
    train_idx, held_idx = (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)

    teacher = load_teacher("toy")
    alpha_T = float(teacher.scheduler.alphas_cumprod[999])
    student = copy.deepcopy(teacher.unet).train().requires_grad_(True)
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    ema = EMAModel(student.parameters(), decay=0.99, use_ema_warmup=True)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        return one_step_x0(student, z[idx], cond[idx], 999, alpha_T)

    gen = torch.Generator().manual_seed(0)
    started = time.time()
    for step in range(args.steps):
        idx = train_idx[torch.randint(0, len(train_idx), (32,), generator=gen)]
        loss = F.mse_loss(predict(idx), x0[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        ema.step(student.parameters())
        if step % 100 == 0 or step == args.steps - 1:
            with torch.no_grad():
                held_mse = F.mse_loss(predict(held_idx[:128]), x0[held_idx[:128]]).item()
            print(f"step {step}: train MSE {loss.item():.4f}, held-out {held_mse:.4f} ({time.time() - started:.0f} s)", flush=True)
    ema.copy_to(student.parameters())
    with torch.no_grad():
        held_mse = F.mse_loss(predict(held_idx), x0[held_idx]).item()

    folder = args.out / "student"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(args.student, folder)
    student.save_pretrained(folder / "unet", safe_serialization=True)
    scores = [evaluate_model(str(folder), per_caption=8, seed=s) for s in (0, 1, 2)]
    row = {"held_out_mse_ema": held_mse, "x0_variance": x0[held_idx].var().item(),
           "alignment": [s["alignment"] for s in scores], "fd": [s["fd"] for s in scores]}  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    main()
