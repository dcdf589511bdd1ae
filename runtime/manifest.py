"""manifest.json for every artifact directory, and atomic directory writes.

Each stage of the chain (student, onnx, engine) writes a manifest that says what
the directory is, what it was made from, and the sha256 of every file, so the
next stage can refuse a wrong, stale or half-copied input with a clear message.
Pure stdlib: the runtime reads manifests without torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative POSIX paths), the manifest excluded."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def read_json(path: Path) -> dict[str, Any]:
    """A JSON config file of an artifact directory; InvalidModelError if missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidModelError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"{path} is not valid JSON ({e})") from None


def write_manifest(root: Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Write root/manifest.json: kind, format version, caller's fields, file hashes."""
    manifest = {"kind": kind, "format_version": FORMAT_VERSION, **fields, "files": file_hashes(root)}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(root: Path, kind: str | tuple[str, ...], verify: bool = True) -> dict[str, Any]:
    """Load and check root/manifest.json; raise InvalidModelError naming what is wrong.

    `verify` re-hashes every listed file: a changed, missing or truncated file is
    refused rather than loaded.
    """
    kinds = (kind,) if isinstance(kind, str) else kind
    root = Path(root)
    if not root.is_dir():
        raise InvalidModelError(f"{root} does not exist or is not a directory")
    path = root / MANIFEST
    if not path.is_file():
        raise InvalidModelError(f"{root} has no {MANIFEST}: it is not a finished {' or '.join(kinds)} directory")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("kind"), str):
        raise InvalidModelError(f"{path} names no kind of directory: it is not a finished {' or '.join(kinds)} directory; rebuild it")
    if manifest.get("kind") not in kinds:
        raise InvalidModelError(f"{root} is a {manifest.get('kind')!r} directory, expected {' or '.join(kinds)}")
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            f = root / rel
            if not f.is_file():
                raise InvalidModelError(f"{root}: {rel} is listed in the manifest but missing; re-copy or rebuild the directory")
            if sha256_file(f) != digest:
                raise InvalidModelError(f"{root}: {rel} does not match its manifest hash (changed or corrupted); rebuild the directory")
    return manifest


def check_out_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse a non-empty output directory unless overwriting was asked for."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidArgumentError(f"--out {out} is not empty; choose another directory or pass --overwrite")


@contextlib.contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out` in one rename.

    A crash leaves only the `.tmp-*` sibling, never a half-written `out` that looks
    finished (finished directories also carry a manifest, written last).
    """
    out = Path(out)
    check_out_dir(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise InvalidArgumentError(f"--out {out} is not writable ({e.strerror}); choose another directory") from None
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
