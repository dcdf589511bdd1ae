"""FP8 for the benchmarks' UNet: torchao's float8 Linear layers, which layers take them, and what they cost.

    from benchmarks.fp8 import fp8_unavailable, quantise_fp8
    why = fp8_unavailable("cuda")            # None where torchao and an SM >= 8.9 GPU are there
    info = quantise_fp8(unet, "tensor")      # in place; what was quantised

Used by gpu_bench's fp8 case and its --toy-quality check.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

# --fp8-granularity -> the fp8 case's row name. torchao takes per-row scales only from bf16 weights.
FP8_ROWS = {"tensor": "fp8: per-tensor", "row": "fp8: per-row, bf16 UNet"}


def fp8_unavailable(device: str) -> str | None:
    """Why the fp8 case cannot run here (None: it can): torchao's float8 matmuls need a CUDA GPU of compute capability >= 8.9."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao==0.18.0; on a lent GPU machine carry its wheel in .whl/)"
    if not device.startswith("cuda"):
        return f"float8 matmuls need a CUDA GPU of compute capability >= 8.9 (torchao refuses others); this run is on {device}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"float8 matmuls need compute capability >= 8.9 (Ada, Hopper); {torch.cuda.get_device_name(device)} is {major}.{minor}"
    return None


def fp8_filter(granularity: str) -> Callable[[torch.nn.Module, str], bool]:
    """quantize_'s filter_fn: Linear layers torch._scaled_mm takes (in and out features multiples of 16).

    Left out: the time-embedding layers, which see one row per image (a matrix-vector product,
    where FP8 saves nothing and quantising the activation costs a pass), and, per-tensor, a
    128x128 weight: torchao 0.18 takes it for a 128x128-block-scaled one and its matmul asserts
    ("input_tensor must be 1x128 scaled"; the toy UNet has such layers, SD's has none).
    """

    def keep(module: torch.nn.Module, name: str) -> bool:
        if not isinstance(module, torch.nn.Linear) or module.in_features % 16 or module.out_features % 16:
            return False
        if name.startswith("time_embedding.") or name.endswith("time_emb_proj"):
            return False
        return not (granularity == "tensor" and module.in_features == module.out_features == 128)

    return keep


def fp8_unet_dtype(granularity: str, dtype: torch.dtype) -> torch.dtype:
    """The UNet's dtype for a granularity: torchao 0.18 asserts bf16 weights for per-row scales."""
    return torch.bfloat16 if granularity == "row" else dtype


def quantise_fp8(unet: torch.nn.Module, granularity: str) -> dict[str, Any]:
    """The UNet's fp8_filter Linear layers to float8 weights with float8 dynamic activations, in place; what was done."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8Tensor, PerRow, PerTensor, quantize_

    keep = fp8_filter(granularity)
    selected = [n for n, m in unet.named_modules() if keep(m, n)]
    # set_inductor_config=False: torchao would otherwise turn on coordinate-descent tuning for the whole
    # process, so the fp8 rows would be compiled differently from compile_graph (and take longer to).
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow() if granularity == "row" else PerTensor(), set_inductor_config=False)
    quantize_(unet, config, filter_fn=keep)
    done = [n for n, m in unet.named_modules() if isinstance(getattr(m, "weight", None), Float8Tensor)]
    assert done == selected, f"torchao quantised {len(done)} layers, {len(selected)} were selected"
    return {
        "granularity": granularity,
        "unet_dtype": str(unet.dtype).replace("torch.", ""),
        "use_fast_accum": bool(config.mm_config.use_fast_accum),
        "linear_quantised": len(done),
        "linear_total": sum(isinstance(m, torch.nn.Linear) for m in unet.modules()),
    }


def linear_flops(model: torch.nn.Module, keep: Callable[[torch.nn.Module, str], bool], fn: Callable[[], Any]) -> int:
    """FLOPs that one call of fn spends in model's Linear layers that `keep` selects (2 x rows x in x out each)."""
    total = 0

    def count(module: torch.nn.Module, args: tuple, _: Any) -> None:
        nonlocal total
        total += 2 * args[0].numel() * module.out_features

    handles = [m.register_forward_hook(count) for n, m in model.named_modules() if keep(m, n)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total

