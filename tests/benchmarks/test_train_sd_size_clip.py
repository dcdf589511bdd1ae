"""benchmarks/train_sd_size.py's clamped CLIP loss part (--recipe swiftbrush-v2) at tiny size on CPU."""

from __future__ import annotations

from benchmarks.train_sd_size import run_clip_part


def test_clip_part_runs_forward_and_backward_at_tiny_size():
    result = run_clip_part(tiny=True, batch_size=2, steps=1, warmup=0, mixed_precision="no", gradient_checkpointing=True)
    assert result["it_per_s"] > 0 and result["image_size"] == 32 and result["batch_size"] == 2
    assert result["peak_memory_gib"] is None  # CPU: no CUDA allocator to read


def test_the_v2_step_trains_with_the_clip_loss_at_tiny_size():
    """--recipe swiftbrush-v2 times the trainer's own v2 step: AdamW, LoRA r64/a128, the CLIP term inside the student update."""
    from benchmarks.train_sd_size import run

    result = run(tiny=True, batch_size=2, steps=1, warmup=0, mixed_precision="no", gradient_checkpointing=True, recipe="swiftbrush-v2")
    assert (result["recipe"], result["optimizer"], result["lora_rank"], result["clip_loss"]) == ("swiftbrush-v2", "adamw", 64, True)
    assert result["finite_steps"] == 1
