"""A CLIP-format BPE vocabulary built from the toy grammar.

Real SD teachers ship CLIP's 49,408-token BPE vocabulary; the toy teacher ships a
vocabulary in exactly that format (vocab.json + merges.txt, byte-level symbols,
`</w>` word ends) so that `CLIPTokenizer`, `CLIPTokenizerFast` and the runtime's
`tokenizers` path all read it unchanged. Every grammar word is one token; any
other text still tokenizes, into byte-level pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

from swiftbrush.toy.grammar import WORDS

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77  # SD's text length; the toy text encoder keeps it


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (the format demands it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def learn_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Learn BPE merges on `words` until each is one symbol.

    Real BPE training (most frequent pair first, ties by first appearance), so that
    applying the merges in rank order to a grammar word rebuilds it whole; hand-picked
    per-word merges would interfere across words ("r e" of "red" splitting "green").
    """
    corpus = [tuple(w[:-1]) + (w[-1] + "</w>",) for w in words]
    merges: list[tuple[str, str]] = []
    while any(len(w) > 1 for w in corpus):
        counts: dict[tuple[str, str], int] = {}
        for w in corpus:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        best = max(counts, key=lambda pair: counts[pair])  # dicts keep first-seen order on ties
        merges.append(best)
        merged = []
        for w in corpus:
            out: list[str] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged.append(tuple(out))
        corpus = merged
    return merges


def build_vocab(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) in CLIP's layout: bytes, bytes + `</w>`, merge results, specials."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = learn_merges(words)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(out_dir: Path) -> None:
    """Write a complete tokenizer folder: slow files, tokenizer.json and configs."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    slow = CLIPTokenizer(  # str paths: transformers 5 refuses Path objects here
        str(out_dir / "vocab.json"),
        str(out_dir / "merges.txt"),
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=MAX_LENGTH,
    )
    slow.save_pretrained(out_dir)
    fast = CLIPTokenizerFast.from_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    for word in WORDS:  # the grammar's promise: one token per word
        ids = slow(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"toy word {word!r} splits into {ids}"
