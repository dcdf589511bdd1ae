"""Prompt sources and the text-embedding cache."""

from __future__ import annotations

import json
import logging

import pytest

from swiftbrush.errors import InvalidArgumentError
from swiftbrush.prompts import encode_prompts, encode_text, load_prompts


def test_toy_prompts_are_the_caption_grid():
    from swiftbrush.toy.grammar import all_captions

    ps = load_prompts("toy")
    assert ps.prompts == [c.text for c in all_captions()]


def test_txt_one_per_line_blank_lines_dropped(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n  a dog  \r\n\n")
    ps = load_prompts(f)
    assert ps.prompts == ["a cat", "a dog"] and ps.skipped_blank == 2


def test_non_utf8_lines_are_skipped_and_counted(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"a cat\n\xff\xfe broken\na dog\n\xc3\x28\n")
    ps = load_prompts(f)
    assert ps.prompts == ["a cat", "a dog"] and ps.skipped_non_utf8 == 2


def test_jsonl_prompt_or_caption(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a cat"}\n\n{"caption": "a dog", "id": 3}\n')
    assert load_prompts(f).prompts == ["a cat", "a dog"]


def test_json_list_of_strings_or_objects(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(["a cat", {"caption": "a dog"}]))
    assert load_prompts(f).prompts == ["a cat", "a dog"]


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("empty.txt", b"", "holds no prompts"),
        ("blank.txt", b"\n  \n", "holds no prompts"),
        ("bad.jsonl", b'{"prompt": "ok"}\n{oops\n', "line 2 is not valid JSON"),
        ("nofield.jsonl", b'{"text": "a cat"}\n', "line 1 has no string 'prompt' or 'caption'"),
        ("bad.json", b"{not json", "not valid JSON"),
        ("dict.json", b'{"a": 1}', "JSON list"),
        ("nul.txt", b"a cat\x00\n", "not a text file"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, name, content, words):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(InvalidArgumentError, match=words):
        load_prompts(f)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        load_prompts(tmp_path)


@pytest.fixture(scope="module")
def tiny_text(tiny_teacher):
    from transformers import CLIPTextModel, CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_teacher / "tokenizer"), CLIPTextModel.from_pretrained(tiny_teacher / "text_encoder")


def test_embeddings_are_cached_and_reused(tmp_path, tiny_text):
    tokenizer, text_encoder = tiny_text
    ps = load_prompts("toy")
    emb = encode_prompts(ps, tokenizer, text_encoder, tmp_path, model_key="tiny")
    assert len(emb) == len(ps) and emb.get([0, 5]).shape == (2, 77, text_encoder.config.hidden_size)
    assert emb.empty.shape == (1, 77, text_encoder.config.hidden_size)
    assert (emb.empty == encode_text(tokenizer, text_encoder, [""])).all()
    assert (emb.get([5]) == encode_text(tokenizer, text_encoder, [ps.prompts[5]])).all()
    files = sorted(p.name for p in next(tmp_path.iterdir()).iterdir())
    assert files == ["empty.safetensors", "index.json", "shard-00000.safetensors"]

    class Exploding:
        def __getattr__(self, name):
            raise AssertionError("the text encoder ran again")

    again = encode_prompts(ps, tokenizer, Exploding(), tmp_path, model_key="tiny")
    assert (again.get(range(len(ps))) == emb.get(range(len(ps)))).all()


def test_long_prompts_are_truncated_counted_and_warned_once(tmp_path, tiny_text, caplog):
    tokenizer, text_encoder = tiny_text
    f = tmp_path / "long.txt"
    f.write_text("a red circle\n" + ("red " * 100).strip() + "\n" + ("blue " * 90).strip() + "\n")
    with caplog.at_level(logging.WARNING, logger="swiftbrush.prompts"):
        emb = encode_prompts(load_prompts(f), tokenizer, text_encoder, tmp_path / "cache", model_key="tiny")
    assert emb.truncated == 2
    warnings = [r for r in caplog.records if r.name == "swiftbrush.prompts"]
    assert len(warnings) == 1 and "2 of 3 prompts" in warnings[0].getMessage()
