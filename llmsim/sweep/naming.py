"""Job directory names made from a job's overrides: readable, flat, bounded, unique."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")


def job_dirname(override_dirname: str) -> str:
    """Turn Hydra's ``override_dirname`` (``a=1,b=x``) into a safe directory name.

    ``/`` and other characters unsafe in file names become ``_`` (then a short hash of the
    original keeps distinct overrides distinct); names over 120 characters are cut and end in a
    hash; an empty override set is ``default``.
    """
    if not override_dirname:
        return "default"
    name = _UNSAFE.sub("_", override_dirname)
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    if name != override_dirname:
        name = f"{name}-{digest}"
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    if name.startswith("."):
        name = "_" + name[1:]
    return name


REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def register_resolvers() -> None:
    """Register ``${llmsim_dirname:...}`` (job dir names) and ``${llmsim_root:}`` (the checkout, for sweeps/)."""
    if not OmegaConf.has_resolver("llmsim_dirname"):
        OmegaConf.register_new_resolver("llmsim_dirname", lambda value: job_dirname(str(value or "")))
    if not OmegaConf.has_resolver("llmsim_root"):
        OmegaConf.register_new_resolver("llmsim_root", lambda: str(REPO_ROOT))
