"""Random distributions for lengths and intervals, built from the seed's ``*_dist_config`` dicts.

Each distribution draws with a caller-supplied ``numpy.random.Generator`` so that every stream is
seeded on its own (see :mod:`llmsim.rng`). ``LogNormal``'s ``mean`` and ``sigma`` are the mean and
standard deviation of the value itself (not of its logarithm): the seed's
``{"type": "LogNormal", "mean": 50, "sigma": 20}`` gives prompts around 50 tokens. Use
``mu``/``sigma_log`` to give the parameters of the underlying normal instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsim.errors import ConfigError

DISTRIBUTION_TYPES = ("Constant", "Exponential", "LogNormal", "Normal", "Uniform")


@dataclass(frozen=True)
class Distribution:
    """A parsed distribution spec: draws floats (or ints when ``is_int``), clipped to [min, max]."""

    kind: str
    params: tuple[tuple[str, float], ...]
    is_int: bool = False
    low_clip: float | None = None
    high_clip: float | None = None

    def param(self, name: str) -> float:
        """The value of one parameter of the spec."""
        return dict(self.params)[name]

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` values (float64, or int64 when ``is_int``)."""
        p = dict(self.params)
        if self.kind == "Constant":
            values = np.full(size, p["value"], dtype=np.float64)
        elif self.kind == "Exponential":
            values = rng.exponential(1.0 / p["rate"], size)
        elif self.kind == "Uniform" and self.is_int:
            # Inclusive integer range, as a reader of "low: 50, high: 200" expects.
            values = rng.integers(math.ceil(p["low"]), math.floor(p["high"]) + 1, size).astype(np.float64)
        elif self.kind == "Uniform":
            values = rng.uniform(p["low"], p["high"], size)
        elif self.kind == "Normal":
            values = rng.normal(p["mean"], p["sigma"], size)
        elif self.kind == "LogNormal":
            values = rng.lognormal(p["mu"], p["sigma_log"], size)
        else:  # pragma: no cover - guarded by parse_distribution
            raise AssertionError(self.kind)
        if self.low_clip is not None or self.high_clip is not None:
            values = np.clip(values, self.low_clip, self.high_clip)
        if self.is_int:
            return np.rint(values).astype(np.int64)
        return values.astype(np.float64)

    def mean(self) -> float:
        """The mean of the unclipped distribution (used to rescale arrival processes)."""
        p = dict(self.params)
        if self.kind == "Constant":
            return p["value"]
        if self.kind == "Exponential":
            return 1.0 / p["rate"]
        if self.kind == "Uniform":
            return (p["low"] + p["high"]) / 2.0
        if self.kind == "Normal":
            return p["mean"]
        return math.exp(p["mu"] + p["sigma_log"] ** 2 / 2.0)


def _number(key: str, spec: Mapping[str, Any], name: str, *, positive: bool, nonneg: bool = False) -> float:
    if name not in spec:
        raise ConfigError(f"{key}.{name}", None, f"a {spec.get('type')} distribution needs '{name}'")
    value = spec[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}.{name}", value, "a finite number")
    if positive and value <= 0:
        raise ConfigError(f"{key}.{name}", value, "a number > 0")
    if nonneg and value < 0:
        raise ConfigError(f"{key}.{name}", value, "a number >= 0")
    return float(value)


def parse_distribution(spec: Mapping[str, Any], key: str) -> Distribution:
    """Validate a ``*_dist_config`` mapping and build a :class:`Distribution`.

    ``key`` is the config path used in error messages, for example
    ``workload.client_profiles[0].prompt_tokens_dist_config``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(key, spec, "a mapping such as {type: Exponential, rate: 10}")
    kind = spec.get("type")
    if kind not in DISTRIBUTION_TYPES:
        raise ConfigError(f"{key}.type", kind, f"one of {', '.join(DISTRIBUTION_TYPES)}")
    allowed = {
        "Constant": {"value"},
        "Exponential": {"rate"},
        "Uniform": {"low", "high"},
        "Normal": {"mean", "sigma"},
        "LogNormal": {"mean", "sigma", "mu", "sigma_log"},
    }[kind] | {"type", "is_int", "min", "max"}
    for extra in sorted(set(spec) - allowed):
        raise ConfigError(f"{key}.{extra}", spec[extra], f"{kind} takes {', '.join(sorted(allowed))}")
    is_int = spec.get("is_int", False)
    if not isinstance(is_int, bool):
        raise ConfigError(f"{key}.is_int", is_int, "true or false")
    params: dict[str, float]
    if kind == "Constant":
        params = {"value": _number(key, spec, "value", positive=False, nonneg=True)}
    elif kind == "Exponential":
        params = {"rate": _number(key, spec, "rate", positive=True)}
    elif kind == "Uniform":
        low = _number(key, spec, "low", positive=False, nonneg=True)
        high = _number(key, spec, "high", positive=False, nonneg=True)
        if high < low:
            raise ConfigError(f"{key}.high", high, f"a number >= low ({low})")
        params = {"low": low, "high": high}
    elif kind == "Normal":
        params = {
            "mean": _number(key, spec, "mean", positive=False),
            "sigma": _number(key, spec, "sigma", positive=False, nonneg=True),
        }
    else:
        params = _lognormal_params(spec, key)
    low_clip = spec.get("min")
    high_clip = spec.get("max")
    if low_clip is not None:
        low_clip = _number(key, spec, "min", positive=False)
    if high_clip is not None:
        high_clip = _number(key, spec, "max", positive=False)
    if low_clip is not None and high_clip is not None and low_clip > high_clip:
        raise ConfigError(f"{key}.min", low_clip, f"a number <= max ({high_clip})")
    if kind in ("Normal", "LogNormal") and low_clip is None:
        low_clip = 1.0 if is_int else 0.0  # lengths and intervals are never negative
    return Distribution(kind, tuple(sorted(params.items())), is_int, low_clip, high_clip)


def _lognormal_params(spec: Mapping[str, Any], key: str) -> dict[str, float]:
    if "mu" in spec or "sigma_log" in spec:
        return {
            "mu": _number(key, spec, "mu", positive=False),
            "sigma_log": _number(key, spec, "sigma_log", positive=False, nonneg=True),
        }
    mean = _number(key, spec, "mean", positive=True)
    sigma = _number(key, spec, "sigma", positive=False, nonneg=True)
    # Moment matching: the value's own mean and standard deviation -> parameters of its log.
    sigma_log_sq = math.log1p((sigma / mean) ** 2)
    return {"mu": math.log(mean) - sigma_log_sq / 2.0, "sigma_log": math.sqrt(sigma_log_sq)}
