"""The runtime tokenizer (tokenizers only) gives CLIPTokenizer's ids; truncation is counted and warned."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from swiftbrush_runtime.errors import InvalidModelError
from swiftbrush_runtime.tokenizer import ClipTokenizer

CORPUS = [
    "a red circle on a blue background",
    "",
    "A RED   Circle,   on a blue background!",
    "green square on yellow",
    "unknown words like zebra and 42 numbers",
    "ünïcödé café — naïve",
    "don't stop: it's the small triangle's corner",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines",
    " ".join(["red circle"] * 60),  # 120+ tokens: truncated
]


def test_ids_identical_to_clip_tokenizer(tiny_student: Path):
    from transformers import CLIPTokenizer

    slow = CLIPTokenizer.from_pretrained(tiny_student / "tokenizer")
    ref = slow(CORPUS, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    ids, dropped = ClipTokenizer(tiny_student / "tokenizer").encode(CORPUS)
    assert ids.dtype == np.int32 and ids.shape == (len(CORPUS), 77)
    np.testing.assert_array_equal(ids, ref)
    assert dropped[:-1] == [0] * (len(CORPUS) - 1) and dropped[-1] > 40


def test_truncation_warns(tiny_student: Path, caplog):
    tok = ClipTokenizer(tiny_student / "tokenizer")
    with caplog.at_level(logging.WARNING):
        _, dropped = tok.encode(["short", " ".join(["blue"] * 100)])
    assert dropped == [0, 100 + 2 - 77]
    assert "truncated" in caplog.text and "25 tokens dropped" in caplog.text


def test_missing_tokenizer_json(tmp_path: Path):
    with pytest.raises(InvalidModelError, match="tokenizer.json"):
        ClipTokenizer(tmp_path)
