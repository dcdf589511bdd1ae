"""swiftbrush: distil a multi-step SD-family teacher into a one-step student (VSD).

Heavy libraries (torch, diffusers, transformers) are imported by the modules
that use them, never here, so the CLI starts fast.
"""

import logging as _logging

__version__ = "0.1.0"


class _DropOptimumNamespaceWarning(_logging.Filter):
    """diffusers warns "Multiple distributions found for package optimum" on every import,
    because optimum and optimum-onnx both ship the `optimum` namespace (which is how
    optimum-onnx is meant to be installed). Drop that one line, nothing else."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "Multiple distributions found for package" not in record.getMessage()


# diffusers' loggers are plain `logging` loggers, so a filter set before diffusers is imported applies.
_logging.getLogger("diffusers.utils.import_utils").addFilter(_DropOptimumNamespaceWarning())
