"""Command-line plumbing of the sweep tools (``aggregate``, ``compare``, ``plot``): a user's mistake ends
with one line, ``llmsim: error: ...``, and exit status 2, as ``python -m llmsim`` does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from llmsim.errors import LLMSimError, one_line

USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print ``llmsim: error: MESSAGE`` on one line and exit 2."""
    print(f"llmsim: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_ERROR)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors (unknown option, bad choice, missing argument) as one ``llmsim: error:`` line."""

    def error(self, message: str) -> NoReturn:
        """Report a command-line mistake the llmsim way (the usage stays in ``--help``)."""
        fail(f"{message} (see {self.prog} --help)")


def run_entry_point(body: Callable[[], int], *paths: Path) -> int:
    """Run ``body`` after checking ``paths`` exist; a user error (:class:`LLMSimError`, an unreadable or
    foreign file) becomes one line and exit 2 instead of a traceback."""
    import pyarrow as pa

    for path in paths:
        if not path.exists():
            fail(f"{path} does not exist")
    try:
        return body()
    except LLMSimError as exc:
        fail(str(exc))
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        where = ", ".join(str(p) for p in paths)
        fail(f"cannot read {where} as llmsim results: {exc}")
    except PermissionError as exc:
        fail(f"{exc.filename}: permission denied")
    except OSError as exc:
        fail(f"{exc.filename or ', '.join(str(p) for p in paths)}: {exc.strerror or exc}")
