"""The two options every folder-writing command shares: where it writes (``out``) and whether it may start afresh
there (``overwrite``).

Every config of a command that writes a run folder inherits :class:`OutputFolder`, so both keys mean the same in
every command, YAML file and ``--set``; the runner passes them to :class:`~medprune.rundir.RunDir`. A config gives
``out`` its own default with :func:`output_folder` (``out: str = output_folder("runs/train")``): the field keeps its
place, its help text and its meaning, only the default changes.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo(OutputFolder):
...     out: str = output_folder("runs/demo")
...     epochs: int = 1
>>> Demo(), Demo(overwrite=True).overwrite
(Demo(out='runs/demo', overwrite=False, epochs=1), True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from medprune.config import option

__all__ = ["OutputFolder", "output_folder"]

OUT_HELP = (
    "output folder: one writer at a time; a folder made by the same config is resumed, one made by another config "
    "is refused unless overwrite"
)
OVERWRITE_HELP = (
    "start the output folder afresh: its content is moved into <out>/.old-<UTC time>/ (never deleted); without it, "
    "a folder made by another config is refused"
)


def output_folder(default: str, *, help: str = OUT_HELP, aliases: Iterable[str] = ()) -> Any:  # noqa: A002
    """The ``out`` field with a command's own default folder (and, where the command says more, its own help)."""
    return option(default, help=help, aliases=tuple(aliases))


@dataclass
class OutputFolder:
    """The output folder of a command (see the module docstring).

    Attributes:
        out: output folder; the same config resumes there, another config is refused unless ``overwrite``.
        overwrite: start the output folder afresh (its content is moved into ``<out>/.old-<UTC time>/``).
    """

    out: str = output_folder("runs/out")
    overwrite: bool = option(False, help=OVERWRITE_HELP)
