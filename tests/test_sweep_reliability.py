"""Sweeps and their tables never lose data (issue 16, items 1, 4, 12, 13 and 16): aggregation refuses
what is not a sweep and tables it did not write, one sweep at a time per directory, a job that cannot
write fails alone, resume checks a job's files, failed jobs make the exit status non-zero."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from llmsim.cli import finished_run
from llmsim.sweep.lock import SweepLock, sweep_id

SWEEP = ["workload.total_duration=5,6", "simulation.max_simulation_time=30"]
JOB5 = "simulation.max_simulation_time=30,workload.total_duration=5"
JOB6 = "simulation.max_simulation_time=30,workload.total_duration=6"


def llmsim(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=240)


def sweep(sweep_dir: Path, *extra: str, overrides: list[str] = SWEEP) -> subprocess.CompletedProcess[str]:
    return llmsim("llmsim", "--multirun", *overrides, *extra, "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep_dir}")


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("llmsim: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("reliability") / "sweep"
    result = sweep(sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(finished_sweep, copy, symlinks=True)
    return copy


# ---- item 1: aggregate refuses what is not a sweep and never replaces a file it did not write ------------
@pytest.mark.slow
def test_aggregate_of_a_single_runs_directory_refuses_in_one_line_and_leaves_it_whole(sweep_copy):
    job = sweep_copy / JOB5
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    result = llmsim("llmsim.aggregate", str(job))
    assert result.returncode == 2
    assert "is a single run's directory, not a sweep" in error_line(result)
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_aggregate_of_a_directory_of_single_runs_refuses_and_writes_nothing(sweep_copy, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for job in (JOB5, JOB6):
        shutil.copytree(sweep_copy / job, runs / job)
    result = llmsim("llmsim.aggregate", str(runs))
    assert result.returncode == 2 and "no multirun.yaml (a directory of single runs)" in error_line(result)
    assert sorted(p.name for p in runs.iterdir()) == sorted([JOB5, JOB6])


@pytest.mark.slow
def test_aggregate_never_replaces_a_table_it_did_not_write(sweep_copy):
    foreign = sweep_copy / "requests.parquet"
    foreign.write_bytes((sweep_copy / JOB5 / "requests.parquet").read_bytes())  # a single run's table
    mine = foreign.read_bytes()
    result = llmsim("llmsim.aggregate", str(sweep_copy))
    assert result.returncode == 2 and "was not written by llmsim.aggregate" in error_line(result)
    assert foreign.read_bytes() == mine
    foreign.unlink()
    (sweep_copy / "runs.parquet").unlink()
    (sweep_copy / "runs.parquet").symlink_to(sweep_copy / JOB5 / "requests.parquet")
    linked = llmsim("llmsim.aggregate", str(sweep_copy))
    assert linked.returncode == 2 and "is a link or a directory" in error_line(linked)
    (sweep_copy / "runs.parquet").unlink()
    again = llmsim("llmsim.aggregate", str(sweep_copy))  # its own tables it rebuilds as often as asked
    assert again.returncode == 0 and "2 runs aggregated (2 ok, 0 failed)" in again.stdout
    assert llmsim("llmsim.aggregate", str(sweep_copy)).returncode == 0


# ---- item 4: one sweep at a time in a directory --------------------------------------------------------
def task_overrides(sweep_dir: Path) -> list[str]:
    return yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]


@pytest.mark.slow
def test_a_different_sweep_into_the_directory_of_a_running_one_is_refused_in_one_line(sweep_copy):
    running = SweepLock(sweep_copy, sweep_id("config", ["workload.rate=1,2,3"]))
    running.acquire()
    before = (sweep_copy / "multirun.yaml").read_bytes()
    try:
        result = sweep(sweep_copy, overrides=["workload.total_duration=7,8", "simulation.max_simulation_time=30"])
    finally:
        running.release()
    assert result.returncode == 2
    assert "a different sweep" in error_line(result) and "hydra.sweep.dir=" in error_line(result)
    assert (sweep_copy / "multirun.yaml").read_bytes() == before  # the running sweep's record is untouched
    assert not (sweep_copy / "simulation.max_simulation_time=30,workload.total_duration=7").exists()


@pytest.mark.slow
def test_an_identical_sweep_runs_beside_a_running_one_and_a_stale_lock_is_cleared(sweep_copy):
    running = SweepLock(sweep_copy, sweep_id("config", task_overrides(sweep_copy)))
    running.acquire()
    stale = sweep_copy / ".llmsim" / "sweeps" / "0123456789abcdef-1.lock"
    stale.touch()  # a sweep killed long ago: nobody holds it
    try:
        result = sweep(sweep_copy, "resume=false")
    finally:
        running.release()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 runs aggregated (2 ok, 0 failed)" in result.stdout
    assert not stale.exists()


# ---- item 12: a job that cannot write into its directory fails alone ----------------------------------------
@contextmanager
def unwritable(path: Path, *, recursive: bool = False) -> Iterator[None]:
    """Make a directory unwritable (chattr +i as root, where permissions do not stop anyone; else chmod)."""
    import os

    flags = ["-R"] if recursive else []
    if os.geteuid() == 0:
        made = shutil.which("chattr") and subprocess.run(["chattr", *flags, "+i", str(path)]).returncode == 0
        undo = ["chattr", *flags, "-i", str(path)]
    else:
        targets = [path, *(p for p in path.rglob("*") if p.is_dir())] if recursive else [path]
        for target in targets:
            target.chmod(0o555)
        made, undo = True, ["chmod", "-R" if recursive else "", "u+w", str(path)]
    try:
        try:
            with tempfile.TemporaryFile(dir=path):
                pytest.skip("cannot make a directory unwritable here")
        except OSError:
            pass
        if not made:
            pytest.skip("cannot make a directory unwritable here")
        yield
    finally:
        subprocess.run([part for part in undo if part])


@pytest.mark.slow
def test_a_read_only_job_directory_is_a_failed_row_and_the_other_jobs_aggregate(sweep_copy):
    with unwritable(sweep_copy / JOB5):
        result = sweep(sweep_copy, "resume=false")
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == 3, result.stderr[-3000:]
    runs = pd.read_parquet(sweep_copy / "runs.parquet").set_index("run")
    assert runs.loc[JOB6, "status"] == "ok"
    assert runs.loc[JOB5, "status"] == "failed" and "cannot write into" in runs.loc[JOB5, "error"]
    requests = pd.read_parquet(sweep_copy / "requests.parquet")
    assert set(requests["run"]) == {JOB6}  # the stale rows of the failed job are left out
    again = sweep(sweep_copy)  # writable again: the job runs, its failure record is gone
    assert again.returncode == 0 and "2 runs aggregated (2 ok, 0 failed)" in again.stdout, again.stdout[-2000:]


@pytest.mark.slow
def test_a_job_directory_hydra_itself_cannot_write_stops_the_sweep_before_it_starts_in_one_line(sweep_copy):
    before = (sweep_copy / "runs.parquet").read_bytes()
    with unwritable(sweep_copy / JOB5, recursive=True):
        result = sweep(sweep_copy, "resume=false")
    assert result.returncode == 2 and f"{JOB5} cannot" in error_line(result)
    assert (sweep_copy / "runs.parquet").read_bytes() == before


# ---- item 13: resume checks a finished job's files ------------------------------------------------------------
@pytest.mark.slow
def test_resume_reruns_a_job_whose_summary_lacks_metrics_or_whose_requests_parquet_is_corrupt(sweep_copy):
    summary_file = sweep_copy / JOB5 / "summary.json"
    summary = json.loads(summary_file.read_text())
    for metrics in summary["frameworks"].values():
        del metrics["output_throughput"]
    summary_file.write_text(json.dumps(summary))
    requests_file = sweep_copy / JOB6 / "requests.parquet"
    requests_file.write_bytes(requests_file.read_bytes()[:200])
    assert finished_run(sweep_copy / JOB5) == (None, "summary.json is missing, corrupt or incomplete")
    assert finished_run(sweep_copy / JOB6) == (None, "requests.parquet is corrupt")
    result = sweep(sweep_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "KeyError" not in log and log.count("re-running") == 2, log[-3000:]
    runs = pd.read_parquet(sweep_copy / "runs.parquet")
    assert set(runs["status"]) == {"ok"} and runs["output_throughput"].notna().all()
    assert finished_run(sweep_copy / JOB6)[0] is not None


# ---- item 16: the smaller things ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_aggregate_of_an_interrupted_sweep_lists_the_jobs_that_never_started(sweep_copy):
    shutil.rmtree(sweep_copy / JOB6)
    result = llmsim("llmsim.aggregate", str(sweep_copy))
    assert result.returncode == 0, result.stderr
    assert "1 runs aggregated (1 ok, 0 failed)" in result.stdout
    assert "1 job(s) never started" in result.stdout and "workload.total_duration=6" in result.stdout


@pytest.mark.slow
def test_hand_edited_nan_strings_keep_a_result_column_numeric_and_touch_no_other(sweep_copy):
    summary_file = sweep_copy / JOB5 / "summary.json"
    summary = json.loads(summary_file.read_text())
    for metrics in summary["frameworks"].values():
        metrics["output_throughput"] = "NaN"
        metrics["mean_ttft_ms"] = "oops"
    summary_file.write_text(json.dumps(summary))
    result = llmsim("llmsim.aggregate", str(sweep_copy))
    assert result.returncode == 0, result.stderr
    runs = pd.read_parquet(sweep_copy / "runs.parquet").set_index("run")
    for column in ("output_throughput", "mean_ttft_ms"):
        assert pd.api.types.is_float_dtype(runs[column])
        assert pd.isna(runs.loc[JOB5, column]) and runs.loc[JOB6, column] > 0
    assert pd.api.types.is_float_dtype(runs["median_ttft_ms"])  # the other columns are as they were
    assert runs.loc[JOB6, "status"] == "ok"


def test_a_directory_as_model_characteristics_db_path_is_reported_as_a_directory(tmp_path, caplog):
    from llmsim import ExperimentOrchestrator

    config = yaml.safe_load((REPO / "conf" / "experiment" / "seed_example.yaml").read_text())
    config["model_characteristics_db_path"] = str(tmp_path)
    with caplog.at_level("WARNING", logger="llmsim"):
        ExperimentOrchestrator(config, output_dir=tmp_path)
    assert f"model_characteristics_db_path {tmp_path} is a directory" in caplog.text
    assert "not found" not in caplog.text


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process ids from /proc")
def test_the_workers_of_a_killed_sweep_exit_instead_of_idling_forever(tmp_path):
    import os
    import signal
    import time

    # more workers than jobs: one of them never gets a job (and so has no watch of its own)
    command = [sys.executable, "-m", "llmsim", "--multirun", "workload.total_duration=1500,1501"]
    command += ["hydra.launcher.n_jobs=3", f"hydra.sweep.dir={tmp_path / 'killed'}"]
    sweep_process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "killed").glob("*/run.json")):
        time.sleep(0.2)
    time.sleep(1.5)  # the watch takes its first look at the pool a second after a job starts
    workers = children_of(sweep_process.pid)
    os.kill(sweep_process.pid, signal.SIGKILL)
    sweep_process.wait()
    assert workers, "the sweep started no worker processes"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes still running after the sweep was killed: {left}"


@pytest.mark.slow
def test_plot_redraws_its_own_charts_but_never_replaces_another_file(sweep_copy):
    first = llmsim("llmsim.plot", str(sweep_copy))
    assert first.returncode == 0, first.stderr
    chart = sweep_copy / "plots" / "latency_vs_throughput.png"
    assert llmsim("llmsim.plot", str(sweep_copy)).returncode == 0  # its own chart: drawn again
    chart.write_bytes(b"my own picture")
    result = llmsim("llmsim.plot", str(sweep_copy))
    assert result.returncode == 2 and "was not drawn by llmsim.plot" in error_line(result)
    assert chart.read_bytes() == b"my own picture"
