"""Command-line plumbing of the sweep tools (``aggregate``, ``compare``, ``plot``): a user's mistake ends
with one line, ``llmsim: error: ...``, and exit status 2, as ``python -m llmsim`` does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from llmsim.entrypoint import USER_ERROR_EXIT, UsageError
from llmsim.entrypoint import ArgumentParser as OneLineParser
from llmsim.errors import LLMSimError


def fail(message: str) -> NoReturn:
    """Print ``llmsim: error: MESSAGE`` on one line (as every entry point does) and exit 2."""
    from llmsim.cli import report_error

    report_error(message)
    raise SystemExit(USER_ERROR_EXIT)


class ArgumentParser(OneLineParser):
    """:class:`llmsim.entrypoint.ArgumentParser`, whose one-line usage error is reported at once: the sweep
    tools parse their command line before :func:`run_entry_point` takes over."""

    def error(self, message: str) -> NoReturn:
        """Report a command-line mistake as one ``llmsim: error:`` line and exit 2."""
        try:
            super().error(message)
        except UsageError as exc:
            fail(str(exc))


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
