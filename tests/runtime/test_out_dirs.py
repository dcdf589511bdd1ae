"""The out-folder contract (runtime/manifest.py) and `generate`'s folder: nothing a user owns is lost.

--out must be new or empty; --overwrite replaces only the same command's own earlier
output; an --out that is, holds or lies inside an input is refused; an interrupted
--overwrite leaves the previous result usable. generate writes each batch as it
finishes, records which prompt and seed made which file, and caps its grid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.manifest import atomic_dir, check_out_dir, read_manifest, write_manifest
from cli_checks import invoke as _invoke, one_line_exit_2 as _one_line_exit_2

PROMPT = "a red circle on a blue background"




def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _users_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "thesis.txt").write_text("four years of work")
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    return root


def _own_output(root: Path, kind: str = "onnx") -> Path:
    root.mkdir(parents=True)
    (root / "graph.onnx").write_bytes(b"graph")
    write_manifest(root, kind)
    return root


# ---------------------------------------------------------------- the contract


def test_new_or_empty_out_is_accepted(tmp_path):
    assert check_out_dir(tmp_path / "new", kind="onnx") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", kind="onnx")


def test_users_folder_is_never_replaced(tmp_path):
    folder = _users_folder(tmp_path / "mine")
    before = _snapshot(folder)
    with pytest.raises(InvalidArgumentError, match="is not empty; name a new or empty folder"):
        check_out_dir(folder, kind="onnx")
    with pytest.raises(InvalidArgumentError, match=r"not an earlier `export onnx` folder \(it has no manifest.json\)"):
        check_out_dir(folder, overwrite=True, kind="onnx")
    assert _snapshot(folder) == before


def test_overwrite_needs_the_same_kind_and_every_file_listed(tmp_path):
    engine = _own_output(tmp_path / "engine", kind="engine")
    with pytest.raises(InvalidArgumentError, match="says it is a 'engine' folder"):
        check_out_dir(engine, overwrite=True, kind="onnx")
    onnx = _own_output(tmp_path / "onnx")
    check_out_dir(onnx, overwrite=True, kind="onnx")  # its own earlier output: accepted
    with pytest.raises(InvalidArgumentError, match="pass --overwrite to replace it"):
        check_out_dir(onnx, kind="onnx")
    (onnx / "notes").mkdir()
    (onnx / "notes" / "important.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="it holds notes/important.txt, which its manifest.json does not list"):
        check_out_dir(onnx, overwrite=True, kind="onnx")
    with pytest.raises(InvalidArgumentError, match="--overwrite replaces only"):
        check_out_dir(_own_output(tmp_path / "x"), overwrite=True)  # no kind: nothing is replaced


def test_out_is_holds_or_lies_inside_an_input(tmp_path):
    student = _own_output(tmp_path / "student", kind="student")
    for out, words in [(student, "is the input --student"), (tmp_path, "holds the input --student"), (student / "onnx", "lies inside the input --student")]:
        with pytest.raises(InvalidArgumentError, match=words):
            check_out_dir(out, overwrite=True, kind="student", inputs=[("--student", student)])
    link = tmp_path / "link"
    link.symlink_to(student, target_is_directory=True)
    with pytest.raises(InvalidArgumentError, match="is the input --student"):
        check_out_dir(link, overwrite=True, kind="student", inputs=[("--student", student)])
    prompts = tmp_path / "data" / "prompts.txt"
    prompts.parent.mkdir()
    prompts.write_text("x\n")
    with pytest.raises(InvalidArgumentError, match="holds the input --prompts"):
        check_out_dir(tmp_path / "data", kind="images", inputs=[("--prompts", prompts)])
    check_out_dir(tmp_path / "elsewhere", inputs=[("--teacher", "toy"), ("--teacher", "org/hub-id"), ("--taesd", None)])  # not on disk


def test_empty_and_current_directory_are_refused(tmp_path, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="--out '' names no folder"):
        check_out_dir("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match="is the current directory"):
        check_out_dir(".")
    with pytest.raises(InvalidArgumentError, match="holds the current directory"):
        check_out_dir("..")


def test_interrupted_overwrite_leaves_the_previous_result(tmp_path):
    old = _own_output(tmp_path / "onnx")
    before = _snapshot(old)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(old, overwrite=True, kind="onnx") as tmp:
            (tmp / "graph.onnx").write_bytes(b"half")
            raise KeyboardInterrupt
    assert _snapshot(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    with atomic_dir(old, overwrite=True, kind="onnx") as tmp:
        (tmp / "graph.onnx").write_bytes(b"new")
        write_manifest(tmp, "onnx")
    assert (old / "graph.onnx").read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_a_failed_build_leaves_no_empty_folders(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "a" / "b" / "out", kind="onnx"):
            raise RuntimeError("the build failed")
    assert list(tmp_path.iterdir()) == []


def test_a_file_put_into_out_during_the_build_is_kept(tmp_path):
    old = _own_output(tmp_path / "onnx")
    with pytest.raises(InvalidArgumentError, match="the new result was kept in"):
        with atomic_dir(old, overwrite=True, kind="onnx") as tmp:
            (tmp / "graph.onnx").write_bytes(b"new")
            write_manifest(tmp, "onnx")
            (old / "added-meanwhile.txt").write_text("mine")
    assert (old / "added-meanwhile.txt").read_text() == "mine" and (tmp / "graph.onnx").read_bytes() == b"new"


# ---------------------------------------------------------------- export onnx / engine


def test_export_onnx_overwrite_refuses_a_users_folder_and_its_own_student(tiny_student: Path, tmp_path: Path):
    mine = _users_folder(tmp_path / "mine")
    before = _snapshot(mine)
    line = _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(mine), "--overwrite"))
    assert "not an earlier `export onnx` folder" in line and _snapshot(mine) == before
    student_files = _snapshot(tiny_student)
    line = _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tiny_student), "--overwrite"))
    assert "is the input --student" in line
    line = _one_line_exit_2(_invoke("export", "onnx", "--student", str(tiny_student), "--out", str(tiny_student / "onnx")))
    assert "lies inside the input --student" in line
    assert _snapshot(tiny_student) == student_files and not (tiny_student / "onnx").exists()


def test_export_onnx_overwrite_replaces_its_own_output_and_an_interrupted_one_keeps_it(tiny_student: Path, onnx_fp16: Path, tmp_path: Path,
                                                                                       monkeypatch):  # fmt: skip
    import shutil

    from swiftbrush_export import onnx_export

    out = tmp_path / "onnx"
    shutil.copytree(onnx_fp16, out)
    before = _snapshot(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(onnx_export, "_write_configs", interrupted)
        with pytest.raises(KeyboardInterrupt):
            onnx_export.export_onnx(tiny_student, out, dtype="fp32", overwrite=True)
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    read_manifest(out, "onnx", verify=True)  # still a finished, usable folder
    manifest = onnx_export.export_onnx(tiny_student, out, dtype="fp32", overwrite=True)
    assert manifest["dtype"] == "fp32" and read_manifest(out, "onnx", verify=True)["dtype"] == "fp32"


def test_export_engine_out_must_not_be_or_hold_an_input(onnx_fp32: Path, tmp_path: Path):
    from swiftbrush_export.engine import build_engines

    before = _snapshot(onnx_fp32)
    with pytest.raises(InvalidArgumentError, match="is the input --onnx"):
        build_engines(onnx_fp32, onnx_fp32, overwrite=True)
    mine = _users_folder(tmp_path / "mine")
    with pytest.raises(InvalidArgumentError, match="holds the input --timing-cache"):
        build_engines(onnx_fp32, mine, overwrite=True, timing_cache=mine / "photos" / "cat.jpg")
    with pytest.raises(InvalidArgumentError, match="not an earlier `export engine` folder"):
        build_engines(onnx_fp32, mine, overwrite=True)
    assert _snapshot(onnx_fp32) == before and (mine / "thesis.txt").is_file()


# ---------------------------------------------------------------- generate


def test_generate_records_each_image_and_replaces_only_its_own_output(onnx_fp32: Path, tmp_path: Path):
    out = tmp_path / "images"
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{PROMPT}\ngreen square\n\n{PROMPT}\n")
    assert _invoke("generate", "--model", str(onnx_fp32), "--prompts", str(prompts), "--seed", "3", "--out", str(out)).exit_code == 0
    records = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [(r["file"], r["prompt"], r["index"], r["seed"]) for r in records] == [  # a blank line is skipped (the one prompt-file rule)
        ("0000.png", PROMPT, 0, 3), ("0001.png", "green square", 1, 3), ("0002.png", PROMPT, 2, 3)
    ]
    assert {r["backend"] for r in records} == {"onnxruntime"} and {r["model"] for r in records} == {str(onnx_fp32.resolve())}
    assert read_manifest(out, "images", verify=True)["complete"] is True

    line = _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(out)))
    assert "pass --overwrite to replace it" in line and (out / "0002.png").is_file()
    r = _invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(out), "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "grid.png", "images.jsonl", "manifest.json"]  # no stale 0001..0003
    assert "wrote 1 image," in r.output


def test_generate_refuses_what_is_not_its_own(onnx_fp32: Path, tmp_path: Path):
    mine = _users_folder(tmp_path / "mine")
    (mine / "0000.png").write_bytes(b"my own picture")
    before = _snapshot(mine)
    line = _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(mine), "--overwrite"))
    assert "not an earlier `generate` output" in line and _snapshot(mine) == before
    assert "is not empty" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(mine)))
    assert "--out '' names no folder" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", ""))
    model_files = _snapshot(onnx_fp32)
    assert "is the input --model" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(onnx_fp32), "--overwrite"))
    prompts = mine / "prompts.txt"
    prompts.write_text("x\n")
    assert "holds the input --prompts" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompts", str(prompts), "--out", str(mine), "--overwrite"))
    assert _snapshot(onnx_fp32) == model_files and (mine / "thesis.txt").is_file()


def test_generate_writes_each_batch_as_it_finishes_and_ctrl_c_keeps_them(onnx_fp32: Path, tmp_path: Path):
    from swiftbrush_runtime.commands import generate_to_dir

    out = tmp_path / "images"
    prompts = [f"prompt {i}" for i in range(7)]
    prompts[1] = "grüner Kreis ✓"  # images.jsonl is UTF-8 whatever the locale
    seen = []

    def progress(n: int) -> None:
        seen.append(sorted(p.name for p in out.glob("*.png")))
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_to_dir(onnx_fp32, prompts, out, seed=1, progress=progress)  # onnx_fp32 takes 2 images a call
    assert seen == [["0000.png", "0001.png"], ["0000.png", "0001.png", "0002.png", "0003.png"]]
    records = [json.loads(line) for line in (out / "images.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["file"] for r in records] == ["0000.png", "0001.png", "0002.png", "0003.png"] and records[1]["prompt"] == "grüner Kreis ✓"
    assert json.loads((out / "manifest.json").read_text())["complete"] is False and not (out / "grid.png").exists()
    kept = _snapshot(out)

    # an interrupted --overwrite leaves the earlier (here: partial) output as it was
    with pytest.raises(KeyboardInterrupt):
        generate_to_dir(onnx_fp32, prompts, out, seed=2, overwrite=True, progress=lambda n: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _snapshot(out) == kept and sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    # and a finished one replaces it; the images are those of one uninterrupted call
    paths = generate_to_dir(onnx_fp32, prompts, out, seed=1, overwrite=True)
    assert [p.name for p in paths] == [f"{i:04d}.png" for i in range(7)] + ["grid.png"]
    assert (out / "0003.png").read_bytes() == kept["0003.png"]


def test_generate_300_prompts_progressively_with_a_screen_sized_grid(onnx_fp32: Path, tmp_path: Path):
    from swiftbrush_runtime.commands import GRID_MAX_SIZE, generate_to_dir

    out = tmp_path / "many"
    prompts = [PROMPT, "green square", "blue triangle on a red background"] * 100
    existing = []
    generate_to_dir(onnx_fp32, prompts, out, progress=lambda n: existing.append(len(list(out.glob("[0-9]*.png")))))
    assert existing[0] == 2 and existing[-1] == 300 and existing == sorted(existing)  # files appear batch by batch
    grid = Image.open(out / "grid.png")
    assert grid.size[0] <= GRID_MAX_SIZE[0] and grid.size[1] <= GRID_MAX_SIZE[1]
    assert grid.size == (8 * (124 + 2), 8 * (64 + 26 + 2))  # the first 64 images, 8 x 8, each 124-px cell with its prompt under it
    assert len((out / "images.jsonl").read_text().splitlines()) == 300


def test_grid_is_capped_and_fits_a_screen_for_large_images():
    import numpy as np

    from swiftbrush_runtime.commands import GRID_MAX_SIZE, grid_image

    big = grid_image([np.zeros((512, 512, 3), np.uint8)] * 100, ["a prompt"] * 100)
    assert big.size[0] <= GRID_MAX_SIZE[0] and big.size[1] <= GRID_MAX_SIZE[1]
    assert big.size[0] >= 8 * 100  # 8 columns of shrunken tiles, not one column of 100
    small = grid_image([np.zeros((64, 64, 3), np.uint8)] * 3, ["a red circle on a black background", "", "x"])
    assert small.size == (3 * (256 + 2), 256 + 26 + 2)  # small toy images are still enlarged, a caption under each
    pixels = np.asarray(small)
    assert (pixels[256:256 + 26] < 128).any()  # the caption strip holds text


def test_image_names_are_padded_for_the_count():
    from swiftbrush_runtime.commands import image_name

    assert image_name(7, 1) == "0007.png" and image_name(9999, 10_000) == "9999.png"
    assert image_name(7, 10_001) == "00007.png" and image_name(10_000, 10_001) == "10000.png"


def test_generate_batches_equals_one_generate_call(onnx_fp32: Path):
    import numpy as np

    from swiftbrush_runtime import Generator

    prompts = [PROMPT, "green square", "", "red circle", "blue square"]
    with Generator.load(onnx_fp32) as gen:
        whole = gen.generate(prompts, seed=5)
        for size in (1, 2, 3):
            batches = list(gen.generate_batches(prompts, seed=5, batch_size=size))
            assert [start for start, _ in batches] == list(range(0, 5, size))
            assert np.array_equal(np.concatenate([b for _, b in batches]), whole)


def test_generate_help_names_the_grid_cap_and_overwrite():
    text = _invoke("generate", "--help").output
    assert "first 64 images" in text and "--overwrite" in text and "images.jsonl" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_generate_to_an_unwritable_parent_is_one_line(onnx_fp32: Path, tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert "not writable" in _one_line_exit_2(_invoke("generate", "--model", str(onnx_fp32), "--prompt", "x", "--out", str(ro / "sub")))


def test_finished_folder_has_ordinary_permissions(tmp_path: Path):
    """The temporary build folder is private (mkdtemp); the finished one follows the umask like any folder."""
    import os

    out = tmp_path / "result"
    with atomic_dir(out, kind="onnx") as tmp:
        write_manifest(tmp, "onnx")
    mask = os.umask(0)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask
