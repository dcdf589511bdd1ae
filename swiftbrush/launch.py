"""Make `accelerate launch --cpu --num_processes N` start N ranks.

accelerate's CPU launcher runs several processes only through MPI (`--mpirun_hostfile`
and an MPI install); without them it starts the script once and sets MASTER_ADDR, so a
user who asked for N CPU ranks silently gets one. `distill` calls
`relaunch_as_accelerate_cpu_ranks()` first: when this process is that lone rank, it
reads what the user asked for from the launcher's own command line (parsed with
accelerate's own parser) and replaces itself with torch's elastic launcher
(`torch.distributed.run`, gloo on CPU) running the same command N times. Where the
launcher's command line cannot be read (no /proc, another parent), nothing happens and
the trainer warns that it runs one process.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

RELAUNCHED = "SWIFTBRUSH_CPU_RELAUNCHED"  # set on the ranks we start, so they never relaunch again


def lone_accelerate_cpu_rank() -> bool:
    """accelerate's --cpu launcher with --num_processes > 1 sets MASTER_ADDR but starts no other rank."""
    env = os.environ
    return env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and "WORLD_SIZE" not in env and "PMI_SIZE" not in env


def accelerate_launch_args(argv: list[str]) -> Any | None:
    """The `accelerate launch` arguments in a launcher's argv (console script or `-m accelerate.commands.launch`), or None."""
    for i, token in enumerate(argv):
        if token == "accelerate.commands.launch" or (token == "launch" and i > 0 and os.path.basename(argv[i - 1]).startswith("accelerate")):
            from accelerate.commands.launch import launch_command_parser

            try:
                return launch_command_parser().parse_args(argv[i + 1 :])
            except SystemExit:  # argparse's own exit on argv it does not take
                return None
    return None


def _parent_argv() -> list[str]:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def elastic_command(launch: Any, command: list[str]) -> list[str] | None:
    """`python -m torch.distributed.run ... <command>` for the ranks `launch` asked for, or None if it asked for one."""
    machines = int(launch.num_machines or 1)
    processes = int(launch.num_processes or 1)
    if processes <= 1 or processes % machines:
        return None
    return [
        sys.executable, "-m", "torch.distributed.run", "--no-python",
        "--nnodes", str(machines), "--node-rank", str(int(launch.machine_rank or 0)),
        "--nproc-per-node", str(processes // machines),
        "--master-addr", os.environ.get("MASTER_ADDR", "127.0.0.1"), "--master-port", os.environ.get("MASTER_PORT", "29500"),
        *command,
    ]  # fmt: skip


def relaunch_as_accelerate_cpu_ranks() -> None:
    """Replace this process with N CPU ranks when it is accelerate --cpu's lone rank of N; else return."""
    if os.environ.get(RELAUNCHED) or not lone_accelerate_cpu_rank():
        return
    launch = accelerate_launch_args(_parent_argv())
    command = elastic_command(launch, [sys.executable, *sys.orig_argv[1:]]) if launch is not None else None
    if command is None:
        return
    logger.warning("accelerate launch --cpu started one process for %s; starting them with torch.distributed.run (gloo)", launch.num_processes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[RELAUNCHED] = "1"
    os.execv(sys.executable, command)
