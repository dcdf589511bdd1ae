"""swiftbrush_export: student -> ONNX folders -> TensorRT engines.

torch, onnx and optimum are imported inside the functions that need them, and
tensorrt only inside the engine build, so `swiftbrush --help` stays fast.
"""
