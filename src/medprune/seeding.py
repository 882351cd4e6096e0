"""Deprecated home of :func:`seed_everything`; it lives in :mod:`medprune.runtime`."""

from medprune.runtime import seed_everything

__all__ = ["seed_everything"]
