"""Generator: same image per seed on every backend and batch split, threads, cache, typed errors."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from swiftbrush_runtime import Generator, InvalidArgumentError, InvalidModelError
from swiftbrush_runtime.backends.base import BackendUnavailableError

PROMPTS = ["a red circle on a blue background", "green square", ""]


@pytest.fixture(scope="module")
def ort_gen(onnx_fp32: Path) -> Generator:
    return Generator.load(onnx_fp32)


def test_auto_backend_and_pil(ort_gen: Generator):
    assert ort_gen.backend.name == "onnxruntime"
    images = ort_gen(PROMPTS, seed=0)
    assert len(images) == 3 and images[0].size == (64, 64) and images[0].mode == "RGB"


def test_seed_stable_and_independent_of_batching(ort_gen: Generator, onnx_fp16: Path):
    a = ort_gen.generate(PROMPTS, seed=7)
    b = ort_gen.generate(PROMPTS, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ort_gen.generate(PROMPTS, seed=8))
    # a static batch-1 graph runs the same list one by one and pads nothing: same noise rows
    static = Generator.load(onnx_fp16)
    assert static.backend.static_batch == 1
    c = static.generate(PROMPTS, seed=7)
    assert np.abs(c.astype(int) - a.astype(int)).max() <= 2


def test_matches_torch_backend(ort_gen: Generator, tiny_student: Path):
    torch_gen = Generator.load(tiny_student, backend="torch", device="cpu")
    a = ort_gen.generate(PROMPTS, seed=3, output="float")
    b = torch_gen.generate(PROMPTS, seed=3, output="float")
    assert np.abs(a - b).max() < 1e-4
    assert torch_gen.backend.vae.encoder is None  # one step only decodes: the KL encoder is not kept


def test_uint8_output_is_the_float_output_rounded(ort_gen: Generator, tiny_student: Path):
    """generate()'s default uint8 path (converted on the device by the torch backend, on the host
    by the others) gives exactly to_uint8 of the float path."""
    from swiftbrush_runtime.images import to_uint8

    torch_gen = Generator.load(tiny_student, backend="torch", device="cpu")
    for gen in (ort_gen, torch_gen):
        u8 = gen.generate(PROMPTS, seed=4)
        assert u8.dtype == np.uint8 and u8.shape == (3, 64, 64, 3)
        np.testing.assert_array_equal(u8, to_uint8(gen.generate(PROMPTS, seed=4, output="float")))
    # the torch backend's uint8 and float images come out of one pipeline call (one CUDA graph on a GPU)
    b = torch_gen.backend
    z, emb = torch_gen.noise(3, 4), torch_gen.encode(PROMPTS)
    np.testing.assert_array_equal(b.run_uint8(z, emb), to_uint8(b.run(z, emb)))


def test_torch_compile_option(tiny_student: Path):
    """compile= reaches torch.compile (dynamo's "eager" backend here: inductor's C++ build is minutes on 2 cores)."""
    plain = Generator.load(tiny_student, backend="torch", device="cpu")
    compiled = Generator.load(tiny_student, backend="torch", device="cpu", compile="eager")
    assert plain.info()["compile"] is None and compiled.info()["compile"] == "eager"
    a = plain.generate(PROMPTS, seed=5, output="float")
    b = compiled.generate(PROMPTS, seed=5, output="float")
    assert np.abs(a - b).max() < 1e-5


def test_threads_share_one_generator(ort_gen: Generator):
    expected = {s: ort_gen.generate([PROMPTS[s % 3]], seed=s) for s in range(6)}
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(s: int) -> None:
        try:
            results[s] = ort_gen.generate([PROMPTS[s % 3]], seed=s)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for s, img in results.items():
        np.testing.assert_array_equal(img, expected[s])


def test_prompt_cache(onnx_fp32: Path):
    gen = Generator.load(onnx_fp32, cache_size=2)
    calls = []
    encode = gen.backend.encode
    gen.backend.encode = lambda ids: calls.append(len(ids)) or encode(ids)
    gen.generate(["a", "b", "a"], seed=0)
    gen.generate(["a", "b"], seed=0)
    assert calls == [2]
    gen.generate(["c"], seed=0)
    assert list(gen._cache) == ["b", "c"]


def test_typed_errors(ort_gen: Generator, onnx_fp32: Path, tiny_student: Path, tmp_path: Path, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="seed must be a non-negative integer"):
        ort_gen.generate(["x"], seed="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="seed must be a non-negative integer, got -1"):
        ort_gen.generate(["x"], seed=-1)  # numpy's SeedSequence refuses negatives with a bare ValueError
    with pytest.raises(InvalidArgumentError, match="a string or a list of strings, got NoneType"):
        ort_gen(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="no prompts"):
        ort_gen.generate([], seed=0)
    with pytest.raises(InvalidArgumentError, match="--backend"):
        Generator.load(onnx_fp32, backend="tpu")
    with pytest.raises(InvalidModelError, match="swiftbrush export engine --onnx"):
        Generator.load(onnx_fp32, backend="tensorrt")
    with pytest.raises(InvalidModelError, match="swiftbrush export onnx --student"):
        Generator.load(tiny_student, backend="onnxruntime")
    with pytest.raises(InvalidModelError, match="no manifest.json"):
        Generator.load(tmp_path)
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_fp32, copy)
    (copy / "tokenizer" / "vocab.json").write_text("{}")
    with pytest.raises(InvalidModelError, match="does not match its manifest hash"):
        Generator.load(copy)
    (copy / "manifest.json").write_text("[]")  # valid JSON, no kind: read as "a None directory" before
    with pytest.raises(InvalidModelError, match="names no kind of directory"):
        Generator.load(copy)
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'swiftbrush\[ort\]'"):
        Generator.load(onnx_fp32)


def test_cuda_requested_without_cuda_provider(onnx_fp32: Path):
    from swiftbrush_runtime.backends.ort import choose_providers

    assert choose_providers(["CPUExecutionProvider"], None, None) == (["CPUExecutionProvider"], "cpu")
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", None)[1] == "cuda"
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], "cuda", None)
    with pytest.raises(BackendUnavailableError, match="not available"):
        choose_providers(["CPUExecutionProvider"], None, ["TensorrtExecutionProvider"])


def test_per_call_size_on_dynamic_export(ort_gen: Generator, tiny_student: Path, onnx_fp16: Path):
    """A dynamic export takes any size in its range per call, same image as torch; a static one refuses others."""
    assert ort_gen.resolution_range() == ((32, 32), (128, 128))
    a = ort_gen.generate(PROMPTS[:2], seed=3, height=96, width=48)
    assert a.shape == (2, 96, 48, 3)
    ref = Generator.load(tiny_student, backend="torch", device="cpu").generate(PROMPTS[:2], seed=3, height=96, width=48)
    assert np.abs(a.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(InvalidArgumentError, match="32x32 to 128x128"):
        ort_gen.generate(PROMPTS[:1], height=136, width=64)
    with pytest.raises(InvalidArgumentError, match="multiple of 8"):
        ort_gen.generate(PROMPTS[:1], height=60)
    static = Generator.load(onnx_fp16)
    with pytest.raises(InvalidArgumentError, match="only 64x64.*--dynamic"):
        static.generate(PROMPTS[:1], height=32, width=32)


@pytest.mark.parametrize("kind, ok", [("epsilon", True), ("v_prediction", True), ("sample", False)])
def test_onestep_prediction_types(onnx_fp32: Path, tmp_path: Path, kind: str, ok: bool):
    """onestep.json takes the two kinds a student can predict (its teacher's) and refuses others by name."""
    import json

    from swiftbrush_runtime.onestep import read_onestep

    data = {**json.loads((onnx_fp32 / "onestep.json").read_text()), "prediction_type": kind}
    (tmp_path / "onestep.json").write_text(json.dumps(data))
    if ok:
        assert read_onestep(tmp_path / "onestep.json").prediction_type == kind
    else:
        with pytest.raises(InvalidModelError, match="prediction_type 'sample' is not supported"):
            read_onestep(tmp_path / "onestep.json")


@pytest.fixture(scope="module")
def onnx_static_batch2(tiny_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from swiftbrush_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "static2"
    export_onnx(tiny_student, out, dtype="fp32", batch=2)
    return out


def test_static_batch_pads_the_last_chunk(onnx_static_batch2: Path, ort_gen: Generator, monkeypatch):
    """3 prompts on graphs built for exactly batch 2: two calls of 2 rows, the last padded and cut off again.

    The images are those of the dynamic export (same weights, fp32) for the same prompts and seed:
    padding changes no row, and the padded row is not returned.
    """
    static = Generator.load(onnx_static_batch2)
    assert static.backend.static_batch == 2 and static.backend.max_batch == 2
    seen: dict[str, list[int]] = {"encode": [], "run": []}
    for name in seen:
        inner = getattr(static.backend, name)

        def record(*arrays: np.ndarray, _inner=inner, _name=name) -> np.ndarray:
            seen[_name].append(arrays[0].shape[0])
            return _inner(*arrays)

        monkeypatch.setattr(static.backend, name, record)
    got = static.generate(PROMPTS, seed=3, output="float")
    assert seen == {"encode": [2, 2], "run": [2, 2]}
    assert got.shape == (3, 3, 64, 64)
    want = ort_gen.generate(PROMPTS, seed=3, output="float")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # each prompt's image depends only on its own noise row and prompt: the padded copy of row 2 leaks nowhere
    single = static.generate(PROMPTS[:1], seed=3, output="float")
    np.testing.assert_allclose(single[0], got[0], rtol=0, atol=1e-4)
