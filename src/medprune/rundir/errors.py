"""Errors of :mod:`medprune.rundir`: all ``ValueError`` (user errors: exit code 2, one line naming the folder)."""

from __future__ import annotations


class RunDirError(ValueError):
    """An output folder cannot be used (not writable, locked, made by another config); the message names it."""


class FolderLockedError(RunDirError):
    """Another process is writing the folder; the message names that process (pid, host, command, since)."""


class ConfigMismatchError(RunDirError):
    """The folder holds results of another config; the message lists the differing keys (``old -> new``)."""
