"""swiftbrush: distil a multi-step SD-family teacher into a one-step student (VSD).

Heavy libraries (torch, diffusers, transformers) are imported by the modules
that use them, never here, so the CLI starts fast.
"""

__version__ = "0.1.0"
