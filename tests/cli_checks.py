"""The CLI contract the tests check everywhere: run a command in-process, and a user mistake is one line, exit 2.

A plain module (not conftest.py), imported by name like tiny_models.
"""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner


def invoke(*args: str) -> Any:
    """`swiftbrush ARGS...` in this process (click's runner: output captured, exceptions kept)."""
    from swiftbrush.cli import cli

    return CliRunner().invoke(cli, list(args))


def one_line_exit_2(result: Any) -> str:
    """Assert a refused command: exit 2 and exactly one `error: ...` line (TensorRT's own `[TRT]` log lines aside)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]
