"""Entry point of the ``medprune`` command.

Each command lives in ``medprune/cli/<command>.py`` and exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. User errors (:data:`USER_ERRORS`: ``ValueError`` and its ``ConfigError``, ``DatasetError``,
``RunDirError``; missing or unreadable files) are shown as one line naming the file / key / value, exit code 2, with
a traceback only under ``--verbose``. ``--quiet`` (or ``MEDPRUNE_QUIET=1``) silences progress bars and info logs;
both are accepted before or after the command name.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from tqdm.contrib.logging import logging_redirect_tqdm

from medprune import __version__, progress
from medprune.cli import compress, demo, evaluate, import_model, prune, quantize, report, score, study, sweep, train
from medprune.config import limits_scope
from medprune.rundir import is_disk_full

#: Sub-command name -> its module (``HELP``, ``add_arguments``, ``run``), in the order ``--help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "import": import_model,
    "train": train,
    "evaluate": evaluate,
    "score": score,
    "prune": prune,
    "compress": compress,
    "quantize": quantize,
    "sweep": sweep,
    "report": report,
    "demo": demo,
    "study": study,
}

logger = logging.getLogger("medprune")

#: Errors caused by what the user asked for (bad values, files, folders): one line and exit code 2, a traceback only
#: with ``--verbose``. ``ValueError`` covers ConfigError, DatasetError, RunDirError (locked or other config's folder).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


#: Python keywords in messages of library code (used from Python too) and what a CLI user types instead.
CLI_WORDS: dict[str, str] = {
    "pass in_channels=1": "pass --in-channels 1",
    "pass root=": "pass --data-root",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medprune", description="Interpretability-aware pruning of medical image classifiers."
    )
    parser.add_argument("--version", action="version", version=f"medprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: off)")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no info logs; also MEDPRUNE_QUIET=1 (default: off)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.quiet or progress.is_quiet()
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=progress.LOG_FORMAT, datefmt=progress.LOG_DATE_FORMAT)
    was_level = logger.level
    logger.setLevel(level)  # also when logging was configured before (an embedding program, tests)
    try:
        with progress.quiet(quiet), logging_redirect_tqdm(), limits_scope():  # --no-limits lifts them inside
            return int(args._run(args) or 0)
    except KeyError as error:  # str(KeyError("rate")) is "'rate'": say what it is
        return _user_error(args, f"missing key {error.args[0]!r}" if len(error.args) == 1 else str(error))
    except USER_ERRORS as error:
        return _user_error(args, str(error))
    except Exception as error:
        if is_disk_full(error):  # a full disk or quota met outside medprune's own writers (OSError, SafetensorError)
            where = getattr(error, "filename", None)
            place = f" writing {where}" if where else ""
            return _user_error(
                args,
                f"no space left on the device (or quota exceeded){place}: {error}; free some space and run the same "
                "command again: it resumes",
            )
        if isinstance(error, MemoryError) or "can't allocate memory" in str(error) or "out of memory" in str(error):
            return _user_error(args, f"out of memory: {error}; ask for less (a smaller --image-size, batch or model)")
        raise
    finally:
        logger.setLevel(was_level)


def _user_error(args: argparse.Namespace, text: str) -> int:
    """Print a user error as one line (the traceback first under ``--verbose``) and return exit code 2."""
    if args.verbose:
        traceback.print_exc()
    message = " ".join(text.splitlines())
    for python, cli in CLI_WORDS.items():
        message = message.replace(python, cli)
    print(f"medprune {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
