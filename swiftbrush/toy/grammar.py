"""The toy world's caption grammar: colour x shape x background colour.

Small on purpose: the whole SwiftBrush chain (teacher, distillation, export,
runtime) must train and run offline on a 2-core CPU, and each caption still has
a spread of images because position and size are drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

# RGB of each named colour; renders jitter these a little.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (18, 18, 18),
    "white": (236, 236, 236),
    "gray": (128, 128, 128),
}

COLOUR_NAMES: tuple[str, ...] = tuple(SHAPE_COLOURS)
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

# Every word a caption can contain, for the tokenizer vocabulary.
WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(["a", "on", "background", *COLOUR_NAMES, *SHAPES, *BACKGROUND_NAMES])
)


@dataclass(frozen=True)
class Caption:
    """One point of the grammar; `text` is what the text encoder reads."""

    colour: str
    shape: str
    background: str

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"

    @property
    def labels(self) -> tuple[int, int, int]:
        """Class indices (colour, shape, background) for the evaluator."""
        return (
            COLOUR_NAMES.index(self.colour),
            SHAPES.index(self.shape),
            BACKGROUND_NAMES.index(self.background),
        )


def all_captions() -> list[Caption]:
    """The full caption grid, in a fixed order."""
    return [Caption(c, s, b) for c, s, b in product(COLOUR_NAMES, SHAPES, BACKGROUND_NAMES)]


def parse_caption(text: str) -> Caption | None:
    """Read a caption back into its attributes; None if it is not in the grammar.

    Tolerates case and extra whitespace so that prompts typed by a user still
    score, but not other word orders.
    """
    words = text.lower().split()
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        return None
    colour, shape, background = words[1], words[2], words[5]
    if colour not in SHAPE_COLOURS or shape not in SHAPES or background not in BACKGROUNDS:
        return None
    return Caption(colour, shape, background)
