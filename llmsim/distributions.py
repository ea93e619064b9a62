"""Random distributions for lengths and intervals, built from the seed's ``*_dist_config`` dicts.

Every spec is a mapping with a ``type`` and that type's parameters, plus three keys every type
accepts: ``is_int`` (round samples to whole numbers), ``min`` and ``max`` (clip samples).

=============  ==============================================  =====================================
type           parameters                                      mean
=============  ==============================================  =====================================
Constant       ``value``                                       value
Uniform        ``low``, ``high`` (inclusive ints if is_int)    (low + high) / 2
Normal         ``mean``, ``sigma``                             mean
LogNormal      ``mean``, ``sigma`` *or* ``mu``, ``sigma_log``  mean, or exp(mu + sigma_log^2 / 2)
Exponential    ``rate``                                        1 / rate
Gamma          ``shape`` and one of ``scale``, ``rate``,       shape * scale
               ``mean``
Poisson        ``mean``                                        mean
Zipf           ``s`` (exponent > 0), support ``1..n``          sum k^(1-s) / sum k^(-s)
               (``n``, or ``max`` when ``n`` is not given)
Empirical      ``values`` (+ optional ``weights``), or         weighted mean of the values
               ``path`` to a CSV/Parquet/JSONL file with
               ``column`` (+ optional ``weights_column``)
Mixture        ``components``: a list of specs, each with      weighted mean of the components
               an optional ``weight`` (default 1)
=============  ==============================================  =====================================

``LogNormal``'s ``mean`` and ``sigma`` are the mean and standard deviation of the value itself (not
of its logarithm): the seed's ``{"type": "LogNormal", "mean": 50, "sigma": 20}`` gives prompts
around 50 tokens with a spread of 20. Use ``mu``/``sigma_log`` to give the mean and standard
deviation of the underlying normal (the value's logarithm) instead.

``Normal`` and ``LogNormal`` are clipped at 0 (at 1 when ``is_int``) unless ``min`` says otherwise,
since lengths and intervals are never negative. :meth:`Distribution.mean` is the mean before
``min``/``max`` clipping and rounding; :meth:`Distribution.least` is the smallest value a sample
can take (token-length keys refuse a stated bound below 1, see :func:`llmsim.config.check_token_lengths`). Each distribution draws with a caller-supplied
``numpy.random.Generator`` so that every stream is seeded on its own (see :mod:`llmsim.rng`).
A bad spec raises a one-line :class:`~llmsim.errors.ConfigError` naming the key path.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from llmsim.errors import ConfigError

DISTRIBUTION_TYPES = (
    "Constant",
    "Empirical",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Mixture",
    "Normal",
    "Poisson",
    "Uniform",
    "Zipf",
)
COMMON_KEYS = frozenset({"type", "is_int", "min", "max"})
#: Largest Zipf support (its probabilities are tabulated).
MAX_ZIPF_SUPPORT = 10_000_000
#: Whole-number samples are held within this magnitude, so that converting them to int64 never
#: wraps around (a LogNormal with a wide sigma_log can draw 1e300 or inf).
MAX_INT_SAMPLE = 2.0**62


def _exp(x: float) -> float:
    """``math.exp`` that overflows to inf instead of raising."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ------------------------------------------------------------------------------------------------
# distributions
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Distribution(ABC):
    """A parsed distribution spec: draws floats (or ints when ``is_int``), clipped to [min, max]."""

    kind: ClassVar[str] = ""
    is_int: bool = False
    low_clip: float | None = None
    high_clip: float | None = None

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` values (float64, or int64 when ``is_int``)."""
        values = np.asarray(self._draw(rng, size), dtype=np.float64)
        if self.low_clip is not None or self.high_clip is not None:
            values = np.clip(values, self.low_clip, self.high_clip)
        if self.is_int:
            return np.rint(np.clip(values, -MAX_INT_SAMPLE, MAX_INT_SAMPLE)).astype(np.int64)
        return values

    @abstractmethod
    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Unclipped, unrounded samples."""

    def least(self) -> float:
        """The smallest value :meth:`sample` can return (after ``min`` clipping and rounding; may be -inf)."""
        low = self._support_low()
        if self.low_clip is not None:
            low = max(low, self.low_clip)
        if self.high_clip is not None:
            low = min(low, self.high_clip)
        return float(np.rint(low)) if self.is_int and math.isfinite(low) else low

    def _support_low(self) -> float:
        """The infimum of the unclipped distribution's support."""
        return 0.0

    @abstractmethod
    def mean(self) -> float:
        """The mean before clipping and rounding (used to rescale arrival processes)."""

    @abstractmethod
    def variance(self) -> float:
        """The variance before clipping and rounding."""


@dataclass(frozen=True, kw_only=True)
class Constant(Distribution):
    """Always ``value``."""

    kind: ClassVar[str] = "Constant"
    value: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.value, dtype=np.float64)

    def _support_low(self) -> float:
        return self.value

    def mean(self) -> float:
        return self.value

    def variance(self) -> float:
        return 0.0


@dataclass(frozen=True, kw_only=True)
class Uniform(Distribution):
    """Uniform on [low, high]; with ``is_int`` every whole number in the range is equally likely."""

    kind: ClassVar[str] = "Uniform"
    low: float
    high: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.is_int:  # inclusive integer range, as a reader of "low: 50, high: 200" expects
            return rng.integers(math.ceil(self.low), math.floor(self.high) + 1, size).astype(np.float64)
        return rng.uniform(self.low, self.high, size)

    def _support_low(self) -> float:
        return float(math.ceil(self.low)) if self.is_int else self.low

    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    def variance(self) -> float:
        width = self.high - self.low
        return width * width / 12.0


@dataclass(frozen=True, kw_only=True)
class Normal(Distribution):
    """Normal with the given ``mean`` and standard deviation ``sigma``."""

    kind: ClassVar[str] = "Normal"
    mu: float
    sigma: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.normal(self.mu, self.sigma, size)

    def _support_low(self) -> float:
        return -math.inf if self.sigma > 0 else self.mu

    def mean(self) -> float:
        return self.mu

    def variance(self) -> float:
        return self.sigma * self.sigma


@dataclass(frozen=True, kw_only=True)
class LogNormal(Distribution):
    """exp(Normal(mu, sigma_log)); parsed from the value's own mean and sigma or from mu, sigma_log."""

    kind: ClassVar[str] = "LogNormal"
    mu: float
    sigma_log: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.lognormal(self.mu, self.sigma_log, size)

    def mean(self) -> float:
        return _exp(self.mu + self.sigma_log * self.sigma_log / 2.0)

    def variance(self) -> float:
        square = self.sigma_log * self.sigma_log
        # log of expm1(s^2) * exp(2 mu + s^2), so that neither factor overflows on its own
        if square == 0:
            return 0.0
        log_spread = math.log(math.expm1(square)) if square < 700 else square
        return _exp(log_spread + 2.0 * self.mu + square)


@dataclass(frozen=True, kw_only=True)
class Exponential(Distribution):
    """Exponential with ``rate`` (mean 1 / rate): Poisson-process gaps."""

    kind: ClassVar[str] = "Exponential"
    rate: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(1.0 / self.rate, size)

    def mean(self) -> float:
        return 1.0 / self.rate

    def variance(self) -> float:
        return (1.0 / self.rate) * (1.0 / self.rate)


@dataclass(frozen=True, kw_only=True)
class Gamma(Distribution):
    """Gamma with ``shape`` k and ``scale`` θ: mean kθ, coefficient of variation 1/sqrt(k)."""

    kind: ClassVar[str] = "Gamma"
    shape: float
    scale: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.gamma(self.shape, self.scale, size)

    def mean(self) -> float:
        return self.shape * self.scale

    def variance(self) -> float:
        return self.shape * self.scale * self.scale


@dataclass(frozen=True, kw_only=True)
class Poisson(Distribution):
    """Poisson counts with the given mean."""

    kind: ClassVar[str] = "Poisson"
    lam: float

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.poisson(self.lam, size).astype(np.float64)

    def mean(self) -> float:
        return self.lam

    def variance(self) -> float:
        return self.lam


@dataclass(frozen=True, kw_only=True)
class Zipf(Distribution):
    """Bounded Zipf: P(k) proportional to k^-s for k = 1..n."""

    kind: ClassVar[str] = "Zipf"
    s: float
    n: int

    @cached_property
    def _pmf(self) -> np.ndarray:
        weights = np.arange(1, self.n + 1, dtype=np.float64) ** -self.s
        return weights / weights.sum()

    @cached_property
    def _cdf(self) -> np.ndarray:
        return np.cumsum(self._pmf)

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        index = np.searchsorted(self._cdf, rng.random(size) * self._cdf[-1], side="right")
        return np.minimum(index, self.n - 1).astype(np.float64) + 1.0

    def _support_low(self) -> float:
        return 1.0

    def mean(self) -> float:
        return float(np.dot(self._pmf, np.arange(1, self.n + 1, dtype=np.float64)))

    def variance(self) -> float:
        k = np.arange(1, self.n + 1, dtype=np.float64)
        return float(np.dot(self._pmf, k * k)) - self.mean() ** 2


@dataclass(frozen=True, kw_only=True)
class Empirical(Distribution):
    """Draws one of ``values`` with probability proportional to its weight."""

    kind: ClassVar[str] = "Empirical"
    values: tuple[float, ...]
    weights: tuple[float, ...]

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(self.values, dtype=np.float64)
        probs = np.asarray(self.weights, dtype=np.float64)
        return values, probs / probs.sum()

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        values, probs = self._arrays
        cdf = np.cumsum(probs)
        index = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
        return values[np.minimum(index, len(values) - 1)]

    def _support_low(self) -> float:
        values, probs = self._arrays
        return float(values[probs > 0].min())

    def mean(self) -> float:
        values, probs = self._arrays
        return float(np.dot(probs, values))

    def variance(self) -> float:
        values, probs = self._arrays
        return float(np.dot(probs, (values - self.mean()) ** 2))


@dataclass(frozen=True, kw_only=True)
class Mixture(Distribution):
    """Each sample comes from one component, chosen with probability proportional to its weight."""

    kind: ClassVar[str] = "Mixture"
    components: tuple[Distribution, ...]
    weights: tuple[float, ...]

    @cached_property
    def _probs(self) -> np.ndarray:
        weights = np.asarray(self.weights, dtype=np.float64)
        return weights / weights.sum()

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        chosen = rng.choice(len(self.components), size=size, p=self._probs)
        values = np.empty(size, dtype=np.float64)
        for index, component in enumerate(self.components):
            mask = chosen == index
            values[mask] = component.sample(rng, int(mask.sum()))
        return values

    def _support_low(self) -> float:
        return min(c.least() for c, p in zip(self.components, self._probs, strict=True) if p > 0)

    def mean(self) -> float:
        return float(sum(p * c.mean() for p, c in zip(self._probs, self.components, strict=True)))

    def variance(self) -> float:
        second = sum(p * (c.variance() + c.mean() ** 2) for p, c in zip(self._probs, self.components, strict=True))
        return float(second) - self.mean() ** 2


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
def _number(key: str, spec: Mapping[str, Any], name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if name not in spec:
        raise ConfigError(f"{key}.{name}", None, f"a {spec.get('type')} distribution needs '{name}'")
    return _check_number(f"{key}.{name}", spec[name], positive=positive, nonneg=nonneg)


def _check_number(key: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, "a finite number")
    if positive and value <= 0:
        raise ConfigError(key, value, "a number > 0")
    if nonneg and value < 0:
        raise ConfigError(key, value, "a number >= 0")
    return float(value)


def _only_one(key: str, spec: Mapping[str, Any], names: Sequence[str]) -> str:
    given = [name for name in names if name in spec]
    if len(given) != 1:
        kind = spec.get("type")
        bad = given[1] if len(given) > 1 else names[0]
        raise ConfigError(
            f"{key}.{bad}", spec.get(bad), f"a {kind} distribution takes exactly one of {', '.join(names)}"
        )
    return given[0]


def _parse_constant(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {"value": _number(key, spec, "value", nonneg=True)}


def _parse_uniform(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    low = _number(key, spec, "low", nonneg=True)
    high = _number(key, spec, "high", nonneg=True)
    if high < low:
        raise ConfigError(f"{key}.high", high, f"a number >= low ({low})")
    return {"low": low, "high": high}


def _parse_normal(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {"mu": _number(key, spec, "mean"), "sigma": _number(key, spec, "sigma", nonneg=True)}


def _parse_lognormal(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    log_form = [name for name in ("mu", "sigma_log") if name in spec]
    value_form = [name for name in ("mean", "sigma") if name in spec]
    if log_form and value_form:
        raise ConfigError(
            f"{key}.{value_form[0]}",
            spec[value_form[0]],
            "give either mean/sigma (of the value) or mu/sigma_log (of its logarithm), not both",
        )
    if log_form:
        return {"mu": _number(key, spec, "mu"), "sigma_log": _number(key, spec, "sigma_log", nonneg=True)}
    mean = _number(key, spec, "mean", positive=True)
    sigma = _number(key, spec, "sigma", nonneg=True)
    # Moment matching: the value's own mean and standard deviation -> parameters of its log.
    sigma_log_sq = math.log1p((sigma / mean) ** 2)
    return {"mu": math.log(mean) - sigma_log_sq / 2.0, "sigma_log": math.sqrt(sigma_log_sq)}


def _parse_exponential(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {"rate": _number(key, spec, "rate", positive=True)}


def _parse_gamma(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    shape = _number(key, spec, "shape", positive=True)
    given = _only_one(key, spec, ("scale", "rate", "mean"))
    value = _number(key, spec, given, positive=True)
    scale = {"scale": value, "rate": 1.0 / value, "mean": value / shape}[given]
    return {"shape": shape, "scale": scale}


def _parse_poisson(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {"lam": _number(key, spec, "mean", positive=True)}


def _parse_zipf(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    s = _number(key, spec, "s", positive=True)
    name = "n" if "n" in spec else "max"
    if name not in spec:
        raise ConfigError(f"{key}.n", None, "a Zipf distribution needs its support: n (values 1..n) or max")
    bound = _number(key, spec, name, positive=True)
    n = math.floor(bound)
    if name == "n" and n != bound:
        raise ConfigError(f"{key}.n", spec[name], "a whole number >= 1")
    if not 1 <= n <= MAX_ZIPF_SUPPORT:
        raise ConfigError(f"{key}.{name}", spec[name], f"a support of 1 to {MAX_ZIPF_SUPPORT:,} values")
    return {"s": s, "n": n}


def _number_list(key: str, values: Any, *, nonneg: bool = False) -> list[float]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(key, values, "a non-empty list of numbers")
    return [_check_number(f"{key}[{i}]", v, nonneg=nonneg) for i, v in enumerate(values)]


def _parse_empirical(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    if "path" in spec:
        for inline in ("values", "weights"):
            if inline in spec:
                raise ConfigError(f"{key}.{inline}", spec[inline], "give either inline values or a path, not both")
        values, weights = _empirical_from_file(spec, key)
    else:
        for file_key in ("column", "weights_column"):
            if file_key in spec:
                raise ConfigError(f"{key}.{file_key}", spec[file_key], "only used with path")
        if "values" not in spec:
            raise ConfigError(f"{key}.values", None, "an Empirical distribution needs values (or a path to a file)")
        values = _number_list(f"{key}.values", spec["values"])
        weights = _number_list(f"{key}.weights", spec["weights"], nonneg=True) if "weights" in spec else None
        if weights is not None and len(weights) != len(values):
            raise ConfigError(f"{key}.weights", spec["weights"], f"one weight per value ({len(values)})")
        if weights is not None and sum(weights) <= 0:
            raise ConfigError(f"{key}.weights", spec["weights"], "weights with a positive sum")
    if weights is None:
        unique, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
        values, weights = unique.tolist(), counts.astype(np.float64).tolist()
    return {"values": tuple(values), "weights": tuple(weights)}


def _empirical_from_file(spec: Mapping[str, Any], key: str) -> tuple[list[float], list[float] | None]:
    from llmsim.workload.tables import numeric_column, read_table, resolve_path

    path = resolve_path(spec["path"], f"{key}.path")
    table = read_table(path, f"{key}.path")
    columns = list(table.frame.columns)
    column = spec.get("column")
    if column is None:
        if len(columns) != 1:
            raise ConfigError(f"{key}.column", None, f"name the column of {path.name} to use: one of {columns}")
        column = columns[0]
    if column not in columns:
        raise ConfigError(f"{key}.column", column, f"a column of {path.name}: one of {columns}")
    values = numeric_column(table, column, f"{key}.path", allow_missing=False)
    weights = None
    weights_column = spec.get("weights_column")
    if weights_column is not None:
        if weights_column not in columns:
            raise ConfigError(f"{key}.weights_column", weights_column, f"a column of {path.name}: one of {columns}")
        weights_array = numeric_column(table, weights_column, f"{key}.path", allow_missing=False, nonneg=True)
        if weights_array.sum() <= 0:
            raise ConfigError(f"{key}.weights_column", weights_column, "weights with a positive sum")
        weights = weights_array.tolist()
    if len(values) == 0:
        raise ConfigError(f"{key}.path", spec["path"], f"column {column!r} of {path.name} is empty")
    return values.tolist(), weights


def _parse_mixture(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    components = spec.get("components")
    if isinstance(components, (str, bytes, Mapping)) or not isinstance(components, Sequence) or not components:
        raise ConfigError(f"{key}.components", components, "a non-empty list of distribution specs, each with a weight")
    parsed, weights = [], []
    for i, component in enumerate(components):
        ckey = f"{key}.components[{i}]"
        if not isinstance(component, Mapping):
            raise ConfigError(ckey, component, "a distribution spec such as {type: Constant, value: 1, weight: 0.5}")
        body = {k: v for k, v in component.items() if k != "weight"}
        weights.append(_check_number(f"{ckey}.weight", component.get("weight", 1.0), positive=True))
        parsed.append(parse_distribution(body, ckey))
    return {"components": tuple(parsed), "weights": tuple(weights)}


_PARSERS: dict[str, tuple[type[Distribution], frozenset[str], Callable[[Mapping[str, Any], str], dict[str, Any]]]] = {
    "Constant": (Constant, frozenset({"value"}), _parse_constant),
    "Uniform": (Uniform, frozenset({"low", "high"}), _parse_uniform),
    "Normal": (Normal, frozenset({"mean", "sigma"}), _parse_normal),
    "LogNormal": (LogNormal, frozenset({"mean", "sigma", "mu", "sigma_log"}), _parse_lognormal),
    "Exponential": (Exponential, frozenset({"rate"}), _parse_exponential),
    "Gamma": (Gamma, frozenset({"shape", "scale", "rate", "mean"}), _parse_gamma),
    "Poisson": (Poisson, frozenset({"mean"}), _parse_poisson),
    "Zipf": (Zipf, frozenset({"s", "n"}), _parse_zipf),
    "Empirical": (Empirical, frozenset({"values", "weights", "path", "column", "weights_column"}), _parse_empirical),
    "Mixture": (Mixture, frozenset({"components"}), _parse_mixture),
}


def parse_distribution(spec: Mapping[str, Any], key: str) -> Distribution:
    """Validate a ``*_dist_config`` mapping and build a :class:`Distribution`.

    ``key`` is the config path used in error messages, for example
    ``workload.client_profiles[0].prompt_tokens_dist_config``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(key, spec, "a mapping such as {type: Exponential, rate: 10}")
    kind = spec.get("type")
    if kind not in _PARSERS:
        raise ConfigError(f"{key}.type", kind, f"one of {', '.join(DISTRIBUTION_TYPES)}")
    cls, own_keys, parse = _PARSERS[kind]
    allowed = own_keys | COMMON_KEYS
    for extra in sorted(set(spec) - allowed, key=str):
        raise ConfigError(f"{key}.{extra}", spec[extra], f"{kind} takes {', '.join(sorted(allowed))}")
    is_int = spec.get("is_int", False)
    if not isinstance(is_int, bool):
        raise ConfigError(f"{key}.is_int", is_int, "true or false")
    params = parse(spec, key)
    low_clip = _number(key, spec, "min") if spec.get("min") is not None else None
    high_clip = _number(key, spec, "max") if spec.get("max") is not None else None
    if low_clip is not None and high_clip is not None and low_clip > high_clip:
        raise ConfigError(f"{key}.min", low_clip, f"a number <= max ({high_clip})")
    if kind in ("Normal", "LogNormal") and low_clip is None:
        low_clip = 1.0 if is_int else 0.0  # lengths and intervals are never negative
    return cls(is_int=is_int, low_clip=low_clip, high_clip=high_clip, **params)
