"""Open-loop arrival processes: renewal gaps at a constant rate, or a rate that varies over time.

A constant rate draws inter-arrival gaps directly: the profile's own distribution, rescaled to
``workload.rate``, or, with ``workload.burstiness`` b, Gamma gaps of shape b and scale 1/(rate b)
as ``vllm bench serve`` draws them (b = 1 is a Poisson process; b < 1 is burstier).

A time-varying rate ``rate(t)`` (``workload.rate_schedule``: piecewise-constant steps or a diurnal
curve) is applied by *time rescaling*: a unit-rate renewal process with the same gap shape is drawn
in "operational time" u and every arrival is mapped to the real time t where the cumulative
intensity Λ(t) = ∫ rate reaches u. For Poisson gaps this is exactly the non-homogeneous Poisson
process with intensity rate(t); for Gamma gaps it keeps the burstiness at every rate. Everything
is computed in closed form or by vectorised bisection: deterministic, no thinning rejections.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsim.distributions import Distribution, Exponential, Gamma, _check_number
from llmsim.errors import ConfigError

#: Most arrivals one process may draw before its horizon: past it the gaps are degenerate (a Gamma of
#: shape 1e-9 draws 0 s almost always) and drawing on would exhaust memory. Equal to the config's
#: limit on sessions per run (:data:`llmsim.config.MAX_SESSIONS`).
MAX_ARRIVALS = 10_000_000


class TooManyArrivals(Exception):
    """Raised by :func:`renewal_times` when more than ``limit`` arrivals fall before the horizon."""

    def __init__(self, limit: int, reached_s: float) -> None:
        self.limit = limit
        self.reached_s = reached_s
        super().__init__(f"more than {limit:,} arrivals before {reached_s:g}")


class RateSchedule(ABC):
    """An arrival intensity rate(t) in requests/s, with its cumulative Λ(t) and inverse."""

    @abstractmethod
    def rate_at(self, t: np.ndarray) -> np.ndarray:
        """rate(t) for each time in ``t``."""

    @abstractmethod
    def cumulative(self, t: np.ndarray) -> np.ndarray:
        """Λ(t): expected arrivals in [0, t)."""

    @abstractmethod
    def inverse(self, u: np.ndarray) -> np.ndarray:
        """The earliest t with Λ(t) = u (``u`` below :meth:`total`)."""

    def total(self) -> float:
        """Λ(∞): expected arrivals ever (infinite unless the rate drops to zero for good)."""
        return math.inf

    def scaled(self, factor: float) -> RateSchedule:
        """The same curve with every rate multiplied by ``factor`` (a profile's share)."""
        return _Scaled(self, factor)


@dataclass(frozen=True)
class _Scaled(RateSchedule):
    base: RateSchedule
    factor: float

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        return self.base.rate_at(t) * self.factor

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        return self.base.cumulative(t) * self.factor

    def inverse(self, u: np.ndarray) -> np.ndarray:
        return self.base.inverse(np.asarray(u, dtype=np.float64) / self.factor)

    def total(self) -> float:
        return self.base.total() * self.factor


@dataclass(frozen=True)
class StepRate(RateSchedule):
    """Piecewise-constant rate: ``rates[i]`` from ``times[i]`` until ``times[i + 1]`` (the last forever)."""

    times: tuple[float, ...]
    rates: tuple[float, ...]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        times = np.asarray(self.times, dtype=np.float64)
        rates = np.asarray(self.rates, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(rates[:-1] * np.diff(times))])
        return times, rates, cum

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        times, rates, _ = self._arrays()
        index = np.searchsorted(times, np.asarray(t, dtype=np.float64), side="right") - 1
        return np.where(index >= 0, rates[np.maximum(index, 0)], 0.0)

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        times, rates, cum = self._arrays()
        t = np.asarray(t, dtype=np.float64)
        index = np.maximum(np.searchsorted(times, t, side="right") - 1, 0)
        return np.where(t <= times[0], 0.0, cum[index] + rates[index] * (t - times[index]))

    def inverse(self, u: np.ndarray) -> np.ndarray:
        times, rates, cum = self._arrays()
        u = np.asarray(u, dtype=np.float64)
        # the last segment starting at or below u: zero-rate segments add nothing to Λ, so
        # searching from the right always lands on a segment with a positive rate (or the end)
        index = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(rates) - 1)
        rate = np.where(rates[index] > 0, rates[index], np.inf)
        return times[index] + (u - cum[index]) / rate

    def total(self) -> float:
        _, rates, cum = self._arrays()
        return math.inf if rates[-1] > 0 else float(cum[-1])


@dataclass(frozen=True)
class DiurnalRate(RateSchedule):
    """rate(t) = min + (max - min) (1 - cos(2π (t + phase) / period)) / 2: ``min_rate`` at t = -phase."""

    period_s: float
    min_rate: float
    max_rate: float
    phase_s: float = 0.0

    def _raw(self, s: np.ndarray) -> np.ndarray:
        omega = 2.0 * math.pi / self.period_s
        a = (self.min_rate + self.max_rate) / 2.0
        b = (self.max_rate - self.min_rate) / (2.0 * omega)
        return a * s - b * np.sin(omega * s)

    def rate_at(self, t: np.ndarray) -> np.ndarray:
        phase = 2.0 * math.pi * (np.asarray(t, dtype=np.float64) + self.phase_s) / self.period_s
        return self.min_rate + (self.max_rate - self.min_rate) * (1.0 - np.cos(phase)) / 2.0

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return self._raw(t + self.phase_s) - self._raw(np.asarray(self.phase_s))

    def inverse(self, u: np.ndarray) -> np.ndarray:
        # Λ is increasing and within ±b of a straight line of slope a: bisect in that bracket.
        target = np.asarray(u, dtype=np.float64) + self._raw(np.asarray(self.phase_s))
        a = (self.min_rate + self.max_rate) / 2.0
        b = (self.max_rate - self.min_rate) * self.period_s / (4.0 * math.pi)
        low, high = (target - b) / a - 1e-9, (target + b) / a + 1e-9
        for _ in range(100):
            mid = (low + high) / 2.0
            below = self._raw(mid) < target
            low = np.where(below, mid, low)
            high = np.where(below, high, mid)
            if np.all(high - low <= 1e-12 * np.maximum(1.0, np.abs(high))):
                break
        return (low + high) / 2.0 - self.phase_s


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
def parse_rate_schedule(spec: Any, key: str) -> RateSchedule:
    """``[[time_s, rate], ...]`` steps, ``{type: steps, steps: [...]}`` or ``{type: diurnal, ...}``."""
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind == "steps":
            _only_keys(spec, key, {"type", "steps"})
            return _parse_steps(spec.get("steps"), f"{key}.steps")
        if kind == "diurnal":
            _only_keys(spec, key, {"type", "period_s", "min_rate", "max_rate", "phase_s"})
            return _parse_diurnal(spec, key)
        raise ConfigError(f"{key}.type", kind, "steps or diurnal (or give a list of [time_s, rate] steps)")
    return _parse_steps(spec, key)


def _only_keys(spec: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    for extra in sorted(set(spec) - allowed, key=str):
        raise ConfigError(f"{key}.{extra}", spec[extra], f"{spec.get('type')} takes {', '.join(sorted(allowed))}")


def _parse_steps(steps: Any, key: str) -> StepRate:
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Sequence) or not steps:
        raise ConfigError(key, steps, "a non-empty list of [time_s, rate] steps, e.g. [[0, 5], [60, 20]]")
    times, rates = [], []
    for i, step in enumerate(steps):
        if isinstance(step, (str, bytes, Mapping)) or not isinstance(step, Sequence) or len(step) != 2:
            raise ConfigError(f"{key}[{i}]", step, "a [time_s, rate] pair")
        time = _check_number(f"{key}[{i}][0]", step[0], nonneg=True)
        rate = _check_number(f"{key}[{i}][1]", step[1], nonneg=True)
        if times and time <= times[-1]:
            raise ConfigError(f"{key}[{i}][0]", step[0], f"a time after the previous step's {times[-1]:g} s")
        times.append(time)
        rates.append(rate)
    if max(rates) <= 0:
        raise ConfigError(key, steps, "at least one step with a rate > 0")
    if times[0] > 0:  # nothing arrives before the first step
        times.insert(0, 0.0)
        rates.insert(0, 0.0)
    return StepRate(tuple(times), tuple(rates))


def _parse_diurnal(spec: Mapping[str, Any], key: str) -> DiurnalRate:
    def number(name: str, **kw: bool) -> float:
        if name not in spec:
            raise ConfigError(f"{key}.{name}", None, "a diurnal schedule needs period_s, min_rate and max_rate")
        return _check_number(f"{key}.{name}", spec[name], **kw)

    period = number("period_s", positive=True)
    low = number("min_rate", nonneg=True)
    high = number("max_rate", positive=True)
    if low > high:
        raise ConfigError(f"{key}.min_rate", spec["min_rate"], f"a rate <= max_rate ({high:g})")
    phase = _check_number(f"{key}.phase_s", spec.get("phase_s", 0.0))
    return DiurnalRate(period, low, high, phase)


# ------------------------------------------------------------------------------------------------
# drawing arrival times
# ------------------------------------------------------------------------------------------------
def renewal_times(
    dist: Distribution,
    scale: float,
    horizon: float | None,
    max_count: int | None,
    rng: np.random.Generator,
    limit: int = MAX_ARRIVALS,
) -> np.ndarray:
    """Cumulative sums of gaps ``dist`` x ``scale`` that fall before ``horizon``, at most ``max_count``.

    :class:`TooManyArrivals` when more than ``limit`` gaps are needed to reach the horizon (memory
    stays within ``limit`` samples and one chunk).
    """
    if max_count is not None and max_count <= 0:
        return np.empty(0)
    mean_gap = dist.mean() * scale
    expected = float(max_count or 1)
    if horizon is not None and math.isfinite(horizon):
        expected = horizon / mean_gap if mean_gap > 0 else expected
        if max_count is not None:
            expected = min(expected, max_count)
    if not expected < 1e300:  # a zero mean gap (0 * inf) or an infinite one
        expected = 1.0
    expected = min(expected, float(limit))
    chunk = int(expected * 1.1 + 10 * math.sqrt(expected) + 16)
    pieces: list[np.ndarray] = []
    count, last = 0, 0.0
    while True:
        new = last + np.cumsum(dist.sample(rng, chunk).astype(np.float64) * scale)
        pieces.append(new)
        count += len(new)
        last = float(new[-1])
        if horizon is not None and last >= horizon:
            break
        if max_count is not None and count >= max_count:
            break
        if count > limit:
            raise TooManyArrivals(limit, last)
        if len(pieces) >= 16:  # far more than expected: larger chunks, so the limit is reached quickly
            chunk = min(2 * chunk, limit)
    times = np.concatenate(pieces)
    if horizon is not None:
        times = times[times < horizon]
    if max_count is not None:
        times = times[:max_count]
    return times


@dataclass(frozen=True)
class ArrivalProcess:
    """How one profile's sessions arrive: gaps of ``dist`` x ``scale``, then mapped through ``schedule``.

    Without a schedule the gaps are in seconds; with one they are in operational time (mean 1) and
    each cumulative time u becomes the real time ``schedule.inverse(u)``.
    """

    dist: Distribution
    scale: float = 1.0
    schedule: RateSchedule | None = None
    key: str = "workload.rate"
    value: Any = None

    def times(self, duration: float | None, max_count: int | None, rng: np.random.Generator) -> np.ndarray:
        """Arrival times in [0, duration) (at most ``max_count``).

        A process that would send more than :data:`MAX_ARRIVALS` sessions before ``duration`` (gaps
        that are almost all 0 s) is a :class:`~llmsim.errors.ConfigError` naming ``key``.
        """
        try:
            if self.schedule is None:
                return renewal_times(self.dist, self.scale, duration, max_count, rng)
            horizon = float(self.schedule.cumulative(np.asarray(duration))) if duration is not None else math.inf
            horizon = min(horizon, self.schedule.total())
            units = renewal_times(self.dist, self.scale, horizon if math.isfinite(horizon) else None, max_count, rng)
        except TooManyArrivals as exc:
            raise ConfigError(
                self.key,
                self.value,
                f"its gaps between sessions are so often near 0 s that more than {exc.limit:,} sessions would "
                "arrive before the run stops; at most that many per run (a burstiness or gap distribution "
                "closer to Poisson, a lower rate or a shorter total_duration)",
            ) from None
        times = self.schedule.inverse(units)
        return times[times < duration] if duration is not None else times


def profile_arrival_process(
    own: Distribution | None,
    weight: float,
    total_weight: float,
    rate: float | None,
    burstiness: float | None,
    schedule: RateSchedule | None,
) -> ArrivalProcess:
    """The arrival process of a profile that gets ``weight / total_weight`` of the total rate.

    ``own`` is the profile's ``inter_arrival_time_dist_config``; ``rate``, ``burstiness`` and
    ``schedule`` are the workload's. The gap *shape* is Gamma(burstiness) when burstiness is given,
    else the profile's own distribution, else exponential (Poisson arrivals).
    """
    if schedule is not None:
        share = schedule.scaled(weight / total_weight)
        if burstiness is not None:
            return ArrivalProcess(Gamma(shape=burstiness, scale=1.0 / burstiness), 1.0, share)
        if own is not None and own.mean() > 0:
            return ArrivalProcess(own, 1.0 / own.mean(), share)
        return ArrivalProcess(Exponential(rate=1.0), 1.0, share)
    if rate is None:
        assert own is not None, "checked by the config: a profile without a rate needs its own distribution"
        return ArrivalProcess(own, 1.0)
    mean_gap = total_weight / (rate * weight)
    if burstiness is not None:
        return ArrivalProcess(Gamma(shape=burstiness, scale=mean_gap / burstiness))
    if own is None or own.mean() <= 0:
        return ArrivalProcess(Exponential(rate=1.0 / mean_gap))
    return ArrivalProcess(own, mean_gap / own.mean())
