"""The training package's typed errors, built on the runtime's shared base.

Every user mistake raises a subclass of `SwiftBrushError` with one line that
names the problem and the fix; the CLI prints that line and exits 2.
"""

from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, SwiftBrushError


class UnsupportedModelError(InvalidModelError):
    """A valid diffusers model that this toolkit cannot distill (e.g. v-prediction, SDXL)."""


class OfflineError(InvalidModelError):
    """A hub id was given but the hub cannot be reached and the model is not cached."""


__all__ = ["InvalidArgumentError", "InvalidModelError", "OfflineError", "SwiftBrushError", "UnsupportedModelError"]
