"""What every `swiftbrush` command shares on its command line (click, torch-free).

    @click.option("--batch", type=Integer(min=1), default=1, ...)   # shown as INTEGER; a bad value is one line
    @needs_extra("train")                                           # no torch: one line naming the extra
    probe_output_file(json_path, "--json")                          # before the work, not after it

Bad values raise the project's typed errors, which the group turns into one line
and exit status 2, the same as a bad value found later by the command itself.
"""

from __future__ import annotations

import functools
import json
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from swiftbrush_runtime.errors import InvalidArgumentError, SwiftBrushError
from swiftbrush_runtime.manifest import atomic_write

F = TypeVar("F", bound=Callable[..., Any])

# What each extra installs that its commands import (top-level module names): an import of one
# that fails mid-command is named with its extra. CORE_MODULES are looked up before the command starts.
EXTRA_MODULES = {
    "train": ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "scipy", "tqdm"),
    "export": ("onnx", "optimum", "onnxslim", "onnxconverter_common", "onnxruntime"),
}
CORE_MODULES = {"train": ("torch", "diffusers", "transformers"), "export": ("onnx", "optimum")}


class MissingExtraError(SwiftBrushError):
    """A command whose optional dependencies are not installed (the base install is the slim runtime)."""


def flag_name(param: click.Parameter | None) -> str:
    """The option as the user typed it, e.g. --batch."""
    if param is None:
        return "value"
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return opts[0] if opts else str(param.name)


class Integer(click.ParamType):
    """An integer option: INTEGER in --help, and a bad value as the project's one-line error."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise InvalidArgumentError(f"{flag_name(param)} must be an integer, got {value!r}") from None
        low = self.min is not None and number < self.min
        high = self.max is not None and number > self.max
        if low or high:
            bounds = f">= {self.min}" if self.max is None else f"<= {self.max}" if self.min is None else f"in {self.min}..{self.max}"
            raise InvalidArgumentError(f"{flag_name(param)} must be an integer {bounds}, got {number}")
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "INTEGER"

    def __repr__(self) -> str:
        return "INTEGER"


def probe_output_file(path: Path | str, flag: str) -> Path:
    """Check that `path` can be written (its folder made, a file created there) before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise InvalidArgumentError(f"{flag} {path} is a directory; pass a file name")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"{flag} {path} is not writable: {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied")
            if not _is_json_report(path):  # never replace a file the command did not write
                raise InvalidArgumentError(f"{flag} {path} exists and is not a JSON report; choose a new file name (an earlier report is replaced)")
        else:
            tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe-", delete=True).close()
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {path} is not writable ({e.strerror or e}); choose another path") from None
    return path


def _missing_module(error: ModuleNotFoundError) -> str:
    return (error.name or "").split(".")[0]


def needs_extra(*extras: str) -> Callable[[F], F]:
    """Turn a missing dependency of `extras` into one line naming the pip install to run, checked before the command starts."""
    modules = {m for extra in extras for m in EXTRA_MODULES[extra]}
    core = [m for extra in extras for m in CORE_MODULES[extra]]
    install = f"pip install 'swiftbrush[{','.join(extras)}]'"

    def refuse(name: str) -> MissingExtraError:
        ctx = click.get_current_context(silent=True)
        what = ctx.command_path if ctx is not None else "this command"
        return MissingExtraError(f"{what} needs {'the ' + extras[0] + ' extra' if len(extras) == 1 else 'these extras'} ({name} is not installed): {install}")

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            missing = next((m for m in core if importlib.util.find_spec(m) is None), None)
            if missing is not None:
                raise refuse(missing)
            try:
                return fn(*args, **kwargs)
            except ModuleNotFoundError as e:
                name = _missing_module(e)
                if name not in modules:
                    raise
                raise refuse(name) from None

        return command  # type: ignore[return-value]

    return wrap


def _is_json_report(path: Path) -> bool:
    """A file a --json flag wrote: a JSON object (a user's text, image or list is none)."""
    try:
        return path.stat().st_size < (64 << 20) and isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def write_text_output(path: Path | str, text: str) -> None:
    """Write a --json report to `path` (atomically), or print it when `path` is '-'."""
    if str(path) == "-":
        click.echo(text)
    else:
        atomic_write(Path(path), text if text.endswith("\n") else text + "\n")
