"""Framework releases: which release a framework model follows, and the defaults that depend on it.

Each framework module holds one :class:`ReleaseTable`: rows keyed by the first release whose
defaults they describe, oldest first, each with the knob defaults that changed and where they were
read. ``framework.version`` names a release (``0.11.0``, ``v0.4.3``, ``1.0.0rc2``); it resolves
to the newest row at or before it. Unset, it means the newest release modelled.

A knob whose default moved between releases is declared ``None`` in its framework's schema ("null:
the release's default") and read with :meth:`AbstractLLMFramework.release_default`, which takes
the user's value when set and the row's otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.\-+]?(?:rc|post|dev|a|b)[\w.]*)?$", re.IGNORECASE)


def parse_release(version: str) -> tuple[int, int, int]:
    """``"0.11.0"`` -> ``(0, 11, 0)``; a leading ``v`` and pre/post-release suffixes are ignored.

    Raises ValueError for anything that is not a dotted release number.
    """
    match = _VERSION.match(version.strip())
    if match is None:
        raise ValueError(version)
    major, minor, patch = (int(part) if part is not None else 0 for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class Release:
    """One row: the defaults in force from ``version`` until the next row's release."""

    version: str
    defaults: Mapping[str, Any]
    #: where the defaults were read (repository file at a release or commit, docs page)
    source: str = ""

    @property
    def key(self) -> tuple[int, int, int]:
        """The release as a comparable tuple."""
        return parse_release(self.version)


@dataclass(frozen=True)
class ReleaseTable:
    """A framework's release rows, oldest first; every row names every version-dependent knob."""

    framework: str
    rows: tuple[Release, ...]
    #: the newest release modelled (the default of ``framework.version``); the last row's if empty
    newest: str = ""
    knobs: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError(f"{self.framework}: a release table needs at least one row")
        keys = [row.key for row in self.rows]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise ValueError(f"{self.framework}: release rows must be in increasing release order")
        knobs = frozenset(self.rows[0].defaults)
        for row in self.rows:
            if frozenset(row.defaults) != knobs:
                raise ValueError(f"{self.framework} {row.version}: every row must name the same knobs")
        object.__setattr__(self, "knobs", knobs)
        if not self.newest:
            object.__setattr__(self, "newest", self.rows[-1].version)
        elif parse_release(self.newest) < keys[-1]:
            raise ValueError(f"{self.framework}: newest release {self.newest} is older than the last row")

    @property
    def oldest(self) -> str:
        """The first release modelled."""
        return self.rows[0].version

    def allowed(self) -> str:
        """What ``version`` accepts, for error messages."""
        return (
            f"a {self.framework} release from {self.oldest} to {self.newest} as a string, e.g. '{self.newest}' "
            "(quote two-part releases: a bare 0.10 reads as the number 0.1)"
        )

    def check(self, version: Any) -> str | None:
        """``version`` if it names a modelled release (None stays None: the newest), else ValueError
        saying what is allowed (the schema turns it into a one-line error naming the key)."""
        if version is None:
            return None
        if not isinstance(version, str):
            raise ValueError(self.allowed())
        try:
            wanted = parse_release(version)
        except ValueError:
            raise ValueError(self.allowed()) from None
        if wanted < self.rows[0].key or wanted > parse_release(self.newest):
            raise ValueError(self.allowed())
        return version

    def row(self, version: str | None) -> Release:
        """The row in force at ``version`` (None: the newest release)."""
        wanted = parse_release(self.newest if version is None else version)
        chosen = self.rows[0]
        for row in self.rows:
            if row.key <= wanted:
                chosen = row
        return chosen

    def default(self, version: str | None, knob: str) -> Any:
        """The default of ``knob`` at ``version``."""
        return self.row(version).defaults[knob]
