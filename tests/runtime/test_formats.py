"""One owner per artifact format: onestep.json's writer beside its reader, manifests, atomic writes, versions, the student loader."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from swiftbrush_runtime.errors import InvalidModelError
from swiftbrush_runtime.manifest import atomic_write, package_version, package_versions, read_json
from swiftbrush_runtime.onestep import ONESTEP, STUDENT_TIMESTEP, OneStep, read_onestep, transformers_dtype, write_onestep

ROOT = Path(__file__).parents[2]
PACKAGES = ("swiftbrush", "export", "runtime", "benchmarks")  # tests write broken files on purpose


def _onestep(**changes: object) -> OneStep:
    fields = dict(timestep=STUDENT_TIMESTEP, alpha_T=0.0047, prediction_type="epsilon", resolution=64, latent_channels=4,
                  vae_scale_factor=8, scaling_factor=0.18215, extra={"teacher": "toy", "guidance_scale": 4.5})  # fmt: skip
    return OneStep(**{**fields, **changes})


def test_write_onestep_is_what_read_onestep_reads(tmp_path: Path):
    written = write_onestep(tmp_path, _onestep())
    assert read_onestep(tmp_path / ONESTEP) == written == _onestep()
    text = (tmp_path / ONESTEP).read_text()
    assert list(json.loads(text)) == ["timestep", "alpha_T", "prediction_type", "resolution", "latent_channels", "vae_scale_factor",
                                      "scaling_factor", "teacher", "guidance_scale"]  # fmt: skip
    assert text.endswith("}\n") and text.startswith('{\n  "timestep": 999,')
    assert [p.name for p in tmp_path.iterdir()] == [ONESTEP]  # no temporary left beside it


@pytest.mark.parametrize("change", [{"alpha_T": 1.5}, {"prediction_type": "sample"}, {"timestep": 1000}, {"resolution": "64"}])
def test_write_onestep_refuses_what_the_reader_would_refuse(tmp_path: Path, change: dict):
    with pytest.raises(InvalidModelError):
        write_onestep(tmp_path, _onestep(**change))
    assert not (tmp_path / ONESTEP).exists()


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "report.json"
    atomic_write(target, "old\n")
    atomic_write(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    atomic_write(target, lambda tmp: tmp.write_text("by a writer\n"))
    assert target.read_text() == "by a writer\n"

    def half(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "by a writer\n" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_read_json_missing_default_and_malformed(tmp_path: Path):
    assert read_json(tmp_path / "absent.json", default={}) == {}
    with pytest.raises(InvalidModelError, match="no onestep.json, go distill"):
        read_json(tmp_path / "absent.json", missing="no onestep.json, go distill")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidModelError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json", default={})  # a default covers a missing file, never a broken one


def test_package_versions_lists_installed_ones_in_order():
    from importlib import metadata

    found = package_versions(["numpy", "no-such-package-xyz", "pillow"])
    assert found == {"numpy": metadata.version("numpy"), "pillow": metadata.version("pillow")}
    assert package_version("no-such-package-xyz", "numpy") == metadata.version("numpy")
    assert package_version("no-such-package-xyz") is None


def test_transformers_dtype_follows_the_rename(monkeypatch: pytest.MonkeyPatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(transformers, "__version__", "4.55.2")
    assert transformers_dtype("fp") == {"torch_dtype": "fp"}
    monkeypatch.setattr(transformers, "__version__", "4.56.0")
    assert transformers_dtype("fp") == {"dtype": "fp"}


def test_one_student_loader_gives_each_module_its_dtype_without_deprecation_notices(tiny_student: Path, caplog: pytest.LogCaptureFixture):
    torch = pytest.importorskip("torch")
    from swiftbrush_runtime.onestep import load_student_modules

    with caplog.at_level(logging.WARNING):
        modules = load_student_modules(tiny_student, torch.float16, vae_dtype=torch.float32)
    assert sorted(modules) == ["text_encoder", "unet", "vae"]
    assert modules["text_encoder"].dtype == modules["unet"].dtype == torch.float16 and modules["vae"].dtype == torch.float32
    assert all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in modules.values())
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    taesd = load_student_modules(tiny_student, torch.float32, decoder="taesd")["vae"]
    assert type(taesd).__name__ == "AutoencoderTiny"


def _python_files() -> list[Path]:
    files = [p for top in PACKAGES for p in (ROOT / top).rglob("*.py")]
    assert len(files) > 40  # the scan runs over the real tree
    return files


@pytest.mark.parametrize("name", ["ONESTEP", "COMPONENTS", "MANIFEST"])
def test_each_format_constant_is_defined_once(name: str):
    defined = [p.relative_to(ROOT).as_posix() for p in _python_files() if re.search(rf"^{name} = ", p.read_text(), re.M)]
    assert len(defined) == 1, defined


def test_onestep_json_and_manifests_are_written_only_by_their_owners():
    """No hand-built onestep.json or manifest.json: every writer calls write_onestep / write_manifest."""
    owners = {"runtime/onestep.py", "runtime/manifest.py"}
    by_hand = re.compile(r"(ONESTEP|MANIFEST|\"onestep\.json\"|\"manifest\.json\"|'onestep\.json'|'manifest\.json')\)\.write_(text|bytes)")
    offenders = [p.relative_to(ROOT).as_posix() for p in _python_files() if by_hand.search(p.read_text())]
    assert [p for p in offenders if p not in owners] == [], offenders


def test_temporary_files_are_named_by_one_function():
    """Hand-rolled `tmp + os.replace` writes are gone outside the owner (the training loop's checkpoints are their own)."""
    skip = {"runtime/manifest.py", "swiftbrush/checkpoints.py"}  # checkpoints.py renames a whole checkpoint folder into place
    offenders = [p.relative_to(ROOT).as_posix() for p in _python_files()
                 if "os.replace(" in p.read_text() and p.relative_to(ROOT).as_posix() not in skip]  # fmt: skip
    assert offenders == [], offenders
