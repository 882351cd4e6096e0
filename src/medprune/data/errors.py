"""Errors raised by :mod:`medprune.data`; every message names the file, row, column or class at fault."""

from __future__ import annotations


class DatasetError(ValueError):
    """Bad dataset content or parameters (unknown name, missing column, label out of range, empty class, ...)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file or folder is missing; the message says what to put where."""


class ImageReadError(DatasetError):
    """An image file cannot be decoded (corrupt, truncated, not an image); the message names the file."""
