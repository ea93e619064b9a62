"""Where a run may write (issue 16, items 2 and 3): inside its run directory, never over a file llmsim
did not write, never through a link; sweeps read each job's results from where its config put them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, make_config

from llmsim import ExperimentOrchestrator
from llmsim.errors import ConfigError

QUICK = ["workload.total_duration=5", "simulation.max_simulation_time=30"]


def llmsim(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmsim", *args], cwd=cwd, capture_output=True, text=True, timeout=180)


def single_run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return llmsim(*QUICK, f"hydra.run.dir={run_dir}", *overrides)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("llmsim: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.slow
def test_an_absolute_output_path_outside_the_run_needs_the_opt_in_and_never_replaces_a_users_file(tmp_path):
    important = tmp_path / "important.txt"
    important.write_text("keep me\n")
    run_dir = tmp_path / "run"
    line = one_error_line(single_run(run_dir, f"metrics.output_requests_csv_path={important}"))
    assert "metrics.output_requests_csv_path=" in line and "metrics.allow_outside_run_dir=true" in line
    opted_in = single_run(
        run_dir, f"metrics.output_requests_csv_path={important}", "metrics.allow_outside_run_dir=true"
    )
    assert "llmsim did not write it" in one_error_line(opted_in) and "overwrite=true" in one_error_line(opted_in)
    assert important.read_text() == "keep me\n"
    assert not (run_dir / "summary.json").exists()  # refused before anything was simulated or written
    forced = single_run(
        run_dir, f"metrics.output_requests_csv_path={important}", "metrics.allow_outside_run_dir=true", "overwrite=true"
    )
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert important.read_text().startswith("framework,request_id")
    assert json.loads((run_dir / "run.json").read_text())["outputs"]["requests_csv"] == str(important.resolve())


@pytest.mark.slow
def test_a_relative_output_path_may_not_climb_out_of_the_run_directory(tmp_path):
    run_dir = tmp_path / "a" / "run"
    line = one_error_line(single_run(run_dir, "metrics.output_summary_json_path=x/../../y.json"))
    assert "metrics.output_summary_json_path='x/../../y.json' is not valid: a path inside the run directory" in line
    assert not list(tmp_path.rglob("y.json"))


def test_a_folder_linked_out_of_the_run_directory_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results").symlink_to(outside)
    config = make_config(workload={"num_requests": 1}, metrics={"output_summary_json_path": "results/summary.json"})
    with pytest.raises(ConfigError, match="leaves it through a link"):
        ExperimentOrchestrator(config, output_dir=run_dir).run(show_progress=False, print_table=False)
    assert not list(outside.iterdir())


def test_outputs_may_not_take_the_runs_own_records(tmp_path):
    for value in ("run.json", ".hydra/config.yaml"):
        config = make_config(metrics={"output_summary_json_path": value})
        with pytest.raises(ConfigError, match="the run's own records"):
            ExperimentOrchestrator(config, output_dir=tmp_path)


@pytest.mark.slow
def test_a_file_in_the_run_directory_that_llmsim_did_not_write_is_kept_unless_overwrite_is_true(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.csv").write_text("mine\n")
    line = one_error_line(single_run(run_dir, "metrics.output_requests_csv_path=notes.csv"))
    assert "notes.csv exists and llmsim did not write it" in line
    assert (run_dir / "notes.csv").read_text() == "mine\n"
    again = single_run(run_dir, "metrics.output_requests_csv_path=notes.csv", "overwrite=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "notes.csv").read_text().startswith("framework,")
    # what llmsim wrote there (run.json lists it) it may replace on the next run into the same directory
    third = single_run(run_dir, "metrics.output_requests_csv_path=notes.csv")
    assert third.returncode == 0, third.stderr[-2000:]


def test_a_symlink_at_an_output_path_is_refused_not_followed_even_with_overwrite(tmp_path):
    target = tmp_path / "precious.json"
    target.write_text("{}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").symlink_to(target)
    config = make_config(workload={"num_requests": 1}, metrics={"output_summary_json_path": "summary.json"})
    from llmsim.outputs import OutputPolicy, output_policy

    with output_policy(OutputPolicy(overwrite=True)), pytest.raises(ConfigError, match="symbolic link"):
        ExperimentOrchestrator(config, output_dir=run_dir).run(show_progress=False, print_table=False)
    assert target.read_text() == "{}\n" and (run_dir / "summary.json").is_symlink()


def test_the_api_run_twice_into_one_directory_replaces_only_its_own_files(tmp_path):
    config = make_config(workload={"num_requests": 2}, metrics={"output_summary_json_path": "out/summary.json"})
    first = ExperimentOrchestrator(config, output_dir=tmp_path).run(show_progress=False, print_table=False)
    listed = json.loads((tmp_path / "run.json").read_text())["outputs"]
    assert listed == {"summary": "out/summary.json"}
    second = ExperimentOrchestrator(config, output_dir=tmp_path).run(show_progress=False, print_table=False)
    assert second["frameworks"] == first["frameworks"]


@pytest.mark.slow
def test_rerun_writes_into_a_fresh_directory_of_its_own_not_where_the_saved_config_says(tmp_path):
    outside = tmp_path / "theirs.json"
    run_dir = tmp_path / "someone" / "run"
    made = single_run(
        run_dir, f"metrics.output_summary_json_path={outside}", "metrics.allow_outside_run_dir=true", "overwrite=true"
    )
    assert made.returncode == 0, made.stderr[-2000:]
    original = outside.read_bytes()
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.rerun", str(run_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0 and "reproduced" in result.stdout, result.stderr[-2000:]
    reruns = list((tmp_path / "outputs" / "reruns").glob("*/*"))
    assert len(reruns) == 1 and (reruns[0] / "summary.json").is_file()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert outside.read_bytes() == original
    taken = subprocess.run(
        [sys.executable, "-m", "llmsim.rerun", str(run_dir), "--out", str(run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert taken.returncode == 2 and "a new or empty directory" in taken.stderr


@pytest.mark.slow
def test_a_sweep_reads_each_jobs_results_where_its_config_put_them_and_resumes_them(tmp_path):
    sweep_dir = tmp_path / "seed"
    args = [
        "--multirun",
        "experiment=seed_example",
        "experiment.workload.total_duration=20,30",
        "simulation.max_simulation_time=60",
        "hydra.launcher.n_jobs=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    first = llmsim(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 runs aggregated (2 ok, 0 failed)" in first.stdout
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert set(runs["status"]) == {"ok"} and runs["output_throughput"].notna().all()
    second = llmsim(*args)
    assert (second.stdout + second.stderr).count("finished before with the same config") == 2, second.stdout[-3000:]


@pytest.mark.slow
def test_a_sweep_refuses_an_output_path_its_jobs_would_share_before_any_job_starts(tmp_path):
    shared = tmp_path / "shared.json"
    common = ["simulation.max_simulation_time=30", "hydra.launcher.n_jobs=1", "metrics.allow_outside_run_dir=true"]
    result = llmsim(
        "--multirun",
        "workload.total_duration=5,6",
        *common,
        f"metrics.output_summary_json_path={shared}",
        f"hydra.sweep.dir={tmp_path / 'one'}",
    )
    line = one_error_line(result)
    assert "in a --multirun sweep a path inside the job's directory (every job would write" in line
    assert not shared.exists() and not (tmp_path / "one").exists()
    # swept, each job has a file of its own outside its directory: each job is refused, the others' tables stand
    swept = llmsim(
        "--multirun",
        "workload.total_duration=5",
        *common,
        f"metrics.output_summary_json_path={tmp_path / 'a.json'},{tmp_path / 'b.json'}",
        f"hydra.sweep.dir={tmp_path / 'two'}",
    )
    assert swept.returncode == 3 and "Traceback" not in swept.stderr, swept.stderr[-2000:]
    runs = pd.read_parquet(tmp_path / "two" / "runs.parquet")
    assert len(runs) == 2 and set(runs["status"]) == {"failed"}
    assert runs["error"].str.contains("in a --multirun sweep a path inside the job's directory").all()
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()


def test_a_run_directory_from_before_outputs_were_listed_is_still_llmsims_to_replace(tmp_path):
    config = make_config(workload={"num_requests": 1}, metrics={"output_summary_json_path": "summary.json"})
    (tmp_path / "summary.json").write_text("{}\n")
    (tmp_path / "run.json").write_text(json.dumps({"config_hash": "0" * 64, "status": "ok"}))  # an older llmsim's
    ExperimentOrchestrator(config, output_dir=tmp_path).run(show_progress=False, print_table=False)
    assert json.loads((tmp_path / "run.json").read_text())["outputs"] == {"summary": "summary.json"}
    (tmp_path / "run.json").write_text(json.dumps({"status": "ok"}))  # not a run.json llmsim wrote
    with pytest.raises(ConfigError, match="llmsim did not write it"):
        ExperimentOrchestrator(config, output_dir=tmp_path).run(show_progress=False, print_table=False)
