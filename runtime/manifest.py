"""manifest.json for every artifact directory, the out-folder contract, atomic file and directory writes, version reports.

Each stage of the chain (student, onnx, engine) writes a manifest that says what
the directory is, what it was made from, the versions that made it, and the sha256 of
every file, so the next stage can refuse a wrong, stale or half-copied input with a
clear message. Pure stdlib: the runtime reads manifests without torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Tuple, Union

from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def atomic_write(path: Path | str, data: str | bytes | Callable[[Path], Any]) -> Path:
    """Write `path` through a temporary sibling and a rename, so no reader ever sees half a file.

    `data` is the text or bytes, or a function that writes the file it is given (an
    image's save, safetensors' save_file). The temporary name is per process, so ranks
    writing the same file at once never share one; a kill leaves only a hidden
    `.NAME.tmp-PID` beside it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def package_version(*distributions: str) -> str | None:
    """The version of the first of `distributions` that is installed, else None.

    From the package metadata; a module already imported without metadata (TensorRT
    from JetPack's apt packages) reports its `__version__`.
    """
    from importlib import metadata

    for name in distributions:
        for spelling in dict.fromkeys((name, name.replace("-", "_"))):  # Python 3.8 does not normalise - and _
            try:
                return metadata.version(spelling)
            except metadata.PackageNotFoundError:
                continue
    for name in distributions:
        found = getattr(sys.modules.get(name.replace("-", "_")), "__version__", None)
        if isinstance(found, str):
            return found
    return None


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """{name: version} of the installed ones among `names`, in their order: what manifests and reports record."""
    found = {name: package_version(name) for name in names}
    return {name: v for name, v in found.items() if v is not None}


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


_REQUIRED: Any = object()


def read_json(path: Path | str, *, missing: str | None = None, default: Any = _REQUIRED) -> Any:
    """A JSON file of an artifact directory; InvalidModelError (one line) if it is malformed.

    A missing file returns `default` when one is given, else raises InvalidModelError with
    the `missing` message (default: "PATH is missing").
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        if default is not _REQUIRED:
            return default
        raise InvalidModelError(missing or f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"{path} is not valid JSON ({e})") from None


def write_manifest(root: Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Write root/manifest.json: kind, format version, caller's fields, file hashes."""
    manifest = {"kind": kind, "format_version": FORMAT_VERSION, **fields, "files": file_hashes(root)}
    atomic_write(Path(root) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
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


def relocate_source(root: Path, key: str, path: Path) -> None:
    """Point root's manifest `source[key]` at `path`: the input was built elsewhere and moved there with it."""
    manifest = read_json(Path(root) / MANIFEST)
    manifest.setdefault("source", {})[key] = str(Path(path).resolve())
    atomic_write(Path(root) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- out folders
#
# The out-folder contract of every command that writes a folder (export onnx, export
# engine, distill, demo, generate): --out must be new or empty; --overwrite replaces only
# a folder that is recognisably this command's own earlier output; --out may never be,
# hold or lie inside an input; the new result is built beside the old one and swapped in
# at the end, so an interrupted --overwrite leaves the previous result where it was.

Inputs = Iterable[Tuple[str, Union[Path, str, None]]]  # (flag, path) of what a command reads (typing's: Python 3.8)


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, and how to recognise its earlier output.

    `recognise(folder)` returns None for the command's own earlier output, else the
    reason it is not (shown to the user: "it holds thesis.txt, which ...").
    """

    what: str  # e.g. "`export onnx` folder"
    recognise: Callable[[Path], str | None]


def unlisted_file(root: Path, listed: Iterable[str], allowed: Callable[[str], bool] = lambda rel: False) -> str | None:
    """The first file or link under root that is neither listed, a manifest.json, nor `allowed`; None if there is none."""
    listed = set(listed)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()  # in place: os.walk then visits them in this order
        for name in dirs:
            if (here / name).is_symlink():  # os.walk does not descend into it, so nothing under it is ours
                return (here / name).relative_to(root).as_posix()
        for name in sorted(files):
            rel = (here / name).relative_to(root).as_posix()
            if name != MANIFEST and rel not in listed and not allowed(rel):
                return rel
    return None


def manifest_kind(kind: str, what: str | None = None, allowed: Callable[[str], bool] = lambda rel: False) -> OutputKind:
    """An output recognised by its manifest.json: of this `kind`, listing every file in the folder.

    A file the manifest does not list (and `allowed` does not accept) is something a user
    put there; --overwrite must not delete it.
    """

    def recognise(root: Path) -> str | None:
        path = root / MANIFEST
        if not path.is_file():
            return f"it has no {MANIFEST}"
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"its {MANIFEST} is not valid JSON"
        if not isinstance(manifest, dict) or manifest.get("kind") != kind:
            found = manifest.get("kind") if isinstance(manifest, dict) else None
            return f"its {MANIFEST} says it is a {found!r} folder" if isinstance(found, str) else f"its {MANIFEST} names no kind"
        files = manifest.get("files")
        rel = unlisted_file(root, files if isinstance(files, dict) else {}, allowed)
        return None if rel is None else f"it holds {rel}, which its {MANIFEST} does not list"

    return OutputKind(what or f"{kind} folder", recognise)


KINDS_OF_OUTPUT = {
    "onnx": manifest_kind("onnx", "`export onnx` folder"),
    "engine": manifest_kind("engine", "`export engine` folder"),
    "student": manifest_kind("student", "student folder"),
}


def resolve_out(out: Path | str, flag: str = "--out") -> Path:
    """The absolute, symlink-free path of an output folder; refuses '' and the current directory.

    Replacing the current directory (or a folder holding it) would pull it from under
    the shell that runs the command.
    """
    if isinstance(out, str) and not out.strip():
        raise InvalidArgumentError(f"{flag} '' names no folder; pass one, e.g. {flag} out/images")
    resolved = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        where = "is the current directory" if resolved == cwd else "holds the current directory"
        raise InvalidArgumentError(f"{flag} {out} {where}; name a new folder for the output, e.g. {flag} out/results")
    return resolved


def check_not_input(out: Path | str, inputs: Inputs, flag: str = "--out") -> None:
    """Refuse an output folder that is, holds or lies inside one of the command's inputs (symlinks resolved)."""
    target = Path(out).resolve()
    for name, path in inputs:
        if path is None or str(path) == "" or not Path(path).exists():
            continue  # not a local path (a hub id, 'toy'): nothing on disk to protect
        source = Path(path).resolve()
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "holds"
        elif source in target.parents:
            relation = "lies inside"
        else:
            continue
        raise InvalidArgumentError(f"{flag} {out} {relation} the input {name} {path}; write the output to a folder outside it")


def check_out_dir(out: Path | str, overwrite: bool = False, *, kind: str | OutputKind | None = None, inputs: Inputs = (),
                  flag: str = "--out") -> Path:  # fmt: skip
    """Apply the out-folder contract before any work starts; returns the resolved folder.

    `kind` says what this command writes (a manifest kind or an OutputKind): without it
    --overwrite replaces nothing. `inputs` are (flag, path) pairs of what the command reads.
    """
    resolved = resolve_out(out, flag)
    if resolved.exists() and not resolved.is_dir():
        raise InvalidArgumentError(f"{flag} {out} is a file; pass a directory")
    check_not_input(out, inputs, flag)
    if not resolved.is_dir() or not any(resolved.iterdir()):
        return resolved
    output = KINDS_OF_OUTPUT.get(kind, manifest_kind(kind)) if isinstance(kind, str) else kind
    reason = output.recognise(resolved) if output is not None else "nothing recognises it"
    what = output.what if output is not None else "output of this command"
    if not overwrite:
        if reason is None:
            raise InvalidArgumentError(f"{flag} {out} is not empty (an earlier {what}); pass --overwrite to replace it, or name a new or empty folder")
        raise InvalidArgumentError(f"{flag} {out} is not empty; name a new or empty folder (--overwrite replaces only an earlier {what})")
    if reason is not None:
        raise InvalidArgumentError(f"{flag} {out} is not an earlier {what} ({reason}); --overwrite replaces only those: name a new or empty folder")
    return resolved


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p that returns the folders it created, outermost first (for remove_if_empty)."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    missing.reverse()
    for p in missing:
        p.mkdir(exist_ok=True)
    return missing


def remove_if_empty(created: Iterable[Path]) -> None:
    """Remove the folders make_dirs created, innermost first, where nothing was written into them."""
    for p in reversed(list(created)):
        try:
            p.rmdir()
        except OSError:
            return  # not empty (or already gone): keep it and everything above it


def swap_in(new: Path, out: Path) -> None:
    """Move a finished `new` folder to `out`, replacing what is there; the old one is removed last."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(out: Path | str, overwrite: bool = False, *, kind: str | OutputKind | None = None, inputs: Inputs = (),
               flag: str = "--out") -> Iterator[Path]:  # fmt: skip
    """Yield a temporary sibling of `out`; on success it replaces `out` (check_out_dir's contract).

    A crash leaves `out` as it was (the previous result stays usable) and removes the
    temporary folder; a kill leaves only a hidden `.NAME.tmp-*` sibling, never a
    half-written `out` that looks finished (finished directories carry a manifest,
    written last). If `out` stops being an earlier output while the new one is built
    (someone put a file there), the new result is kept in the sibling and named.
    """
    target = check_out_dir(out, overwrite, kind=kind, inputs=inputs, flag=flag)
    try:
        created = make_dirs(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the result is an ordinary folder
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {out} is not writable ({e.strerror}); choose another directory") from None
    keep = False
    try:
        yield tmp
        try:
            check_out_dir(target, overwrite, kind=kind, flag=flag)
        except InvalidArgumentError as e:
            keep = True
            raise InvalidArgumentError(f"{e}; the new result was kept in {tmp}") from None
        swap_in(tmp, target)
    except BaseException:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
            remove_if_empty(created)
        raise
