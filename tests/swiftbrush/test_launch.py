"""swiftbrush.launch: reading `accelerate launch` arguments and the torch.distributed.run command built from them."""

from __future__ import annotations

import sys

from swiftbrush.launch import accelerate_launch_args, elastic_command, lone_accelerate_cpu_rank

SCRIPT = ["-m", "swiftbrush.cli", "distill", "--teacher", "toy", "--prompts", "toy", "--out", "o"]


def test_reads_the_console_script_and_the_module_forms():
    console = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "3", *SCRIPT]
    module = ["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes=2", "--num_machines", "1", *SCRIPT]
    a, b = accelerate_launch_args(console), accelerate_launch_args(module)
    assert a.cpu and a.num_processes == 3 and a.training_script_args[:1] == ["distill"]
    assert b.cpu and b.num_processes == 2 and b.num_machines == 1


def test_other_parents_are_not_read():
    assert accelerate_launch_args(["bash", "-c", "swiftbrush distill"]) is None
    assert accelerate_launch_args(["python", "train.py", "launch", "--cpu"]) is None  # "launch" not after accelerate
    assert accelerate_launch_args([]) is None


def test_elastic_command_starts_the_asked_ranks_per_machine(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    launch = accelerate_launch_args(["accelerate", "launch", "--cpu", "--num_processes", "4", "--num_machines", "2",
                                     "--machine_rank", "1", *SCRIPT])  # fmt: skip
    cmd = elastic_command(launch, [sys.executable, *SCRIPT])
    assert cmd[:4] == [sys.executable, "-m", "torch.distributed.run", "--no-python"]
    flags = dict(zip(cmd[4:14:2], cmd[5:14:2]))
    assert flags == {"--nnodes": "2", "--node-rank": "1", "--nproc-per-node": "2", "--master-addr": "10.0.0.1", "--master-port": "29511"}
    assert cmd[14:] == [sys.executable, *SCRIPT]


def test_one_process_needs_no_relaunch():
    launch = accelerate_launch_args(["accelerate", "launch", "--cpu", "--num_processes", "1", *SCRIPT])
    assert elastic_command(launch, [sys.executable, *SCRIPT]) is None


def test_only_accelerate_cpu_lone_rank_is_detected(monkeypatch):
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not lone_accelerate_cpu_rank()
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert lone_accelerate_cpu_rank()
    monkeypatch.setenv("WORLD_SIZE", "2")  # a rank torchrun (or MPI) started
    assert not lone_accelerate_cpu_rank()
