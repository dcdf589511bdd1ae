"""One spec per exported graph: names, dynamic axes, sample inputs, min/opt/max shapes.

    swiftbrush export onnx --student DIR --out DIR [--batch B] [--height H] [--width W] [--dynamic]

The spec is the single description a graph carries through the chain: the ONNX
export uses its names, dynamic axes and sample inputs; the manifest records its
min/opt/max shapes; `export engine` turns those into a TensorRT optimisation
profile without re-deriving anything. Sample inputs need torch; everything else
here is plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Tuple

from swiftbrush_runtime.errors import InvalidArgumentError
from swiftbrush_runtime.onestep import MAX_SIDE

TEXT_LEN = 77  # SD's text length (CLIP's 77 positions)
Profile = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]  # (min, opt, max) shape of one input


def _triple(shapes: list[tuple[int, ...]]) -> Profile:
    assert len(shapes) == 3, shapes
    return shapes[0], shapes[1], shapes[2]


@dataclass(frozen=True)
class Shapes:
    """Batch and resolution the graphs are exported for."""

    batch: int  # the batch the static graphs take; the dynamic graphs' largest batch
    height: int  # pixels
    width: int  # pixels
    dynamic: bool  # dynamic batch (1..batch) and resolution (half to double) axes
    vae_scale_factor: int = 8

    @property
    def latent(self) -> tuple[int, int]:
        return self.height // self.vae_scale_factor, self.width // self.vae_scale_factor

    def batch_range(self) -> tuple[int, int, int]:
        return (1, self.batch, self.batch) if self.dynamic else (self.batch,) * 3

    def latent_range(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        h, w = self.latent
        if not self.dynamic:
            return (h, w), (h, w), (h, w)
        return (max(1, h // 2), max(1, w // 2)), (h, w), (2 * h, 2 * w)


def check_shapes(batch: int, height: int, width: int, dynamic: bool, vae_scale_factor: int = 8) -> Shapes:
    """Validate the flags before any model loads."""
    if batch < 1 or batch > 64:
        raise InvalidArgumentError(f"--batch must be between 1 and 64, got {batch}")
    for flag, value in (("--height", height), ("--width", width)):
        if value <= 0 or value % vae_scale_factor:
            raise InvalidArgumentError(f"{flag} must be a positive multiple of {vae_scale_factor}, got {value}")
        if value > MAX_SIDE:
            raise InvalidArgumentError(f"{flag} must be at most {MAX_SIDE}, got {value}")
    return Shapes(batch, height, width, dynamic, vae_scale_factor)


@dataclass(frozen=True)
class GraphSpec:
    """What one graph takes and gives; `profile` holds (min, opt, max) per input."""

    name: str  # folder in the ONNX directory, e.g. "unet"
    inputs: dict[str, str]  # input name -> dtype ("float32", "int32")
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]  # torch.onnx.export's dynamic_axes (empty when static)
    profile: dict[str, Profile]
    fp32_nodes: tuple[str, ...] = field(default=())  # node-name prefixes kept fp32 in fp16 graphs
    fp32_graph: bool = False  # the whole graph stays fp32 in fp16 exports
    # Inputs declared but unused, so optimum's ORT pipeline classes accept the graph
    # (its ORTUnet requires a `timestep` input); `export engine` strips them.
    unused_inputs: dict[str, str] = field(default_factory=dict)

    def sample_inputs(self, seed: int = 0) -> dict[str, Any]:
        """Random inputs at the opt shape (torch tensors), for export and parity checks."""
        import torch

        g = torch.Generator().manual_seed(seed)
        out: dict[str, Any] = {}
        for name, dtype in self.inputs.items():
            shape = self.profile[name][1]
            if dtype.startswith("int"):
                out[name] = torch.randint(0, 100, shape, generator=g, dtype=getattr(torch, dtype))
            else:
                out[name] = torch.randn(shape, generator=g, dtype=torch.float32)
        return out


def _dyn(shapes: Shapes, axes: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
    return axes if shapes.dynamic else {}


def text_encoder_spec(shapes: Shapes, keep_fp32: bool = False) -> GraphSpec:
    """`keep_fp32`: the text encoder stays fp32 in fp16 exports (policy "auto", see FP32_POLICIES)."""
    b = shapes.batch_range()
    return GraphSpec(
        name="text_encoder",
        inputs={"input_ids": "int32"},
        outputs=("last_hidden_state", "pooler_output"),
        dynamic_axes=_dyn(shapes, {"input_ids": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}, "pooler_output": {0: "batch_size"}}),
        profile={"input_ids": _triple([(n, TEXT_LEN) for n in b])},
        fp32_graph=keep_fp32,
    )


# Nodes of the one-step UNet kept fp32 in fp16 graphs, by policy. Why: at T = 999 the
# student's eps is almost its input noise z, and x0 = (z - sqrt(1 - a_T) eps) / sqrt(a_T)
# multiplies any error in eps by 1/sqrt(a_T) (~15 for SD's schedule). fp16 rounding along
# the path that carries z to the output (conv_in, the skip connections into the last,
# full-resolution up block, the output head) then shows in the image, several times more
# with only norms/softmax fp32 ("none") than with that path fp32 ("auto"), which costs
# the last up block's fp16 speed. "auto" also keeps the text encoder fp32: its fp16
# rounding alone moves a toy student's image by about as much as the UNet's, and together
# they exceed the 2/255 bar. It runs once per new prompt (the runtime caches embeddings), so
# fp32 there costs little in time, but doubles its weights (over 1.3 GB at SD 2.1 size):
# "unet" keeps only the UNet's path fp32 for memory-bound boards (Orin Nano), and "none"
# converts everything. The measurements: benchmarks/RESULTS.md, "Figures behind settings".
FP32_POLICIES = ("auto", "unet", "none")


def unet_fp32_nodes(policy: str, n_up_blocks: int) -> tuple[str, ...]:
    """Node-name prefixes kept fp32: the x0 tail always; "auto" and "unet" add the z-carrying path.

    Any other value is a comma-separated list of extra prefixes (e.g. "/unet/up_blocks.3/").
    """
    tail = ("/x0/",)
    if policy == "none":
        return tail
    if policy in ("auto", "unet"):
        return tail + ("/unet/conv_in", f"/unet/up_blocks.{n_up_blocks - 1}/", "/unet/conv_norm_out", "/unet/conv_act", "/unet/conv_out")
    extra = tuple(p.strip() for p in policy.split(",") if p.strip())
    if not extra or not all(p.startswith("/") for p in extra):
        raise InvalidArgumentError(f"--fp32-layers must be auto, unet, none or comma-separated node-name prefixes starting with '/', got {policy!r}")
    return tail + extra


def fp32_layers(policy: str, n_up_blocks: int) -> dict[str, tuple[str, ...]]:
    """What an --fp32-layers policy keeps fp32 in fp16 graphs, per graph: node-name prefixes, ("*",) for all of it."""
    return {"text_encoder": ("*",) if policy == "auto" else (), "unet": unet_fp32_nodes(policy, n_up_blocks)}


def unet_spec(shapes: Shapes, latent_channels: int, text_width: int, fp32_nodes: tuple[str, ...] = ("/x0/",)) -> GraphSpec:
    """The one-step student: (noise, text) -> decoder-ready latent, T fixed, no CFG batch."""
    b, lat = shapes.batch_range(), shapes.latent_range()
    return GraphSpec(
        name="unet",
        inputs={"sample": "float32", "encoder_hidden_states": "float32"},
        outputs=("out_sample",),  # optimum's name for the UNet output (here: the decoder-ready latent)
        dynamic_axes=_dyn(
            shapes,
            {
                "sample": {0: "batch_size", 2: "height", 3: "width"},
                "encoder_hidden_states": {0: "batch_size"},
                "out_sample": {0: "batch_size", 2: "height", 3: "width"},
            },
        ),
        profile={
            "sample": _triple([(n, latent_channels, *hw) for n, hw in zip(b, lat)]),
            "encoder_hidden_states": _triple([(n, TEXT_LEN, text_width) for n in b]),
        },
        fp32_nodes=fp32_nodes,
        unused_inputs={"timestep": "int64"},
    )


def decoder_spec(shapes: Shapes, latent_channels: int, name: str = "vae_decoder") -> GraphSpec:
    b, lat = shapes.batch_range(), shapes.latent_range()
    return GraphSpec(
        name=name,
        inputs={"latent_sample": "float32"},
        outputs=("sample",),
        dynamic_axes=_dyn(
            shapes,
            {
                "latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
                "sample": {0: "batch_size", 2: "height", 3: "width"},
            },
        ),
        profile={"latent_sample": _triple([(n, latent_channels, *hw) for n, hw in zip(b, lat)])},
    )
