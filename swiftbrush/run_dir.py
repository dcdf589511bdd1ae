"""The out-folder contract of `swiftbrush distill`: what a run folder is, which --out a run may use.

    swiftbrush distill ... --out out/run              # new or empty
    swiftbrush distill ... --out out/run --resume     # a run folder: continue it
    swiftbrush distill ... --out out/run --overwrite  # a run folder: replace it

Checked before any model loads. A run folder holds run.json and only a run's own files
(see swiftbrush/train.py for its layout), so --overwrite never replaces a user's folder.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

from swiftbrush.checkpoints import STATE_FILE, latest_checkpoint
from swiftbrush.errors import InvalidArgumentError
from swiftbrush.teacher import TOY_NAMES, TOY_WARM_START

RUN_FILE = "run.json"

# What a run folder holds (paths relative to it); --overwrite replaces a folder only if it holds nothing else.
RUN_FILES = re.compile(
    r"run\.json|\.run\.json\.tmp-\d+|\.shared-check-[^/]+"
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




def run_inputs(teacher: str, prompts: str, student_init: str | None, **more: str | None) -> list[tuple[str, str | None]]:
    """The local paths a run reads (the built-in toy names and hub ids are not folders of the user's).

    `more` names further inputs by config field (regression_pairs="...", clip_model=...).
    """
    def local(value: str | None) -> str | None:
        return None if value is None or str(value) in (*TOY_NAMES, TOY_WARM_START) or not Path(str(value)).exists() else value

    return [("--teacher", local(teacher)), ("--prompts", None if str(prompts) == "toy" else prompts), ("--student-init", local(student_init)),
            *((f"--{name.replace('_', '-')}", local(value)) for name, value in more.items())]  # fmt: skip


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
    import torch
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
