"""swiftbrush_runtime: the slim, torch-free runtime for one-step students.

    from swiftbrush_runtime import Generator
    gen = Generator.load("out/onnx")            # or an engine dir, or a student dir (torch)
    images = gen(["a red circle on a blue background"], seed=0)

It imports only numpy, Pillow and tokenizers at the top level; TensorRT, ONNX
Runtime and torch are imported inside their backends.
"""

from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, SwiftBrushError
from swiftbrush_runtime.generator import Generator

__all__ = ["Generator", "InvalidArgumentError", "InvalidModelError", "SwiftBrushError"]
