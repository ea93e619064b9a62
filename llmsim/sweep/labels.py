"""Short, readable names for swept keys and their values (legends, table headers, titles)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmsim.sweep.aggregate import CHOICE_SUFFIX

#: keys shown by a short name rather than their last dotted part
SHORT_NAMES = {
    "tensor_parallel_size": "TP",
    "pipeline_parallel_size": "PP",
    "data_parallel_size": "DP",
    "num_replicas": "replicas",
}
#: config groups (and the measured framework) whose value alone names them: ``vllm``, ``h100``
BARE_VALUES = ("framework", "hardware", "model", "workload", "experiment", "sweeps")
#: how each load axis labels a point: ``5/s``, ``c=16``, ``n=1000``
LOAD_POINT_LABELS = {"workload.rate": "{:g}/s", "workload.concurrency": "c={:g}", "workload.num_requests": "n={:g}"}


def key_name(key: str) -> str:
    """``framework.tensor_parallel_size`` -> ``TP``; ``framework.max_num_seqs`` -> ``max_num_seqs``."""
    if key.endswith(CHOICE_SUFFIX):
        key = key[: -len(CHOICE_SUFFIX)]
    last = key.rsplit(".", 1)[-1]
    return SHORT_NAMES.get(last, last)


def value_text(value: Any) -> str:
    """A value as a reader writes it: ``5`` rather than ``5.0``, ``none`` for a missing one."""
    if value is None or (isinstance(value, float) and value != value):
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label(key: str, value: Any) -> str:
    """``vllm``, ``h100``, ``TP=2``, ``max_num_seqs=64``, ``rate=10``."""
    bare = key[: -len(CHOICE_SUFFIX)] if key.endswith(CHOICE_SUFFIX) else key
    if bare in BARE_VALUES:
        return value_text(value)
    return f"{key_name(key)}={value_text(value)}"


def labels(keys: list[str], values: tuple[Any, ...]) -> str:
    """One label for a combination of values (``vllm TP=2``)."""
    return " ".join(label(k, v) for k, v in zip(keys, values, strict=True))


def load_point_label(key: str, value: Any) -> str:
    """The annotation of a point on a load axis: ``10/s`` for ``workload.rate=10``."""
    try:
        return LOAD_POINT_LABELS.get(key, "{:g}").format(float(value))
    except (TypeError, ValueError):
        return value_text(value)


def distinct_keys(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys (and ``framework``) that take several values in ``frame``, less a ``<group>_choice`` column
    that only repeats its ``<group>`` column (``framework_choice`` beside ``framework``)."""
    wanted = [k for k in keys if k in frame and frame[k].nunique(dropna=False) > 1]
    if "framework" in frame and frame["framework"].nunique() > 1 and "framework" not in wanted:
        wanted.append("framework")
    return [k for k in wanted if not _repeats(frame, k)]


def _repeats(frame: pd.DataFrame, key: str) -> bool:
    if not key.endswith(CHOICE_SUFFIX):
        return False
    plain = key[: -len(CHOICE_SUFFIX)]
    return plain in frame and (frame[plain].astype(str) == frame[key].astype(str)).all()
