"""Command-line entry points that end a user mistake the way ``python -m llmsim`` does.

Every ``python -m llmsim.<tool>`` reports a bad command line, a bad override, a missing or
unreadable file or a file in the wrong layout as one line on stderr,
``llmsim: error: <what is wrong>``, and exits with status 2; no traceback. Anything else (a bug)
keeps its traceback. A tool adopts this in two steps::

    from llmsim.entrypoint import ArgumentParser, run_entry_point

    def _main(argv: list[str]) -> int:
        args = ArgumentParser(prog="python -m llmsim.tool").parse_args(argv)
        ...  # raise an LLMSimError (or ConfigError, or UsageError) for a user mistake
        return 0

    def main(argv: list[str] | None = None) -> int:
        return run_entry_point(_main, argv)

:class:`ArgumentParser` is argparse's parser whose usage errors (a missing argument, an unknown
flag, ``--steps abc``) become one :class:`UsageError` line that ends with the usage, instead of
argparse's usage block followed by ``prog: error: ...``. :func:`readable_file` checks an input
file and :func:`write_output` writes an output file, each with a one-line error naming the option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from llmsim.errors import LLMSimError, one_line

#: Exit status of a user mistake (the same as ``python -m llmsim`` and argparse).
USER_ERROR_EXIT = 2


class UsageError(LLMSimError):
    """The command line itself is wrong: a missing argument, an unknown flag, a flag's bad value."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: a usage mistake raises :class:`UsageError` (message, then usage)."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage block and exiting."""
        usage = one_line(self.format_usage()).removeprefix("usage: ")
        raise UsageError(f"{self.prog}: {message} (usage: {usage})")


def run_entry_point(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a user error (:func:`llmsim.cli.is_user_error`) prints one line and returns 2.

    ``argv`` defaults to ``sys.argv[1:]``. Errors that are not the user's propagate with their traceback.
    """
    from llmsim.cli import is_user_error, report_error

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(args)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        report_error(exc)
        return USER_ERROR_EXIT


def readable_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file, else a one-line error naming ``what`` it should have been."""
    from llmsim.errors import ConfigError

    if not path.exists():
        raise ConfigError(what, str(path), "no such file")
    if not path.is_file():
        raise ConfigError(what, str(path), "a file, not a directory" if path.is_dir() else "a regular file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(what, str(path), f"a readable file ({exc.strerror or exc})") from None
    return path


def write_output(path: Path, write: Callable[[Path], None], what: str = "--out") -> None:
    """Write a file the user named (atomically, through :func:`llmsim.outputs.atomic_write`).

    A path that cannot be written (a directory in the way, no permission, a full disk) is a one-line
    :class:`~llmsim.errors.OutputError` naming the option ``what`` and the path.
    """
    from llmsim.errors import OutputError
    from llmsim.outputs import atomic_write

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what}={str(path)!r} is not valid: a file path, not a directory")
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise OutputError(f"{what}={str(path)!r}: cannot write {path}: {exc.strerror or exc}") from None
