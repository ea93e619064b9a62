"""The validation cases ship inside the package: ``python -m llmsim.validate`` runs them from anywhere.

The shipped files are copies of ``shared/reference/`` (the project's reference data, beside the
checkout): while that directory exists, the copies must be byte-identical to it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from llmsim.data import CASES_FILE, SCHEMA_FILE
from llmsim.validate import REQUIRED_COLUMNS, load_cases, split_inputs

SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.mark.parametrize(("shipped", "name"), [(CASES_FILE, "calibration_cases.csv"), (SCHEMA_FILE, "validation.md")])
def test_the_shipped_copy_is_identical_to_the_shared_reference(shipped: Path, name: str):
    reference = SHARED_REFERENCE / name
    if not reference.is_file():
        pytest.skip(f"{reference} is not here (a clone without ../shared)")
    assert shipped.read_bytes() == reference.read_bytes(), (
        f"{shipped.relative_to(REPO)} differs from {reference}: copy it (cp {reference} {shipped.relative_to(REPO)})"
    )


def test_the_shipped_cases_have_every_column_the_schema_requires():
    cases = load_cases(CASES_FILE)
    assert set(REQUIRED_COLUMNS) <= set(cases.columns)
    assert cases["case_id"].is_unique and len(cases) > 40
    schema = SCHEMA_FILE.read_text()
    assert all(f"| {column}" in schema or f", {column}" in schema for column in REQUIRED_COLUMNS)


def test_the_cases_are_package_data_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(
        r'^\[tool\.setuptools\.package-data\]\n(?:#.*\n)*"llmsim\.data" = \["\*\.csv", "\*\.md"\]', text, re.M
    )
    assert {p.name for p in CASES_FILE.parent.iterdir()} >= {"__init__.py", CASES_FILE.name, SCHEMA_FILE.name}


def test_positional_arguments_split_into_one_cases_file_and_overrides(tmp_path: Path):
    assert split_inputs([]) == (CASES_FILE, [])
    assert split_inputs(["framework.step_overhead_s=0.001"]) == (CASES_FILE, ["framework.step_overhead_s=0.001"])
    mine = tmp_path / "rate=5.csv"  # an existing file is a file even with "=" in its name
    mine.write_text("x")
    assert split_inputs([str(mine), "hardware=h100"]) == (mine, ["hardware=h100"])
    assert split_inputs(["~metrics.slo_ttft_ms", "+x.y=1"]) == (CASES_FILE, ["~metrics.slo_ttft_ms", "+x.y=1"])
    assert split_inputs(["mine.csv", "a=1"]) == (Path("mine.csv"), ["a=1"])  # missing: load_cases says so


@pytest.mark.slow
def test_validate_with_no_argument_runs_the_shipped_cases_from_any_directory(tmp_path: Path):
    # from a directory with no ../shared beside it: the package finds its cases (and conf/) itself
    out = tmp_path / "pred.csv"
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.validate", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    total = len(pd.read_csv(CASES_FILE))
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"median_abs_err_pct=(\d+\.\d\d) p90_abs_err_pct=(\d+\.\d\d) cases_run=(\d+)/(\d+)", last)
    assert match, last
    assert int(match.group(4)) == total and int(match.group(3)) > total // 2
    assert float(match.group(1)) < 25.0  # the model predicts the published numbers; a broken one does not
    assert len(pd.read_csv(out)) == total


def test_calibrate_with_no_argument_reads_the_shipped_cases():
    # --factors that selects nothing stops before any simulation, listing the factors the cases inform
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.calibrate", "--factors", "nothing"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "hopper.efficiency.gemm_flops_fp8" in result.stderr and "trtllm.step_overhead_s" in result.stderr
