"""Typed errors shared by every SwiftBrush package.

They live in the runtime, the lowest layer (no torch), so the training and
export packages can subclass them and one CLI handler covers all three: a
`SwiftBrushError` is a user mistake, printed as one line with exit status 2.
"""


class SwiftBrushError(Exception):
    """A user-facing error: bad input, missing files, an unsupported model."""


class InvalidModelError(SwiftBrushError):
    """A model folder or id that is missing, incomplete, corrupted or of the wrong kind."""


class InvalidArgumentError(SwiftBrushError):
    """A flag or argument value outside what is allowed."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name if empty): the cause in a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
