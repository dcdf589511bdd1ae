"""swiftbrush_runtime: the slim, torch-free runtime for one-step students.

It imports only numpy, Pillow and tokenizers at the top level; TensorRT, ONNX
Runtime and torch are imported inside their backends.
"""

from swiftbrush_runtime.errors import InvalidArgumentError, InvalidModelError, SwiftBrushError

__all__ = ["InvalidArgumentError", "InvalidModelError", "SwiftBrushError"]
