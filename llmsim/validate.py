"""``python -m llmsim.validate [CASES.csv] [--out PRED.csv] [OVERRIDE ...]``: predict published measurements.

Without ``CASES.csv`` it runs the cases shipped with llmsim (``llmsim/data/calibration_cases.csv``,
published measurements of vLLM, TensorRT-LLM and SGLang). Each row of the CSV (schema:
``llmsim/data/validation.md``) becomes a normal llmsim experiment
— the Hydra config composed from ``conf/`` with overrides for hardware, model, framework, dtype,
tensor-parallel size and the workload kind — and runs through :class:`ExperimentOrchestrator`, the
same code path as ``python -m llmsim``. Kinds: ``batch`` (``batch_size`` identical requests at
t=0, run as one static batch: TensorRT-LLM's STATIC_BATCH policy; vLLM batches them itself),
``offline`` (``num_requests`` queued at t=0), ``concurrency`` (closed loop) and ``poisson``. When
``num_gpus`` exceeds ``tp``, ``num_gpus / tp`` identical data-parallel replicas share the load
equally: one replica is simulated with its share and system throughput is multiplied back.
Benchmarks run next to the server, so every case runs without a client link (workload.client_link=false).
The case's ``framework_version`` becomes ``framework.version``, ``kv_dtype`` the KV-cache dtype and
``length_dist`` the request lengths; a case using what llmsim does not model yet (expert parallelism,
attention data parallelism) runs as the nearest thing it models and says so beside its error.

After the cases it prints the error by model family (dense, MoE, MLA) x framework x GPU.
The last line printed is exactly ``median_abs_err_pct=X p90_abs_err_pct=Y cases_run=N/M``.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.data import CASES_FILE, SCHEMA_NAME
from llmsim.entrypoint import ArgumentParser, UsageError, readable_file, run_entry_point, write_output
from llmsim.errors import ConfigError, LLMSimError, one_line
from llmsim.models import CONF_DIR

METRICS = {
    "output_tokens_per_s": "output_throughput",
    "output_tokens_per_s_per_gpu": "output_throughput",
    "ttft_ms": "median_ttft_ms",
    "ttft_ms_mean": "mean_ttft_ms",
    "itl_ms_mean": "mean_itl_ms",
    "tpot_ms_mean": "mean_tpot_ms",
    "e2e_ms_mean": "mean_e2el_ms",
    "total_tokens_per_s": "total_token_throughput",
    "tpot_ms_median": "median_tpot_ms",
    "itl_ms_median": "median_itl_ms",
    "output_tokens_per_s_per_seq": "median_tpot_ms",
}
#: metrics of the whole system: one simulated replica's value times the replica count
SYSTEM_RATES = ("output_tokens_per_s", "output_tokens_per_s_per_gpu", "total_tokens_per_s")
REQUIRED_COLUMNS = (
    "case_id",
    "hardware",
    "num_gpus",
    "tp",
    "model",
    "dtype",
    "framework",
    "kind",
    "input_len",
    "output_len",
    "metric",
    "value",
)
KINDS = ("batch", "offline", "concurrency", "poisson")
LENGTH_DISTS = ("fixed", "uniform_1_to_len", "uniform_pm15pct")
KV_DTYPES = ("auto", "fp8")


@dataclass
class CaseResult:
    """One case: prediction and error, or why it did not run."""

    case_id: str
    metric: str
    measured: float
    predicted: float | None = None
    error_pct: float | None = None
    reason: str = ""
    wall_s: float = 0.0
    note: str = ""
    family: str = ""
    framework: str = ""
    hardware: str = ""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _int(row: pd.Series, column: str) -> int | None:
    value = row.get(column)
    if _blank(value):
        return None
    return int(float(value))


def _text(row: pd.Series, column: str, default: str | None = None) -> str | None:
    """A text cell, stripped; ``default`` when the column is absent or the cell blank."""
    value = row.get(column)
    return default if _blank(value) else str(value).strip()


def _choice(row: pd.Series, column: str, allowed: tuple[str, ...], default: str) -> str:
    value = _text(row, column, default)
    if value not in allowed:
        raise LLMSimError(f"{column}={value!r} is not one of {', '.join(allowed)}")
    return value


def _flag(row: pd.Series, column: str) -> bool:
    value = _text(row, column)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise LLMSimError(f"{column}={value!r} is not true, false or blank")


def case_version(row: pd.Series) -> str | None:
    """The release the case measured (None when the source does not say: the newest modelled)."""
    return _text(row, "framework_version")


def version_override(row: pd.Series) -> list[str]:
    """``framework.version=...`` for the release the case measured (none when the source does not say)."""
    version = case_version(row)
    # quoted: Hydra reads a bare 0.17 as a number
    return [] if version is None else [f"framework.version='{version}'"]


def parallel_overrides(row: pd.Series) -> list[str]:
    """The framework's own knobs for the case's attention data parallelism and expert parallelism.

    ``attention_dp`` true runs attention data-parallel over all ``tp`` GPUs (SGLang
    ``--enable-dp-attention --dp tp``, TensorRT-LLM ``enable_attention_dp``, vLLM ``-dp tp -tp 1``);
    ``ep`` shards the experts over that many ranks (SGLang ``--ep-size``, TensorRT-LLM
    ``moe_expert_parallel_size``, vLLM ``--enable-expert-parallel``, which uses every GPU).
    """
    framework = str(row["framework"])
    tp = _int(row, "tp") or 1
    ep = _int(row, "ep")
    dp = _flag(row, "attention_dp")
    out: list[str] = []
    if framework == "sglang":
        if dp and tp > 1:
            out += ["framework.enable_dp_attention=true", f"framework.dp_size={tp}"]
        if ep is not None and ep > 1:
            out.append(f"framework.ep_size={ep}")
    elif framework == "trtllm":
        if dp and tp > 1:
            out.append("framework.enable_attention_dp=true")
        if ep is not None and ep > 1:
            out.append(f"framework.moe_expert_parallel_size={ep}")
    elif framework == "vllm":
        if dp and tp > 1:
            out += ["framework.tensor_parallel_size=1", f"framework.data_parallel_size={tp}"]
        if ep is not None and ep > 1:
            if ep != tp:
                raise LLMSimError(f"ep={ep}: vLLM's expert parallelism spans all {tp} GPUs")
            out.append("framework.enable_expert_parallel=true")
    elif dp or (ep is not None and ep > 1):
        raise LLMSimError(f"framework={framework} has no attention data parallelism or expert parallelism")
    return out


def case_overrides(row: pd.Series, max_requests: int | None = None) -> tuple[list[str], int]:
    """Hydra overrides that build the case's experiment, and the data-parallel replica count."""
    tp = _int(row, "tp") or 1
    num_gpus = _int(row, "num_gpus") or tp
    if num_gpus % tp:
        raise LLMSimError(f"num_gpus={num_gpus} is not a multiple of tp={tp}")
    replicas = num_gpus // tp
    framework = str(row["framework"])
    dtype = str(row["dtype"])
    kind = str(row["kind"])
    if kind not in KINDS:
        raise LLMSimError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    prompt = _int(row, "input_len")
    kv_dtype = _choice(row, "kv_dtype", KV_DTYPES, "fp8" if dtype == "fp8" else "auto")
    overrides = [
        f"hardware={row['hardware']}",
        f"model={row['model']}",
        f"framework={framework}",
        f"framework.tensor_parallel_size={tp}",
        f"framework.dtype={dtype}",
        f"framework.kv_cache_dtype={kv_dtype}",
        *version_override(row),
        *parallel_overrides(row),
        "simulation.max_simulation_time=100000",
    ]

    def share(total: int | None, name: str) -> int:
        if total is None:
            raise LLMSimError(f"kind {kind} needs {name}")
        return max(1, math.ceil(total / replicas))

    if kind == "batch":
        size = share(_int(row, "batch_size"), "batch_size")
        overrides += ["workload=offline", f"workload.num_requests={size}"]
        if framework == "trtllm":
            overrides += ["framework.capacity_scheduler_policy=STATIC_BATCH", f"framework.max_batch_size={size}"]
            overrides.append(f"framework.max_num_tokens={max(size * prompt, 8192)}")
        elif framework == "vllm":
            overrides += [
                f"framework.max_num_seqs={max(size, 1)}",
                f"framework.max_num_batched_tokens={max(size * prompt, 2048)}",
            ]
    elif kind == "offline":
        count = share(_int(row, "num_requests"), "num_requests")
        overrides += ["workload=offline", f"workload.num_requests={min(count, max_requests or count)}"]
    elif kind == "concurrency":
        count = share(_int(row, "num_requests"), "num_requests")
        overrides += [
            "workload=closed_loop",
            f"workload.concurrency={share(_int(row, 'concurrency'), 'concurrency')}",
            f"workload.num_requests={min(count, max_requests or count)}",
        ]
    else:
        rate = row.get("request_rate")
        if rate is None or (isinstance(rate, float) and math.isnan(rate)):
            raise LLMSimError("kind poisson needs request_rate")
        count = share(_int(row, "num_requests"), "num_requests")
        overrides += [
            "workload=chat",
            f"workload.rate={float(rate) / replicas}",
            "workload.total_duration=null",
            f"workload.num_requests={min(count, max_requests or count)}",
        ]
    return overrides, replicas


def length_distribution(length: int | None, shape: str) -> dict[str, Any]:
    """The token-count distribution of a case's ``length_dist`` around its stated length.

    ``uniform_1_to_len`` is SGLang bench_serving's random dataset at range ratio 0 (every length from 1
    to the stated one equally likely); ``uniform_pm15pct`` is uniform within ±15% of it.
    """
    if length is None or length < 1:
        raise LLMSimError(f"a length of {length} tokens is not a positive whole number")
    if shape == "fixed":
        return {"type": "Constant", "value": length, "is_int": True}
    if shape == "uniform_1_to_len":
        return {"type": "Uniform", "low": 1, "high": length, "is_int": True}
    return {"type": "Uniform", "low": max(1, round(0.85 * length)), "high": round(1.15 * length), "is_int": True}


def case_profile(row: pd.Series) -> dict[str, Any]:
    """Every request of a case: input and output lengths per ``length_dist``, streamed, no follow-up turns."""
    shape = _choice(row, "length_dist", LENGTH_DISTS, "fixed")
    return {
        "profile_name": str(row["case_id"]),
        "weight": 1.0,
        "prompt_tokens_dist_config": length_distribution(_int(row, "input_len"), shape),
        "max_output_tokens_dist_config": length_distribution(_int(row, "output_len"), shape),
        "conversational_probability": 0.0,
        "streaming_response_probability": 1.0,
    }


def compose_case(
    overrides: list[str], extra: list[str] | None = None, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The experiment config of a case, composed exactly as ``python -m llmsim`` would."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from llmsim.cli import check_group_overrides, experiment_container

    check_group_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="validate"):
        cfg = compose(config_name="config", overrides=[*overrides, *(extra or [])])
    config = experiment_container(OmegaConf.to_container(cfg, resolve=True))
    for key in (
        "output_summary_json_path",
        "output_requests_parquet_path",
        "output_steps_parquet_path",
        "output_requests_csv_path",
    ):
        config["metrics"][key] = None
    # published numbers time the engine, not a network: the clients run beside it (no client link)
    config["workload"]["client_link"] = False
    if profile is not None:
        profile = {**profile}
        if config["workload"]["client_profiles"][0].get("inter_arrival_time_dist_config"):
            profile["inter_arrival_time_dist_config"] = config["workload"]["client_profiles"][0][
                "inter_arrival_time_dist_config"
            ]
        config["workload"]["client_profiles"] = [profile]
    return config


def predict(row: pd.Series, extra: list[str] | None = None, max_requests: int | None = None) -> float:
    """Simulate one case and return the predicted value of its metric."""
    from llmsim.orchestrator import ExperimentOrchestrator

    metric = str(row["metric"])
    if metric not in METRICS:
        raise LLMSimError(f"metric={metric!r} is not one of {', '.join(METRICS)}")
    overrides, replicas = case_overrides(row, max_requests)
    config = compose_case(overrides, extra, case_profile(row))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = ExperimentOrchestrator(config).run(show_progress=False, print_table=False)
    metrics = next(iter(summary["frameworks"].values()))
    if metrics["completed"] == 0:
        raise LLMSimError(f"no request completed ({metrics['failed']} failed)")
    value = float(metrics[METRICS[metric]])
    if metric == "output_tokens_per_s_per_seq":  # one sequence's decode rate: 1000 / TPOT in ms
        if value <= 0:
            raise LLMSimError("no request decoded more than one token, so there is no TPOT to invert")
        return 1000.0 / value
    if metric in SYSTEM_RATES:
        value *= replicas
        if metric.endswith("per_gpu"):
            value /= _int(row, "num_gpus") or 1
    return value


def load_cases(path: Path) -> pd.DataFrame:
    """Read and check a cases CSV: a file that cannot be read or lacks a column is a one-line error."""
    readable_file(Path(path), "cases")
    try:
        cases = pd.read_csv(path, dtype={"framework_version": str, "case_id": str})
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("cases", str(path), f"a CSV file of cases ({one_line(str(exc))})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in cases.columns]
    if missing:
        raise ConfigError(
            "cases",
            str(path),
            f"a CSV with the columns of {SCHEMA_NAME}; missing {', '.join(missing)}",
        )
    if cases.empty:
        raise ConfigError("cases", str(path), "a CSV with at least one case (the file has a header only)")
    return cases


def check_extra_overrides(cases: pd.DataFrame, extra: list[str]) -> None:
    """Check the overrides given for every case as ``python -m llmsim`` would, before any case runs.

    A wrong group option is found at once; a wrong key or value is found by composing and validating
    the first case of each framework and workload kind with and without the overrides: when the case
    is valid alone but not with them, the overrides are at fault (one-line error). A case that is
    invalid on its own is left to be reported as NOT RUN with its reason.
    """
    from llmsim.cli import check_group_overrides, preflight

    if not extra:
        return
    flags = [a for a in extra if a.startswith("-")]
    if flags:
        raise UsageError(f"python -m llmsim.validate: {flags[0]} is not an option (extra overrides are key=value)")
    check_group_overrides(extra)
    seen: set[tuple[str, str]] = set()
    for _, row in cases.iterrows():
        kind = (str(row["framework"]), str(row["kind"]))
        if kind in seen:
            continue
        seen.add(kind)
        try:
            overrides, _ = case_overrides(row)
        except (LLMSimError, ValueError, TypeError):
            continue
        try:
            preflight([*overrides, *extra])
        except LLMSimError as exc:
            try:
                preflight(overrides)
            except LLMSimError:
                continue  # the case itself is invalid: NOT RUN, with its reason
            if isinstance(exc, ConfigError) and exc.key == "override":  # name only the extra overrides
                exc = ConfigError("override", " ".join(extra), exc.allowed)
            raise LLMSimError(f"{exc} (applied to case {row['case_id']}, framework {row['framework']})") from None


def run_cases(cases: pd.DataFrame, extra: list[str] | None = None, max_requests: int | None = None) -> list[CaseResult]:
    """Predict every case; a case that cannot run is reported with its reason."""
    import logging

    logging.getLogger("llmsim").setLevel(logging.WARNING)
    results = []
    for _, row in cases.iterrows():
        started = time.perf_counter()
        try:
            measured = float(row["value"])
        except (TypeError, ValueError):
            measured = float("nan")
        result = CaseResult(
            str(row["case_id"]),
            str(row["metric"]),
            measured,
            family=model_family(str(row["model"])),
            framework=str(row["framework"]),
            hardware=str(row["hardware"]),
        )
        try:
            if not math.isfinite(measured) or measured <= 0:
                raise LLMSimError(f"value={row['value']!r} is not a positive number")
            result.predicted = predict(row, extra, max_requests)
            result.error_pct = (result.predicted - result.measured) / result.measured * 100.0
        except Exception as exc:  # one bad case never stops the others
            result.reason = " ".join(str(exc).split()) or type(exc).__name__
        result.wall_s = time.perf_counter() - started
        results.append(result)
    return results


def model_family(model: str) -> str:
    """``dense``, ``MoE`` or ``MLA`` (DeepSeek's latent attention, with MoE) for a model id; ``unknown`` if none."""
    from llmsim.models import builtin_model_profiles

    profile = builtin_model_profiles().get(model)
    if profile is None:
        return "unknown"
    return "MLA" if profile.is_mla else "MoE" if profile.is_moe else "dense"


def family_table(results: list[CaseResult]) -> pd.DataFrame:
    """Error by model family x framework x GPU: cases, cases run, median and worst |error|, mean signed error."""
    frame = results_frame(results)
    frame["abs_error_pct"] = frame["error_pct"].abs()
    groups = frame.groupby(["family", "framework", "hardware"], sort=True)
    table = groups.agg(
        cases=("case_id", "size"),
        run=("error_pct", "count"),
        median_abs_err_pct=("abs_error_pct", "median"),
        max_abs_err_pct=("abs_error_pct", "max"),
        mean_err_pct=("error_pct", "mean"),
    )
    return table.reset_index()


def format_family_table(table: pd.DataFrame) -> str:
    """The family table as aligned text (blank error columns where no case of the group ran)."""
    header = f"{'family':7s} {'framework':9s} {'gpu':6s} {'run':>7s} {'median|err|':>12s} {'max|err|':>9s} {'bias':>7s}"
    lines = [header]
    for r in table.itertuples(index=False):
        errors = (
            f"{r.median_abs_err_pct:11.1f}% {r.max_abs_err_pct:8.1f}% {r.mean_err_pct:+6.1f}%"
            if r.run
            else f"{'':12s} {'':9s} {'':7s}"
        )
        lines.append(f"{r.family:7s} {r.framework:9s} {r.hardware:6s} {f'{r.run}/{r.cases}':>7s} {errors}")
    return "\n".join(lines)


def summary_line(results: list[CaseResult]) -> str:
    """``median_abs_err_pct=X p90_abs_err_pct=Y cases_run=N/M``."""
    errors = np.array([abs(r.error_pct) for r in results if r.error_pct is not None])
    median = float(np.median(errors)) if len(errors) else float("nan")
    p90 = float(np.percentile(errors, 90)) if len(errors) else float("nan")
    return f"median_abs_err_pct={median:.2f} p90_abs_err_pct={p90:.2f} cases_run={len(errors)}/{len(results)}"


def results_frame(results: list[CaseResult]) -> pd.DataFrame:
    """The results as a table (one row per case)."""
    return pd.DataFrame(
        [
            {
                "case_id": r.case_id,
                "family": r.family,
                "framework": r.framework,
                "hardware": r.hardware,
                "metric": r.metric,
                "predicted": r.predicted,
                "measured": r.measured,
                "error_pct": r.error_pct,
                "status": "ok" if r.error_pct is not None else "not run",
                "reason": r.reason,
                "note": r.note,
                "wall_s": round(r.wall_s, 3),
            }
            for r in results
        ]
    )


def split_inputs(inputs: list[str]) -> tuple[Path, list[str]]:
    """The cases file (default: the shipped cases) and the extra overrides among the positional arguments.

    An existing file is the cases file; so is an argument that does not look like a Hydra override
    (``key=value``, ``+key=value``, ``~key``).
    """
    files = [a for a in inputs if Path(a).is_file() or ("=" not in a and not a.startswith("~"))]
    overrides = [a for a in inputs if a not in files]
    if len(files) > 1:
        raise UsageError(
            f"python -m llmsim.validate: one cases file at a time, got {', '.join(files)} (overrides are key=value)"
        )
    return (Path(files[0]) if files else CASES_FILE), overrides


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m llmsim.validate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="CASES.csv | OVERRIDE",
        help=f"a CSV in the schema of {SCHEMA_NAME} (default: the shipped cases, {CASES_FILE.name}), "
        "then extra Hydra overrides (key=value) applied to every case",
    )
    parser.add_argument("--out", type=Path, help="write predictions and errors to this CSV")
    args = parser.parse_args(argv)
    cases_file, overrides = split_inputs(args.inputs)
    if args.out is not None and args.out.is_dir():
        raise ConfigError("--out", str(args.out), "a file path, not a directory")
    cases = load_cases(cases_file)
    check_extra_overrides(cases, overrides)
    results = run_cases(cases, overrides)
    for r in results:
        if r.error_pct is None:
            print(f"{r.case_id:45s} {r.metric:28s} NOT RUN: {r.reason}")
        else:
            note = f"  ({r.note})" if r.note else ""
            print(
                f"{r.case_id:45s} {r.metric:28s} predicted={r.predicted:12.2f} measured={r.measured:12.2f} "
                f"error={r.error_pct:+7.1f}%{note}"
            )
    print()
    print(format_family_table(family_table(results)))
    if args.out:
        table = results_frame(results)
        write_output(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(summary_line(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: a user mistake ends in one line on stderr and exit status 2."""
    return run_entry_point(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
