"""Job directory names made from a job's overrides: readable, flat, bounded, unique."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

#: longest job directory name (file systems allow 255 bytes; this leaves room for suffixes and copies)
MAX_NAME = 160
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")
#: Hydra's ``+``/``++`` in front of a key (at the start, or after the comma between overrides)
_ADDED_KEY = re.compile(r"(?:^|(?<=,))\++(?=[A-Za-z_])")


#: characters of the hash that keeps a shortened or rewritten name unique
HASH_CHARS = 10
#: the shortest a key or value is cut to (with ``..`` marking the cut)
MIN_PART = 3
#: values this short (a rate, an option name, a knob value) are cut only after every key has been
VALUE_FLOOR = 12
CUT = ".."


def split_overrides(override_dirname: str) -> list[tuple[str, str]]:
    """``a.b=1,c=[1,2]`` -> ``[("a.b", "1"), ("c", "[1,2]")]``: commas inside brackets or quotes stay."""
    items: list[str] = []
    depth, quote, current = 0, "", []
    for char in override_dirname:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    pairs: list[tuple[str, str]] = []
    for item in items:
        if "=" not in item and pairs:  # a comma the brackets did not explain: part of the previous value
            key, value = pairs[-1]
            pairs[-1] = (key, f"{value},{item}")
            continue
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return pairs


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, its start and end kept (``_data_tr..day_2.csv``)."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(CUT), 2)
    head = (keep + 1) // 2
    return text[:head] + CUT + text[len(text) - (keep - head) :]


def _joined(pairs: list[tuple[str, str]], key_limit: int, value_limit: int) -> str:
    return ",".join(f"{_cut(k, key_limit)}={_cut(v, value_limit)}" for k, v in pairs)


def _short_keys(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keys by their last dotted part (``workload.rate`` -> ``rate``) where that part names one key only."""
    last = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    return [(short if last.count(short) == 1 else k, v) for (k, v), short in zip(pairs, last, strict=True)]


def job_dirname(override_dirname: str) -> str:
    """Turn Hydra's ``override_dirname`` (``a=1,b=x``) into a safe directory name.

    ``/`` and other characters unsafe in file names become ``_`` (then a short hash of the original
    keeps distinct overrides distinct); an empty override set is ``default``. The ``+``/``++``
    prefixes of added keys are left out (``++framework.max_num_seqs=64`` names like
    ``framework.max_num_seqs=64``). A name over :data:`MAX_NAME` characters keeps every key and
    value, shortened: keys by their last dotted part (``rate=20``), then the longest values down to
    :data:`VALUE_FLOOR` characters, then the longest keys, then the values again, each cut in the
    middle (``..`` marks the cut, start and end stay); a hash of the full overrides ends it.
    """
    override_dirname = _ADDED_KEY.sub("", override_dirname)
    if not override_dirname:
        return "default"
    name = _UNSAFE.sub("_", override_dirname)
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:HASH_CHARS]
    if name != override_dirname or len(name) > MAX_NAME:
        name = _shortened(override_dirname, MAX_NAME - HASH_CHARS - 1) + f"-{digest}"
    if name.startswith("."):
        name = "_" + name[1:]
    return name


def _shortened(override_dirname: str, budget: int) -> str:
    """The overrides in at most ``budget`` safe characters, every key and value kept (cut if need be)."""
    pairs = [(_UNSAFE.sub("_", k), _UNSAFE.sub("_", v)) for k, v in split_overrides(override_dirname)]
    full = _joined(pairs, MAX_NAME, MAX_NAME)
    if len(full) <= budget:
        return full
    pairs = _short_keys(pairs)
    longest_key = max(len(k) for k, _ in pairs)
    longest_value = max(len(v) for _, v in pairs)
    # long values first (a path, a distribution), then keys, and only then the short values
    for value_limit in range(longest_value, VALUE_FLOOR - 1, -1):
        if len(text := _joined(pairs, longest_key, value_limit)) <= budget:
            return text
    floor = min(VALUE_FLOOR, longest_value)
    for key_limit in range(longest_key, MIN_PART - 1, -1):
        if len(text := _joined(pairs, key_limit, floor)) <= budget:
            return text
    for value_limit in range(floor, MIN_PART - 1, -1):
        if len(text := _joined(pairs, MIN_PART, value_limit)) <= budget:
            return text
    return _joined(pairs, MIN_PART, MIN_PART)[:budget]  # dozens of overrides: the hash tells them apart


REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def register_resolvers() -> None:
    """Register ``${llmsim_dirname:...}`` (job dir names) and ``${llmsim_root:}`` (the checkout, for sweeps/)."""
    if not OmegaConf.has_resolver("llmsim_dirname"):
        OmegaConf.register_new_resolver("llmsim_dirname", lambda value: job_dirname(str(value or "")))
    if not OmegaConf.has_resolver("llmsim_root"):
        OmegaConf.register_new_resolver("llmsim_root", lambda: str(REPO_ROOT))
