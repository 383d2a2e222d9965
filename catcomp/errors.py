"""The catcomp exception family. Every message names the file and the reason."""

from __future__ import annotations


class CatcompError(Exception):
    """Base class of every error catcomp raises on bad input or bad state."""

    def __init__(self, message: str, path: object = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputImageError(CatcompError):
    """An input image cannot be read or is not acceptable."""


class FormatError(CatcompError):
    """A ``.ccz`` file is corrupt, truncated, or not a ``.ccz`` file at all."""


class ModelMismatchError(FormatError):
    """A ``.ccz`` file was made by a model that is not installed here."""


class ModelError(CatcompError):
    """A model directory is missing, incomplete, or fails its checksum."""
