"""Prompt sources for distillation and their cached text embeddings.

    swiftbrush distill --prompts toy ...            # the toy world's caption grid
    swiftbrush distill --prompts prompts.txt ...    # one prompt per line
    swiftbrush distill --prompts prompts.jsonl ...  # {"prompt": ...} or {"caption": ...} per line
    swiftbrush distill --prompts prompts.json ...   # a list of strings or of such objects
    swiftbrush distill --prompts - ...              # stdin, one prompt per line (one process)

Files are read by swiftbrush_runtime.prompts, the reader `generate` uses too (the
same BOM, blank-line and UTF-8 rules). SwiftBrush needs no images, only prompts.
The text encoder runs once per prompt: the embeddings are written as safetensors shards under the run's cache folder
and read back by index at every step, together with the empty-prompt embedding
that classifier-free guidance and the LoRA teacher's empty-prompt batches use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from swiftbrush.errors import InvalidArgumentError
from swiftbrush_runtime.manifest import atomic_write
from swiftbrush_runtime.prompts import STDIN, PromptSet, read_prompts

logger = logging.getLogger(__name__)

SHARD_SIZE = 4096  # prompts per safetensors shard
PRELOAD_BYTES = 1 << 30  # caches smaller than this are held in memory


def load_prompts(source: str | Path) -> PromptSet:
    """`toy` (the caption grid) or a prompt file read by the runtime's one reader; InvalidArgumentError on a bad file."""
    if str(source) == "toy":
        from swiftbrush.toy.grammar import all_captions

        return PromptSet([c.text for c in all_captions()], "toy")
    if str(source) == STDIN and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # only one rank would get the text
        raise InvalidArgumentError("--prompts - (stdin) reaches one process only; save the prompts to a file for a multi-process run")
    return read_prompts(source)


# ------------------------------------------------------------------ embeddings


class PromptEmbeddings:
    """Cached text embeddings: `get(indices)` -> Bx77xD tensor, `empty` -> 1x77xD."""

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        self.folder = folder
        self.count: int = index["count"]
        self.truncated: int = index["truncated"]
        self.shard_size: int = index["shard_size"]
        self.empty = load_file(folder / "empty.safetensors")["embedding"]
        shards = [folder / name for name in index["shards"]]
        self._memory = None
        if index["bytes"] <= PRELOAD_BYTES:
            import torch

            self._memory = torch.cat([load_file(s)["embeddings"] for s in shards])
        else:
            self._handles = [safe_open(str(s), framework="pt") for s in shards]

    def __len__(self) -> int:
        return self.count

    def get(self, indices: Sequence[int]) -> Any:
        import torch

        if self._memory is not None:
            return self._memory[torch.as_tensor(list(indices), dtype=torch.long)]
        rows = []
        for i in indices:
            shard, j = divmod(int(i), self.shard_size)
            rows.append(self._handles[shard].get_slice("embeddings")[j : j + 1])
        return torch.cat(rows)


def cache_key(prompts: PromptSet, model_key: str, dtype: str) -> str:
    return hashlib.sha256(f"{prompts.digest()}|{model_key}|{dtype}|{SHARD_SIZE}".encode()).hexdigest()[:20]


def encode_prompts(
    prompts: PromptSet,
    tokenizer: Any,
    text_encoder: Any,
    cache_dir: Path,
    model_key: str,
    dtype: Any = None,
    batch_size: int = 64,
) -> PromptEmbeddings:
    """Embed every prompt once (or reuse a matching cache) and return the cached embeddings.

    Prompts longer than the tokenizer's limit (77 for SD) are truncated as SD's own
    pipeline does; they are counted and a single warning says how many.
    """
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    key = cache_key(prompts, model_key, str(dtype))
    folder = Path(cache_dir) / f"text-embeddings-{key}"
    index_file = folder / "index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        if index.get("key") == key:
            return PromptEmbeddings(folder, index)

    folder.mkdir(parents=True, exist_ok=True)
    limit = int(tokenizer.model_max_length)
    truncated = 0
    shards: list[str] = []
    total_bytes = 0
    for start in range(0, len(prompts.prompts), SHARD_SIZE):
        chunk = prompts.prompts[start : start + SHARD_SIZE]
        truncated += sum(len(ids) > limit for ids in tokenizer(chunk, truncation=False, verbose=False)["input_ids"])
        rows = [encode_text(tokenizer, text_encoder, chunk[i : i + batch_size]).to(dtype) for i in range(0, len(chunk), batch_size)]
        emb = torch.cat(rows).contiguous()
        name = f"shard-{start // SHARD_SIZE:05d}.safetensors"
        _save_atomic(save_file, {"embeddings": emb}, folder / name)
        shards.append(name)
        total_bytes += emb.numel() * emb.element_size()
    empty = encode_text(tokenizer, text_encoder, [""]).to(dtype).contiguous()
    _save_atomic(save_file, {"embedding": empty}, folder / "empty.safetensors")
    if truncated:
        logger.warning("%d of %d prompts are longer than %d tokens and were truncated", truncated, len(prompts), limit)
    index = {"key": key, "count": len(prompts), "truncated": truncated, "shard_size": SHARD_SIZE, "shards": shards, "bytes": total_bytes, "source": prompts.source}
    atomic_write(index_file, json.dumps(index, indent=2) + "\n")  # written last: a cache without index.json is recomputed
    return PromptEmbeddings(folder, index)


def encode_text(tokenizer: Any, text_encoder: Any, texts: Sequence[str]) -> Any:
    """SD's text conditioning: pad/truncate to 77 tokens, last hidden state of the CLIP text model."""
    import torch

    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = (ids != tokenizer.pad_token_id).long().to(device)
    with torch.no_grad():
        return text_encoder(ids.to(device), attention_mask=mask)[0].float().cpu()


def _save_atomic(save_file: Any, tensors: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))  # a per-process temporary: ranks that encode at once never share one
