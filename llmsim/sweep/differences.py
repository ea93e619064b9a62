"""What tells two results apart: the config keys (and frameworks) that hold one value on each side but
not the same one, read from each run's ``.hydra/config.yaml`` (the swept keys where no config is kept)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from llmsim.sweep.labels import label
from llmsim.sweep.slos import load_yaml, run_dir_of
from llmsim.sweep.tables import ResultTable

#: config keys that never describe the system under test (output paths, the derived experiment name)
IGNORED_PREFIXES = ("hydra.", "metrics.output_", "metrics.allow_outside_run_dir", "name", "resume", "overwrite")
#: runs read per side (a big sweep's first ones are enough to see what stays fixed)
MAX_CONFIGS = 200
#: differences named in a title before ``+N more``
MAX_SHOWN = 4


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"framework": {"max_num_seqs": 64}}`` -> ``{"framework.max_num_seqs": 64}`` (lists kept whole, as text)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(node) if isinstance(node, list) else node}


def with_defaults_in_force(config: dict[str, Any], run_dir: Any) -> dict[str, Any]:
    """A flat run config whose null framework knobs read as the value the run used (``256 (default)``),
    from its ``summary.json`` (the ``run`` block's knobs in force); a config without one is unchanged."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        frameworks = summary["run"]["frameworks"]
    except (OSError, ValueError, KeyError, TypeError):
        return config
    if not isinstance(frameworks, dict) or len(frameworks) != 1:
        return config
    knobs = next(iter(frameworks.values())).get("knobs") or {}
    out = dict(config)
    for knob, value in knobs.items():
        key = f"framework.{knob}"
        if key in out and out[key] is None and value is not None:
            out[key] = f"{value} (default)"
    return out


def fixed_config(results: ResultTable) -> dict[str, Any]:
    """The config keys that hold one value across the runs of ``results`` (empty when none has a config)."""
    runs = list(dict.fromkeys(results.frame["run"].astype(str)))[:MAX_CONFIGS] if "run" in results.frame else []
    configs = []
    for run in runs:
        config = load_yaml(run_dir_of(results, run) / ".hydra" / "config.yaml")
        if config:
            # with ``frameworks`` (experiment=compare_frameworks) the single ``framework`` group is not used
            config = {k: v for k, v in config.items() if k != "framework" or "frameworks" not in config}
            configs.append(with_defaults_in_force(flatten(config), run_dir_of(results, run)))
    fixed: dict[str, Any] = {}
    for key, value in (configs[0] if configs else {}).items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        if all(key in c and c[key] == value for c in configs[1:]):
            fixed[key] = value
    for key in results.keys:  # what was swept, for a table without the configs beside it
        if key in results.frame and results.frame[key].nunique(dropna=False) == 1:
            fixed.setdefault(key, results.frame[key].iloc[0])
    return fixed


def _frameworks(results: ResultTable) -> str | None:
    if "framework" not in results.frame:
        return None
    return ",".join(sorted(results.frame["framework"].dropna().astype(str).unique()))


def differences(a: ResultTable, b: ResultTable) -> dict[str, tuple[Any, Any]]:
    """``{"framework": ("vllm", "trtllm"), "framework.max_num_seqs": (64, 256)}``: what A and B each hold
    fixed, at different values (the frameworks measured first)."""
    out: dict[str, tuple[Any, Any]] = {}
    fa, fb = _frameworks(a), _frameworks(b)
    if fa is not None and fb is not None and fa != fb:
        out["framework"] = (fa, fb)
    left, right = fixed_config(a), fixed_config(b)
    for key, value in left.items():
        if key in right and not _same(value, right[key]) and not key.startswith("framework.name"):
            out[key] = (value, right[key])
    return out


def _same(x: Any, y: Any) -> bool:
    if pd.isna(x) if not isinstance(x, list | dict) else False:
        return bool(pd.isna(y)) if not isinstance(y, list | dict) else False
    return bool(x == y)


def describe_side(differs: dict[str, tuple[Any, Any]], side: int) -> str:
    """`` (vllm, max_num_seqs=64)``: one side's values of the differences, a few at most."""
    items = [label(key, values[side]) for key, values in differs.items()]
    if not items:
        return ""
    more = f", +{len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return f" ({', '.join(items[:MAX_SHOWN])}{more})"
