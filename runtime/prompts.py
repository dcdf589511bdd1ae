"""The one prompt-file reader of every command (torch-free).

    swiftbrush generate --prompts prompts.txt ...     # one prompt per line
    swiftbrush distill  --prompts prompts.jsonl ...   # {"prompt": ...} or {"caption": ...} per line
    swiftbrush distill  --prompts prompts.json ...    # a list of strings or of such objects
    cat prompts.txt | swiftbrush generate --prompts - ...   # stdin, one prompt per line

The rules, the same for every command and format (RULES is what --help shows):
UTF-8, a leading byte-order mark ignored; each prompt is stripped of surrounding
whitespace; blank prompts (empty lines) are skipped, so a blank line never becomes
an unconditional image or training prompt (`generate --prompt ""` asks for one);
a line that is not UTF-8 is skipped with a warning; a file with NUL bytes is not
text and is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from swiftbrush_runtime.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

RULES = (
    "one prompt per line (or .json: a list; .jsonl: one object per line, with a 'prompt' or 'caption' field); "
    "'-' reads stdin; UTF-8; blank lines are skipped"
)
FIELDS = ("prompt", "caption")
MAX_BYTES = 1 << 30
STDIN = "-"


@dataclass
class PromptSet:
    """The prompts read from one source and what was dropped while reading them."""

    prompts: list[str]
    source: str
    skipped_non_utf8: int = 0  # lines that were not valid UTF-8
    skipped_blank: int = 0  # empty or whitespace-only prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()


def read_prompts(source: str | Path, flag: str = "--prompts", stdin: BinaryIO | None = None) -> PromptSet:
    """Prompts from a .txt (or any text file), .jsonl or .json file, or '-' for stdin; see the module rules."""
    name = str(source)
    if name == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        raw, label, suffix = stream.read(MAX_BYTES + 1), "<stdin>", ".txt"
    else:
        path = Path(source).expanduser()
        label, suffix = str(path), path.suffix.lower()
        if not path.exists():
            raise InvalidArgumentError(f"{flag} {path} does not exist; pass a prompt file ({RULES})")
        if path.is_dir():
            raise InvalidArgumentError(f"{flag} {path} is a directory; pass a prompt file")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise InvalidArgumentError(f"{flag} {path} cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise InvalidArgumentError(f"{flag} {label} is larger than {MAX_BYTES >> 20} MB; split it")
    if b"\x00" in raw:
        raise InvalidArgumentError(f"{flag} {label} is not a text file (it has NUL bytes); pass UTF-8 text")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]

    bad = 0
    items: list[str | None]
    if suffix == ".json":
        items = list(_json_items(raw, label, flag))
    else:
        lines, bad = _utf8_lines(raw)
        items = [text if suffix != ".jsonl" else _jsonl_item(text, number, label, flag) for number, text in lines]
    stripped = [p.strip() for p in items if p is not None]
    kept = [p for p in stripped if p]
    if bad:
        logger.warning("%s: skipped %d line(s) that are not valid UTF-8", label, bad)
    if not kept:
        raise InvalidArgumentError(f"{flag} {label} is empty: it holds no prompts (blank and non-UTF-8 lines are skipped); write one prompt per line")
    return PromptSet(kept, label, skipped_non_utf8=bad, skipped_blank=len(stripped) - len(kept))


def _utf8_lines(raw: bytes) -> tuple[list[tuple[int, str]], int]:
    """(line number, text) per UTF-8 line (\\n or \\r\\n); lines that are not UTF-8 are skipped and counted."""
    out: list[tuple[int, str]] = []
    bad = 0
    chunks = raw.split(b"\n")
    if chunks and not chunks[-1]:  # the newline that ends the last line starts no line of its own
        chunks.pop()
    for number, chunk in enumerate(chunks, start=1):
        try:
            text = chunk.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            bad += 1
            continue
        out.append((number, text))
    return out, bad


def _json_items(raw: bytes, label: str, flag: str) -> list[str]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"{flag} {label} is not UTF-8; save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{flag} {label} is not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("prompts", data.get("captions"))
    if not isinstance(data, list):
        raise InvalidArgumentError(f"{flag} {label} must hold a JSON list of strings or of objects with a 'prompt' or 'caption' field")
    return [_field(item, i, label, flag, "item") for i, item in enumerate(data)]


def _jsonl_item(line: str, number: int, label: str, flag: str) -> str | None:
    if not line.strip():
        return None
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{flag} {label} line {number} is not valid JSON ({e.msg})") from None
    return _field(item, number, label, flag, "line")


def _field(item: Any, where: int, label: str, flag: str, what: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for name in FIELDS:
            if isinstance(item.get(name), str):
                return item[name]
    raise InvalidArgumentError(f"{flag} {label} {what} {where} has no string 'prompt' or 'caption' field")
