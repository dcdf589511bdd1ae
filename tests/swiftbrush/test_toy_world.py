"""The toy world's grammar, renderer and CLIP-format vocabulary."""

import json

import numpy as np
import pytest

from swiftbrush.toy.grammar import WORDS, Caption, all_captions, parse_caption
from swiftbrush.toy.render import RESOLUTION, render, render_batch
from swiftbrush.toy.vocab import BOS, EOS, build_vocab, bytes_to_unicode, write_tokenizer


def test_grid_is_complete_and_parses_back():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 4 * 3 * 3
    for c in captions:
        assert parse_caption(c.text) == c
    assert parse_caption("A RED  circle on a black background") == Caption("red", "circle", "black")
    assert parse_caption("a purple circle on a black background") is None
    assert parse_caption("a red circle") is None


def test_renderer_is_seeded_and_varied():
    c = Caption("blue", "triangle", "white")
    a = render_batch([c] * 4, seed=7)
    b = render_batch([c] * 4, seed=7)
    assert a.shape == (4, RESOLUTION, RESOLUTION, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(render_batch([c], seed=8)[0], a[0])
    assert len({img.tobytes() for img in a}) == 4  # one caption, a spread of images


def test_renderer_draws_the_named_colours():
    rng = np.random.default_rng(0)
    img = render(Caption("red", "square", "black"), rng).astype(int)
    corner = img[0, 0]
    assert corner.max() < 40  # black background
    reddish = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert reddish.mean() > 0.1  # a square of side >= 24 px covers > 14% of the image


def test_shapes_differ_in_area():
    rng = np.random.default_rng(0)
    areas = {}
    for shape in ("circle", "square", "triangle"):
        img = render(Caption("yellow", shape, "black"), np.random.default_rng(3))
        areas[shape] = (img[..., 0] > 100).mean()
    assert areas["triangle"] < areas["circle"] < areas["square"]
    del rng


def test_bytes_table_is_a_bijection():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256


def test_vocab_layout_matches_clip():
    vocab, merges = build_vocab()
    assert vocab[BOS] == len(vocab) - 2 and vocab[EOS] == len(vocab) - 1
    assert all(w + "</w>" in vocab for w in WORDS)
    assert len(set(vocab.values())) == len(vocab)
    assert all(a + b in vocab for a, b in merges)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    write_tokenizer(out)
    return out


def test_slow_and_fast_and_raw_tokenizers_agree(tokenizer_dir):
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    slow = CLIPTokenizer.from_pretrained(tokenizer_dir)
    fast = CLIPTokenizerFast.from_pretrained(tokenizer_dir)
    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    prompts = [c.text for c in all_captions()] + ["", "A Purple hexagon!! on grey", "red, green; blue.", "émoji ✓ text"]
    for p in prompts:
        ids = slow(p).input_ids
        assert ids == fast(p).input_ids == raw.encode(p).ids, p
    ids = slow("a red circle on a black background").input_ids
    assert ids == [vocab[BOS], *(vocab[w + "</w>"] for w in "a red circle on a black background".split()), vocab[EOS]]


def test_long_prompts_truncate_to_77(tokenizer_dir):
    from transformers import CLIPTokenizer

    slow = CLIPTokenizer.from_pretrained(tokenizer_dir)
    ids = slow("red " * 100, truncation=True, max_length=77, padding="max_length").input_ids
    assert len(ids) == 77 and ids[-1] == slow.eos_token_id
