"""Scale-out launchers give the joblib sweep's tables, metric for metric, through the real CLI.

Ray (a local instance the CLI starts itself, and an existing cluster it joins) and submitit (its
local executor runs the jobs; the SLURM executor is checked up to the sbatch script it submits).
These need the extras (``pip install -e '.[dev,ray,slurm]'``) and skip without them.

Ray is kept on the loopback interface: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes a Linux Ray a
single-node one whose node address is 127.0.0.1 (otherwise Ray swaps 127.0.0.1 for the machine's
routable address), and usage-stats reporting is off.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

SWEEP = ["workload.rate=5,10", "framework.max_num_seqs=64,256", "workload.total_duration=5"]
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def multirun(sweep_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m llmsim --multirun`` of the test sweep into ``sweep_dir`` (extra overrides first)."""
    return subprocess.run(
        [sys.executable, "-m", "llmsim", "--multirun", *overrides, *SWEEP, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def job_names(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_same_sweep(expected: Path, actual: Path) -> None:
    """Same job directories, same runs.parquet (wall time aside) and same requests.parquet."""
    assert job_names(actual) == job_names(expected)
    runs_expected = pd.read_parquet(expected / "runs.parquet").drop(columns=["wall_time_s"])
    runs_actual = pd.read_parquet(actual / "runs.parquet").drop(columns=["wall_time_s"])
    assert len(runs_actual) == 4 and (runs_actual["status"] == "ok").all()
    pd.testing.assert_frame_equal(runs_actual, runs_expected)
    pd.testing.assert_frame_equal(
        pd.read_parquet(actual / "requests.parquet"), pd.read_parquet(expected / "requests.parquet")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory) -> Path:
    """The reference: the same sweep with the default launcher (joblib, two workers)."""
    sweep_dir = tmp_path_factory.mktemp("launchers") / "joblib"
    result = multirun(sweep_dir, "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def ray_installed() -> None:
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")


@pytest.fixture
def ray_temp_dir() -> Iterator[str]:
    """A short temp dir for Ray's sessions (its socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="llmsim-ray-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(ray_installed) -> Iterator[str]:
    """A Ray head node on 127.0.0.1 (``ray start --head --block``), stopped at the end; yields its address."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="llmsim-ray-")
    port = free_port()
    log_path = Path(temp_dir) / "head.log"
    command = [
        str(ray_bin) if ray_bin.exists() else "ray",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--ray-client-server-port={free_port()}",
        "--dashboard-agent-listen-port=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--num-cpus=2",
        "--object-store-memory=100000000",
        f"--temp-dir={temp_dir}",
    ]
    with log_path.open("w") as log:
        head = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV}, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # the session this fixture started, nothing else
            head.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---- Ray -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_launcher_on_a_local_instance_gives_the_joblib_tables(ray_installed, ray_temp_dir, joblib_sweep, tmp_path):
    # hydra/launcher=ray starts a local instance; address=local insists on a fresh one (never joining
    # another cluster on this machine), which stops when the command ends.
    sweep_dir = tmp_path / "ray-local"
    result = multirun(
        sweep_dir,
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.address=local",
        f"+hydra.launcher.ray.init._temp_dir={ray_temp_dir}",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        env=RAY_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ray Launcher is launching 4 jobs" in result.stderr + result.stdout
    assert_same_sweep(joblib_sweep, sweep_dir)


@pytest.mark.slow
def test_ray_launcher_on_an_existing_cluster_gives_the_joblib_tables(ray_head, joblib_sweep, tmp_path):
    sweep_dir = tmp_path / "ray-cluster"
    result = multirun(
        sweep_dir, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_head}", env=RAY_ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stderr + result.stdout
    assert "Connecting to existing Ray cluster" in output and "(_run_job pid=" in output  # jobs ran as Ray tasks
    assert_same_sweep(joblib_sweep, sweep_dir)
    # aggregation needs nothing but the sweep directory
    (sweep_dir / "runs.parquet").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "llmsim.aggregate", str(sweep_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0 and "4 runs aggregated (4 ok, 0 failed)" in again.stdout
    assert_same_sweep(joblib_sweep, sweep_dir)


@pytest.mark.slow
def test_a_failing_job_on_ray_is_recorded_and_the_others_finish(ray_head, tmp_path):
    sweep_dir = tmp_path / "ray-fail"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "llmsim", "--multirun", "hydra/launcher=ray_cluster"),
            f"hydra.launcher.ray.init.address={ray_head}",
            "model=llama3_8b,llama3_70b",
            "workload.total_duration=5",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **RAY_ENV},
    )
    assert result.returncode == 3, result.stderr[-3000:]  # a sweep with a failed job exits 3, tables written
    runs = pd.read_parquet(sweep_dir / "runs.parquet").set_index("model")
    assert runs.loc["llama3_8b", "status"] == "ok"
    assert runs.loc["llama3_70b", "status"] == "failed" and "tensor_parallel_size=2" in runs.loc["llama3_70b", "error"]


def test_a_relative_sweep_dir_on_a_ray_cluster_is_refused_before_anything_runs(ray_installed, tmp_path):
    # A cluster's workers would resolve it in their own directories, on their own nodes.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "llmsim", "--multirun", "hydra/launcher=ray_cluster"),
            "hydra.launcher.ray.init.address=127.0.0.1:1",
            "workload.rate=5",
            "hydra.sweep.dir=relative/sweep",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **RAY_ENV},
    )
    assert result.returncode == 2
    assert "llmsim: error: hydra.sweep.dir='relative/sweep' is not valid: an absolute path" in result.stderr
    assert not (tmp_path / "relative").exists()


# ---- submitit (SLURM) ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def submitit_installed() -> None:
    pytest.importorskip("submitit")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


@pytest.mark.slow
def test_submitit_local_executor_gives_the_joblib_tables(submitit_installed, joblib_sweep, tmp_path):
    sweep_dir = tmp_path / "submitit-local"
    result = multirun(sweep_dir, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stderr + result.stdout
    assert (sweep_dir / ".submitit").is_dir()  # submitit's own files stay out of the tables
    assert_same_sweep(joblib_sweep, sweep_dir)


def test_submitit_slurm_settings_reach_the_sbatch_script(submitit_installed, tmp_path):
    # No SLURM here: stand-in srun/sbatch commands; sbatch keeps the script it was given and fails.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: error: test stand-in" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    result = multirun(
        tmp_path / "slurm",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=cpu",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.array_parallelism=2",
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert result.returncode != 0 and script.exists(), result.stderr[-3000:]
    text = script.read_text()
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=30", "#SBATCH --cpus-per-task=1", "#SBATCH --array=0-3%2"):
        assert line in text
    assert "submitit.core._submit" in text
