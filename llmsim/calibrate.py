"""``python -m llmsim.calibrate [CASES.csv] [--out DIR]``: fit a few physical factors to your measurements.

Cases use the schema of ``llmsim/data/validation.md`` (the same as ``llmsim.validate``); without
``CASES.csv`` the cases shipped with llmsim (``llmsim/data/calibration_cases.csv``) are fitted. The
fitted factors are, per GPU type in the cases, the achieved fraction of dense peak on GEMMs (for
the dtypes the cases use) and of HBM bandwidth, and per framework the serial CPU overhead of an
engine step. They are found by coordinate descent on the mean squared log error (golden-section
search per factor, within physical bounds), each evaluation re-simulating only the cases the
factor touches. No factor is per case.

The result is written as override files: ``DIR/hardware/<gpu>_calibrated.yaml`` (the catalogue
file with the fitted ``efficiency``) and ``DIR/framework/<framework>_calibrated.yaml``; use them with
``python -m llmsim --config-dir DIR hardware=<gpu>_calibrated framework=<framework>_calibrated``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from llmsim.data import CASES_FILE, SCHEMA_NAME
from llmsim.entrypoint import ArgumentParser, run_entry_point
from llmsim.errors import ConfigError, OutputError
from llmsim.frameworks.registry import framework_class_map
from llmsim.hardware.spec import gpu_family
from llmsim.models import CONF_DIR, builtin_model_profiles
from llmsim.outputs import write_text
from llmsim.validate import case_version, load_cases, results_frame, run_cases, summary_line

GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class Factor:
    """One fitted knob: the Hydra key, which cases it touches, its bounds and current value."""

    key: str
    applies: Callable[[pd.Series], bool]
    low: float
    high: float
    value: float
    label: str


def _conf_value(group: str, option: str, path: str, default: float) -> float:
    data = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text())
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data or data[part] is None:
            return default
        data = data[part]
    return float(data)


# Physical bounds: large GEMMs reach 0.5-0.9 of dense peak and streaming kernels 0.7-0.95 of HBM
# bandwidth on the GPUs measured in efficiency.md; a fit outside them would be a fudge, not physics.
GEMM_BOUNDS = (0.4, 0.95)
HBM_BOUNDS = (0.65, 0.95)


def family_of(hardware: str) -> str:
    """The GPU family a hardware option belongs to (itself when unknown)."""
    return gpu_family(hardware) or hardware


def default_factors(cases: pd.DataFrame) -> list[Factor]:
    """The factors the cases can inform: per GPU family GEMM (per dtype), HBM and MoE GEMM efficiency,
    and per framework the serial CPU overhead of a step."""
    factors: list[Factor] = []
    moe_models = frozenset(name for name, profile in builtin_model_profiles().items() if profile.is_moe)
    families = cases["hardware"].map(family_of)
    for family in sorted(families.unique()):
        on_family = cases[families == family]
        reference = sorted(on_family["hardware"].unique())[0]
        in_family = lambda r, fam=family: family_of(r["hardware"]) == fam  # noqa: E731
        for dtype_key, dtypes in (("gemm_flops", ("fp16", "bf16")), ("gemm_flops_fp8", ("fp8",))):
            if on_family["dtype"].isin(dtypes).any():
                factors.append(
                    Factor(
                        f"hardware.efficiency.{dtype_key}",
                        lambda r, d=dtypes, f=in_family: f(r) and r["dtype"] in d,
                        *GEMM_BOUNDS,
                        _conf_value("hardware", reference, f"efficiency.{dtype_key}", 0.7),
                        f"{family}.efficiency.{dtype_key}",
                    )
                )
        if on_family["model"].isin(moe_models).any():
            factors.append(
                Factor(
                    "hardware.efficiency.moe_gemm_relative",
                    lambda r, f=in_family: f(r) and r["model"] in moe_models,
                    0.1,
                    1.0,
                    _conf_value("hardware", reference, "efficiency.moe_gemm_relative", 1.0),
                    f"{family}.efficiency.moe_gemm_relative",
                )
            )
        factors.append(
            Factor(
                "hardware.efficiency.hbm_bandwidth",
                in_family,
                *HBM_BOUNDS,
                _conf_value("hardware", reference, "efficiency.hbm_bandwidth", 0.85),
                f"{family}.efficiency.hbm_bandwidth",
            )
        )
    factors += moe_kernel_factors(cases, moe_models)
    for framework in sorted(cases["framework"].unique()):
        factors.append(
            Factor(
                "framework.step_overhead_s",
                lambda r, f=framework: r["framework"] == f,
                0.0,
                0.02,
                0.0015,
                f"{framework}.step_overhead_s",
            )
        )
    return factors


#: at least this many MoE cases of one (framework, release row, GPU family) before a MoE-kernel factor
#: is fitted to them (fewer would be a per-case fudge)
MIN_CASES_PER_KERNEL_FACTOR = 3


def moe_kernel_factors(cases: pd.DataFrame, moe_models: frozenset[str]) -> list[Factor]:
    """One grouped-GEMM efficiency per (framework, release row of its MoE-kernel table, GPU family)
    that enough MoE cases measured (``framework.moe_gemm_relative``, bounds 0.1-1.0)."""
    factors: list[Factor] = []
    for framework in sorted(cases["framework"].unique()):
        cls = framework_class_map.get(str(framework).upper())
        table = cls.moe_kernels if cls is not None else None
        if table is None:
            continue

        def row_of(r: pd.Series, t=table) -> str:
            return t.row(case_version(r)).version

        mine = cases[(cases["framework"] == framework) & cases["model"].isin(moe_models)]
        if mine.empty:
            continue
        keys = mine.apply(lambda r: (row_of(r), family_of(r["hardware"])), axis=1)
        for (release, family), count in sorted(keys.value_counts().items()):
            if count < MIN_CASES_PER_KERNEL_FACTOR:
                continue
            current = table.row(release).defaults.get(family)
            factors.append(
                Factor(
                    "framework.moe_gemm_relative",
                    lambda r, f=framework, rel=release, fam=family, row=row_of: (
                        r["framework"] == f
                        and r["model"] in moe_models
                        and row(r) == rel
                        and family_of(r["hardware"]) == fam
                    ),
                    0.1,
                    1.0,
                    float(current) if current is not None else 0.36,
                    f"{framework}.moe_kernels.{release}.{family}",
                )
            )
    return factors


class Objective:
    """Mean squared log error of the cases under a set of factor values (cached per case and values)."""

    def __init__(self, cases: pd.DataFrame, factors: list[Factor], max_requests: int | None) -> None:
        self.cases = cases
        self.factors = factors
        self.max_requests = max_requests
        self.log_errors = np.zeros(len(cases))
        self.evaluations = 0

    def overrides_for(self, row: pd.Series) -> list[str]:
        return [f"++{f.key}={f.value:.6g}" for f in self.factors if f.applies(row)]

    def evaluate(self, rows: list[int]) -> None:
        """Re-simulate the given cases with the current factor values."""
        for index in rows:
            row = self.cases.iloc[index]
            result = run_cases(self.cases.iloc[[index]], self.overrides_for(row), self.max_requests)[0]
            self.evaluations += 1
            if result.predicted is None or result.predicted <= 0:
                self.log_errors[index] = 10.0  # a case that cannot run weighs heavily
            else:
                self.log_errors[index] = math.log(result.predicted / result.measured)

    def value(self) -> float:
        return float(np.mean(self.log_errors**2))


def fit(
    cases: pd.DataFrame, factors: list[Factor], max_requests: int | None, sweeps: int = 2, steps: int = 10
) -> Objective:
    """Coordinate descent: golden-section search on each factor in turn."""
    objective = Objective(cases, factors, max_requests)
    objective.evaluate(list(range(len(cases))))
    for _ in range(sweeps):
        for factor in factors:
            rows = [i for i in range(len(cases)) if factor.applies(cases.iloc[i])]
            if not rows:
                continue

            def loss(x: float, factor: Factor = factor, rows: list[int] = rows) -> float:
                factor.value = x
                objective.evaluate(rows)
                return objective.value()

            best_x, best = factor.value, loss(factor.value)
            low, high = factor.low, factor.high
            a = high - GOLDEN * (high - low)
            b = low + GOLDEN * (high - low)
            fa, fb = loss(a), loss(b)
            for _ in range(steps):
                if fa < fb:
                    high, b, fb = b, a, fa
                    a = high - GOLDEN * (high - low)
                    fa = loss(a)
                else:
                    low, a, fa = a, b, fb
                    b = low + GOLDEN * (high - low)
                    fb = loss(b)
            candidate = (a, fa) if fa < fb else (b, fb)
            if candidate[1] < best:
                best_x, best = candidate
            loss(best_x)
    return objective


def write_overrides(out: Path, factors: list[Factor], hardware_options: list[str]) -> list[Path]:
    """Calibrated copies of the hardware files (every option of the cases, with its family's factors)
    and of the framework files the factors belong to."""
    written = []
    by_file: dict[tuple[str, str], dict[str, float]] = {}
    for factor in factors:
        name, _, path = factor.label.partition(".")
        if ".moe_kernels." in factor.label:
            continue  # one release and GPU family: it belongs in the framework's MOE_KERNELS table
        if factor.key.startswith("framework."):
            by_file.setdefault(("framework", name), {})[path] = round(factor.value, 6)
            continue
        for option in hardware_options:
            if family_of(option) == name:
                by_file.setdefault(("hardware", option), {})[path] = round(factor.value, 6)
    for (group, option), values in by_file.items():
        data = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text())
        for path, value in values.items():
            node = data
            parts = path.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        data["name"] = f"{data.get('name', option)}_calibrated" if group == "hardware" else data.get("name", option)
        target = out / group / f"{option}_calibrated.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Calibrated by python -m llmsim.calibrate from conf/{group}/{option}.yaml\n"
        write_text(target, header + yaml.safe_dump(data, sort_keys=False))
        written.append(target)
    return written


def _check_args(args: argparse.Namespace) -> None:
    for name, low in (("max_requests", 1), ("sweeps", 1), ("steps", 1)):
        value = getattr(args, name)
        if value < low:
            raise ConfigError(f"--{name.replace('_', '-')}", value, f"a whole number, at least {low}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(
            "--out", str(args.out), "a directory (the override files go in DIR/hardware and DIR/framework)"
        )


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m llmsim.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "cases",
        type=Path,
        nargs="?",
        default=CASES_FILE,
        help=f"a CSV in the schema of {SCHEMA_NAME} (default: the shipped cases, {CASES_FILE.name})",
    )
    parser.add_argument("--out", type=Path, default=Path("calibrated"), help="where to write override files")
    parser.add_argument("--max-requests", type=int, default=4000, help="cap per case while fitting (speed)")
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="golden-section steps per factor and sweep")
    parser.add_argument(
        "--factors", help="fit only factors whose label contains one of these comma-separated words (e.g. hbm,vllm)"
    )
    args = parser.parse_args(argv)
    _check_args(args)
    cases = load_cases(args.cases)
    factors = default_factors(cases)
    if args.factors:
        words = [w.strip() for w in args.factors.split(",") if w.strip()]
        factors = [f for f in factors if any(w in f.label for w in words)]
    if not factors:
        labels = ", ".join(f.label for f in default_factors(cases))
        raise ConfigError("--factors", args.factors, f"words found in the labels of the factors: {labels}")
    print("before: " + summary_line(run_cases(cases)))
    objective = fit(cases, factors, args.max_requests, sweeps=args.sweeps, steps=args.steps)
    for factor in factors:
        print(f"  {factor.label:40s} = {factor.value:.4g}")
    after = []
    for index in range(len(cases)):
        row = cases.iloc[index]
        after.extend(run_cases(cases.iloc[[index]], objective.overrides_for(row)))
    print(results_frame(after)[["case_id", "metric", "predicted", "measured", "error_pct"]].to_string(index=False))
    try:
        written = write_overrides(args.out, factors, sorted(cases["hardware"].unique()))
    except OSError as exc:
        raise OutputError(f"--out={str(args.out)!r}: cannot write the override files: {exc}") from None
    for path in written:
        print(f"wrote {path}")
    kernels = [f for f in factors if ".moe_kernels." in f.label]
    if kernels:
        print(
            "MoE-kernel factors hold for one release range and GPU family: put them in the framework's "
            "MOE_KERNELS table, or pass framework.moe_gemm_relative=VALUE to a run of that release and GPU"
        )
    print(f"{objective.evaluations} case simulations; after: " + summary_line(after))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: a user mistake ends in one line on stderr and exit status 2."""
    return run_entry_point(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
