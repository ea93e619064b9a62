"""Through the real command line: one-line errors, a stuck framework, and a sweep killed half-way.

Each ``python -m llmsim`` costs about 1.5 s, so the bad-input cases run concurrently, once per module;
the in-process battery (tests/test_robust_config.py) covers every key, these check the CLI's side:
exit code 2, exactly one line on stderr, no traceback and no run directory. Corrupt sweep
directories are built by hand and aggregated in process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, make_config

from llmsim import ExperimentOrchestrator
from llmsim.runinfo import base_run_info, write_run_info
from llmsim.sweep.aggregate import aggregate, describe
from llmsim.sweep.aggregate import main as aggregate_main

pytestmark = pytest.mark.slow

TRACE_HEADER = "arrival_time,input_tokens,output_tokens\n"
TRACES = {
    "missing-column.csv": (b"arrival_time,input_tokens\n0,5\n", "missing column"),
    "negative-length.csv": ((TRACE_HEADER + "0,5,3\n1,-4,3\n").encode(), "line 3"),
    "unsorted.csv": ((TRACE_HEADER + "0,5,3\n2,5,3\n1,5,3\n").encode(), "line 4"),
    "empty.csv": (b"", "empty"),
    "utf16.csv": ((TRACE_HEADER + "0,5,3\n").encode("utf-16"), "not UTF-8"),
}
CASES = {
    "num-gpus-zero": (["hardware.num_gpus=0"], "hardware.num_gpus=0"),
    "memory-text": (["hardware.gpu.memory_capacity_gib=abc"], "hardware.gpu.memory_capacity_gib='abc'"),
    "hardware-typo": (["+hardware.gpu.typo=1"], "hardware.gpu.typo=1"),
    "workload-kind": (["workload.kind=burst"], "workload.kind='burst'"),
    "engine-version": (["framework.engine_version=v3"], "framework.engine_version='v3'"),
    "time-nan": (["simulation.max_simulation_time=nan"], "simulation.max_simulation_time"),
    "negative-count": (["workload=offline", "workload.num_requests=-1"], "workload.num_requests=-1"),
    "kv-heads": (["model.num_key_value_heads=3"], "num_key_value_heads"),
    "no-chunking-short-budget": (
        ["framework.enable_chunked_prefill=false", "framework.max_num_batched_tokens=1024"],
        "framework.max_num_batched_tokens=1024",
    ),
    "trt-policy": (["framework=trtllm", "framework.capacity_scheduler_policy=FAIR"], "capacity_scheduler_policy"),
    "too-many-sessions": (["workload.rate=1e9", "workload.total_duration=1000"], "workload.rate"),
    "bad-interpolation": (["framework.max_num_seqs=${oops}"], "framework.max_num_seqs='${oops}'"),
    **{
        f"trace-{name.split('.')[0]}": (["workload=trace", f"workload.path=TRACES/{name}"], f"{name}")
        for name in TRACES
    },
}


def llmsim_cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every bad command line, run concurrently once."""
    root = tmp_path_factory.mktemp("cli")
    traces = root / "traces"
    traces.mkdir()
    for name, (content, _) in TRACES.items():
        (traces / name).write_bytes(content)

    def one(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        args, _ = CASES[case]
        run_dir = root / case / "run"
        args = [arg.replace("TRACES", str(traces)) for arg in args]
        return llmsim_cli(*args, f"hydra.run.dir={run_dir}"), run_dir

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_on_the_command_line_is_one_line_exit_2_no_traceback_nothing_written(cli_results, case):
    result, run_dir = cli_results[case]
    expected = CASES[case][1]
    if case.startswith("trace-"):
        expected = TRACES[expected][1]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: "), result.stderr
    assert expected in lines[0]
    if case.startswith("trace-"):
        assert CASES[case][0][1].rsplit("/", 1)[1] in lines[0]  # the file is named
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()


STUCK_FRAMEWORK = """
import runpy
import sys
from llmsim.frameworks.continuous import StepPlan
from llmsim.frameworks.registry import register_framework
from llmsim.frameworks.vllm import VLLMFramework

class Stuck(VLLMFramework):
    parked = ()
    def schedule(self):
        return StepPlan()
    def unblock(self):
        self.parked = [*self.parked, *self.waiting]
        self.waiting.clear()
    def in_flight(self):
        return [*super().in_flight(), *self.parked]

register_framework("STUCK", Stuck)
sys.argv = ["llmsim", *sys.argv[1:]]
runpy.run_module("llmsim", run_name="__main__", alter_sys=True)  # as python -m llmsim does
"""


def test_a_framework_stuck_at_run_time_exits_3_naming_it_with_the_others_results_written(tmp_path):
    args = [
        "experiment=compare_frameworks",
        "frameworks.vllm.type=STUCK",
        "workload=offline",
        "workload.num_requests=4",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(
        [sys.executable, "-c", STUCK_FRAMEWORK, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "vllm" in lines[0] and "deadlock" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frameworks"]["sglang"]["completed"] == summary["frameworks"]["trtllm"]["completed"] == 4
    assert summary["frameworks"]["vllm"]["failed"] == 4 and "deadlock" in summary["frameworks"]["vllm"]["error"]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "ok" and "vllm" in info["error"]
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == 12


# ---- sweeps: killed half-way, aggregated, resumed --------------------------------------------------------
SWEEP = ["--multirun", "workload.total_duration=2,60,61,62", "workload.rate=20", "hydra.launcher.n_jobs=1"]


def job_status(sweep_dir: Path) -> dict[str, str]:
    status = {}
    for run_file in sweep_dir.glob("*/run.json"):
        try:
            status[run_file.parent.name] = json.loads(run_file.read_text())["status"]
        except (OSError, ValueError, KeyError):
            status[run_file.parent.name] = "unreadable"  # never: run.json is written atomically
    return status


def test_a_sweep_killed_half_way_can_be_aggregated_and_resumed(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "llmsim", *SWEEP, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the job workers too
    )
    try:
        deadline = time.monotonic() + 90
        while "ok" not in job_status(sweep_dir).values():
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no job finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    first = job_status(sweep_dir)
    finished = [job for job, status in first.items() if status == "ok"]
    assert len(finished) < 4, "every job finished before the kill"
    assert set(first.values()) <= {"ok", "running"}  # run.json is never half-written

    # the tables of what finished, the interrupted job reported and skipped
    assert aggregate_main([str(sweep_dir)]) == 0
    report = capsys.readouterr().out
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert sorted(runs["run"]) == sorted(finished) and (runs["status"] == "ok").all()
    for job, status in first.items():
        if status == "running":
            assert f"skipped {job}: interrupted" in report

    # the same sweep into the same directory: finished jobs are skipped, the rest run
    stamps = {job: (sweep_dir / job / "summary.json").stat().st_mtime_ns for job in finished}
    again = llmsim_cli(*SWEEP, f"hydra.sweep.dir={sweep_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    output = again.stdout + again.stderr
    for job in finished:
        assert f"skipping {sweep_dir / job}" in output
        assert (sweep_dir / job / "summary.json").stat().st_mtime_ns == stamps[job]
    assert set(job_status(sweep_dir).values()) == {"ok"} and len(job_status(sweep_dir)) == 4
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert len(runs) == 4 and (runs["status"] == "ok").all()


# ---- corrupt and partial job directories (built by hand, aggregated in process) ----------------------------
def make_job(sweep_dir: Path, name: str, overrides: list[str], *, summary_of: Path | None = None) -> Path:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    info = base_run_info({"workload": {"rate": overrides}}, overrides)
    info.update(status="ok", error="", wall_time_s=0.1, framework="vllm")
    write_run_info(job, info)
    if summary_of is not None:
        for file in ("summary.json", "requests.parquet"):
            (job / file).write_bytes((summary_of / file).read_bytes())
    return job


def test_corrupt_and_partial_job_directories_are_reported_and_skipped_not_fatal(tmp_path):
    source = tmp_path / "source"
    config = make_config(
        workload={"kind": "offline", "num_requests": 3},
        metrics={"output_summary_json_path": "summary.json", "output_requests_parquet_path": "requests.parquet"},
    )
    ExperimentOrchestrator(config, output_dir=source).run(show_progress=False, print_table=False)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {sweeper: [unclosed")  # half-written: take every job
    make_job(sweep, "good", ["workload.rate=1"], summary_of=source)
    make_job(sweep, "running", ["workload.rate=2"]).joinpath("run.json").write_text('{"status": "running"}')
    make_job(sweep, "corrupt-run-json", ["workload.rate=3"]).joinpath("run.json").write_text("{not json")
    make_job(sweep, "run-json-list", ["workload.rate=4"]).joinpath("run.json").write_text("[1, 2]")
    make_job(sweep, "summary-shape", ["workload.rate=5"]).joinpath("summary.json").write_text('{"frameworks": 3}')
    make_job(sweep, "no-summary", ["workload.rate=6"])
    bad_requests = make_job(sweep, "bad-requests", ["workload.rate=7"], summary_of=source)
    (bad_requests / "requests.parquet").write_bytes(b"PAR1 not parquet")
    make_job(sweep, "overrides-not-a-list", ["workload.rate=8"]).joinpath(".hydra", "overrides.yaml").write_text("5")
    make_job(sweep, "overrides-unparsable", ["workload.rate=9"]).joinpath(".hydra", "overrides.yaml").write_text(
        "- 'workload.rate=[1,'\n"
    )
    stopped = make_job(sweep, "framework-stopped", ["workload.rate=10"], summary_of=source)
    summary = json.loads((stopped / "summary.json").read_text())
    summary["frameworks"]["vllm"]["error"] = "vllm stopped at t=1 s: a deadlock"
    (stopped / "summary.json").write_text(json.dumps(summary))
    (sweep / "stray-file.txt").write_text("not a job")

    tables = aggregate(sweep)
    runs = tables.runs.set_index("run")
    assert runs.loc["good", "status"] == "ok" and runs.loc["good", "completed"] == 3
    assert runs.loc["framework-stopped", "status"] == "failed" and "deadlock" in runs.loc["framework-stopped", "error"]
    for name in ("summary-shape", "no-summary"):
        assert runs.loc[name, "status"] == "failed" and "summary.json" in runs.loc[name, "error"]
    skipped = {path.name: why for path, why in tables.skipped}
    assert "interrupted" in skipped["running"]
    assert "run.json" in skipped["corrupt-run-json"] and "run.json" in skipped["run-json-list"]
    assert "overrides" in skipped["overrides-not-a-list"] and "overrides" in skipped["overrides-unparsable"]
    assert "requests.parquet" in skipped["bad-requests"]
    requests = pd.read_parquet(sweep / "requests.parquet")
    assert set(requests["run"]) == {"good", "framework-stopped"}  # the bad Parquet file is left out
    report = describe(tables, sweep)
    assert "FAILED framework-stopped: vllm stopped" in report and "skipped running: interrupted" in report


def test_a_sweep_with_a_bad_value_in_one_job_still_gets_its_tables(tmp_path):
    source = tmp_path / "source"
    config = make_config(
        workload={"kind": "offline", "num_requests": 2},
        metrics={"output_summary_json_path": "summary.json", "output_requests_parquet_path": "requests.parquet"},
    )
    ExperimentOrchestrator(config, output_dir=source).run(show_progress=False, print_table=False)
    sweep = tmp_path / "sweep"
    make_job(sweep, "good", ["workload.rate=5"], summary_of=source)
    bad = make_job(sweep, "bad", ["workload.rate=abc"])
    info = json.loads((bad / "run.json").read_text())
    info.update(status="failed", error="workload.rate='abc' is not valid: Input should be a valid number")
    (bad / "run.json").write_text(json.dumps(info))
    tables = aggregate(sweep)
    runs = pd.read_parquet(sweep / "runs.parquet").set_index("run")
    assert runs.loc["good", "status"] == "ok" and runs.loc["bad", "status"] == "failed"
    assert sorted(runs["workload.rate"]) == ["5", "abc"]  # mixed values are kept as text
    assert "FAILED bad: workload.rate='abc'" in describe(tables, sweep)
