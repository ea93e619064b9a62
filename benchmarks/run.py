"""``python -m benchmarks.run [--quick] [SCENARIO ...]``: how fast llmsim simulates.

Each scenario is a preset (``python -m llmsim experiment=bench_<name>`` runs it from the shell) and
runs here in its own process so that peak memory is its own. For each, the table gives simulated
requests per wall second, simulated seconds per wall second, engine steps per wall second and the
peak RSS of the process. ``--quick`` shrinks every scenario (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "chat_1h": "bench_chat_1h",
    "offline_30k": "bench_offline_30k",
    "long_context": "bench_long_context",
    "trace_1m": "bench_trace_1m",
}
QUICK = {
    "chat_1h": ["workload.total_duration=120"],
    "offline_30k": ["workload.num_requests=2000"],
    "long_context": ["workload.num_requests=200"],
    "trace_1m": ["workload.loop=70"],
}


CHILD = r"""
import json, resource, sys, time, contextlib, io
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from llmsim.cli import experiment_container
from llmsim.models import CONF_DIR
from llmsim.orchestrator import ExperimentOrchestrator
overrides = json.loads(sys.argv[1])
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
    cfg = compose(config_name="config", overrides=overrides)
config = experiment_container(OmegaConf.to_container(cfg, resolve=True))
for key in ("output_summary_json_path", "output_requests_parquet_path", "output_steps_parquet_path", "output_requests_csv_path"):
    config["metrics"][key] = None
orchestrator = ExperimentOrchestrator(config)
started = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    summary = orchestrator.run(show_progress=False, print_table=False)
wall = time.perf_counter() - started
metrics = next(iter(summary["frameworks"].values()))
requests = sum(m["completed"] + m["failed"] + m["incomplete"] for m in summary["frameworks"].values())
steps = sum(m["num_steps"] for m in summary["frameworks"].values())
print(json.dumps({
    "wall_s": wall,
    "requests": requests,
    "simulated_s": summary["simulated_time_s"],
    "steps": steps,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "output_throughput": metrics["output_throughput"],
}))
"""


def run_scenario(name: str, quick: bool, step_series: bool = False) -> dict:
    """Run one scenario in a fresh interpreter; returns its measurements.

    No result file is written; ``step_series`` keeps the per-step series anyway (the work a run that
    writes ``steps.parquet``, the default, does before writing it).
    """
    overrides = [f"experiment={SCENARIOS[name]}", *(QUICK[name] if quick else [])]
    if step_series:
        overrides.append("metrics.record_step_series=true")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(overrides)], cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small versions of every scenario (smoke test)")
    parser.add_argument(
        "--step-series", action="store_true", help="keep the per-step series, as runs that write steps.parquet do"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    header = f"{'scenario':14s} {'wall s':>8s} {'requests':>10s} {'req/wall s':>11s} {'sim s/wall s':>13s} {'steps/wall s':>13s} {'peak RSS MB':>12s}"
    print(header)
    results = {}
    for name in names:
        r = run_scenario(name, args.quick, args.step_series)
        results[name] = r
        if "error" in r:
            print(f"{name:14s} ERROR: {r['error']}")
            continue
        wall = r["wall_s"]
        print(
            f"{name:14s} {wall:8.2f} {r['requests']:10,d} {r['requests'] / wall:11,.0f} "
            f"{r['simulated_s'] / wall:13,.1f} {r['steps'] / wall:13,.0f} {r['peak_rss_mb']:12,.0f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
