"""The interface every backend implements, and the error for a missing one."""

from __future__ import annotations

from typing import Any

import numpy as np

from swiftbrush_runtime.errors import SwiftBrushError
from swiftbrush_runtime.images import to_uint8


class BackendUnavailableError(SwiftBrushError):
    """A backend whose library is not installed or cannot use the requested device."""


class Backend:
    """Three stages on numpy arrays; subclasses may chain them on device in `run`.

    Shapes: ids [B, 77] int32 -> embeddings [B, 77, D] float32; noise [B, C, h, w]
    float32 + embeddings -> latent [B, C, h, w] float32 (x0 / scaling_factor, ready
    for the decoder); latent -> images [B, 3, H, W] float32 in about [-1, 1].
    """

    name = "base"
    device = "cpu"
    static_batch: int | None = None  # graphs/engines built for exactly this batch
    max_batch: int | None = None  # largest batch one call may take

    def encode(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def denoise(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, latent: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """UNet then decoder; GPU backends override this to keep data on the device."""
        return self.decode(self.denoise(noise, embeddings))

    def run_uint8(self, noise: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """`run` as uint8 [B, H, W, 3] images (what `generate` returns by default).

        A GPU backend that can convert on the device overrides this: a quarter of the
        bytes then crosses to the host.
        """
        return to_uint8(self.run(noise, embeddings))

    def synchronize(self) -> None:
        """Wait for queued device work (for timing); CPU backends return at once."""

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device}

    def close(self) -> None:
        """Free sessions, engines and device memory."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
