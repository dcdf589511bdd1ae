"""CLIP tokenization through `tokenizers` alone, reading the model's tokenizer.json.

Gives the ids SD pipelines get from transformers' CLIPTokenizer with
`padding="max_length", max_length=77, truncation=True`: BOS, the prompt's tokens,
EOS, then the pad token; a prompt longer than 75 tokens keeps its first 75 and
the EOS, and the number of dropped tokens is reported (and warned once per call).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from swiftbrush_runtime.errors import InvalidModelError
from swiftbrush_runtime.manifest import read_json

logger = logging.getLogger(__name__)

MAX_LENGTH = 77


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


class ClipTokenizer:
    """Token ids (int32, [B, max_length]) for prompts; torch- and transformers-free."""

    def __init__(self, folder: Path | str) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise InvalidModelError(f"{folder} has no tokenizer.json; re-export the model with `swiftbrush export onnx`")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise InvalidModelError(f"{path} does not load as a tokenizers file ({e})") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        config = self._read(folder / "tokenizer_config.json")
        specials = self._read(folder / "special_tokens_map.json")
        self.max_length = int(config.get("model_max_length", MAX_LENGTH))
        if self.max_length > 10_000:  # transformers' "no limit" sentinel
            self.max_length = MAX_LENGTH
        pad = _token_text(specials.get("pad_token")) or _token_text(config.get("pad_token")) or "<|endoftext|>"
        pad_id = self._tok.token_to_id(pad)
        if pad_id is None:
            raise InvalidModelError(f"{folder}: pad token {pad!r} is not in the vocabulary")
        eos = _token_text(specials.get("eos_token")) or _token_text(config.get("eos_token")) or "<|endoftext|>"
        eos_id = self._tok.token_to_id(eos)
        if eos_id is None:
            raise InvalidModelError(f"{folder}: eos token {eos!r} is not in the vocabulary")
        self.pad_id, self.eos_id = int(pad_id), int(eos_id)

    @staticmethod
    def _read(path: Path) -> dict:
        return read_json(path, default={})  # the optional config files: absent means defaults

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """(ids [B, max_length] int32, tokens dropped per prompt by truncation)."""
        encodings = self._tok.encode_batch(list(prompts))
        ids = np.full((len(encodings), self.max_length), self.pad_id, dtype=np.int32)
        dropped = []
        for i, enc in enumerate(encodings):
            row = enc.ids
            extra = max(0, len(row) - self.max_length)
            if extra:  # keep BOS + the first max_length-2 tokens + EOS, as CLIPTokenizer does
                row = row[: self.max_length - 1] + [self.eos_id]
            ids[i, : len(row)] = row
            dropped.append(extra)
        if any(dropped):
            n = sum(1 for d in dropped if d)
            logger.warning(
                "%d prompt(s) longer than %d tokens were truncated (%d tokens dropped); the text encoder sees only the first %d",
                n, self.max_length, sum(dropped), self.max_length - 2,
            )
        return ids, dropped

    __call__ = encode
