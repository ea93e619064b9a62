"""Every tool besides ``python -m llmsim`` ends a user mistake the same way: one line, exit 2, no traceback.

Each command runs through the real command line (``python -m llmsim.<tool>``), concurrently, once per
module; each case names the entry point, its arguments and a fragment the one line must contain
(the key, the value or the file that is wrong).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

CASES_HEADER = "case_id,hardware,num_gpus,tp,model,dtype,framework,kind,input_len,output_len,batch_size,metric,value\n"
ONE_CASE = CASES_HEADER + "bs8,a100,1,1,llama3_8b,bf16,vllm,batch,32,16,8,e2e_ms_mean,100\n"
TRACE_HEADER = "arrival_time,input_tokens,output_tokens\n"

#: Files the cases below refer to as FILES/<name>; a name ending in "/" is a directory.
FILES: dict[str, bytes] = {
    "cases.csv": ONE_CASE.encode(),
    "header-only.csv": CASES_HEADER.encode(),
    "no-value-column.csv": b"case_id,hardware\nx,a100\n",
    "utf16-cases.csv": ONE_CASE.encode("utf-16"),
    "not-a-csv.csv": b'a,b\n1,2,3,4\n"unterminated\n',
    "trace.csv": (TRACE_HEADER + "0,5,3\n1,4,3\n").encode(),
    "trace-missing-column.csv": b"arrival_time,input_tokens\n0,5\n",
    "trace-negative.csv": (TRACE_HEADER + "0,5,3\n1,-4,3\n").encode(),
    "trace.yaml": b"hello: 1\n",
    "a-file": b"x",
    "somedir/": b"",
    "no-hydra/summary.json": b"{}",
    "sweep/multirun.yaml": b"hydra: {}\n",
    "bad-config/.hydra/config.yaml": b"a: [\n",
    "unfinished/.hydra/config.yaml": b"seed: 1\n",
    "bad-summary/.hydra/config.yaml": b"seed: 1\n",
    "bad-summary/summary.json": b'{"frameworks": ',
}

CASES: dict[str, tuple[str, list[str], str]] = {
    # python -m llmsim.inspect: the same checks as python -m llmsim
    "inspect-group-option": ("llmsim.inspect", ["hardware=h10"], "hardware='h10' is not valid: one of a100"),
    "inspect-unknown-key": ("llmsim.inspect", ["framework.max_num_seq=64"], "framework.max_num_seq"),
    "inspect-unknown-key-plus": ("llmsim.inspect", ["+framework.max_num_seq=64"], "framework.max_num_seq"),
    "inspect-bad-value": ("llmsim.inspect", ["framework.max_num_seqs=abc"], "framework.max_num_seqs='abc'"),
    "inspect-out-of-range": ("llmsim.inspect", ["hardware.num_gpus=0"], "hardware.num_gpus=0"),
    "inspect-does-not-fit": ("llmsim.inspect", ["model=llama3_70b"], "tensor_parallel_size=2 would fit"),
    "inspect-no-equal-sign": ("llmsim.inspect", ["h100"], "h100"),
    "inspect-interpolation": ("llmsim.inspect", ["framework.max_num_seqs=${oops}"], "oops"),
    "inspect-flag": ("llmsim.inspect", ["--multirun", "framework=vllm,sglang"], "--multirun"),
    "inspect-config-dir-missing": ("llmsim.inspect", ["--config-dir", "FILES/nope", "hardware=a100"], "--config-dir="),
    "inspect-config-dir-option": (
        "llmsim.inspect",
        ["--config-dir", "FILES/somedir", "hardware=a100_calibrated"],
        "hardware='a100_calibrated' is not valid: one of a100",
    ),
    # python -m llmsim.validate
    "validate-missing-file": ("llmsim.validate", ["FILES/nope.csv"], "no such file"),
    "validate-directory": ("llmsim.validate", ["FILES/somedir"], "not a directory"),
    "validate-not-utf8": ("llmsim.validate", ["FILES/utf16-cases.csv"], "utf16-cases.csv"),
    "validate-not-a-csv": ("llmsim.validate", ["FILES/not-a-csv.csv"], "not-a-csv.csv"),
    "validate-columns": ("llmsim.validate", ["FILES/no-value-column.csv"], "missing num_gpus"),
    "validate-header-only": ("llmsim.validate", ["FILES/header-only.csv"], "at least one case"),
    "validate-unknown-flag": ("llmsim.validate", ["FILES/cases.csv", "--bogus"], "unrecognized arguments: --bogus"),
    "validate-out-directory": ("llmsim.validate", ["FILES/cases.csv", "--out", "FILES/somedir"], "--out="),
    "validate-extra-group": ("llmsim.validate", ["FILES/cases.csv", "hardware=h10"], "hardware='h10'"),
    "validate-extra-key": ("llmsim.validate", ["FILES/cases.csv", "framework.max_num_seq=8"], "framework.max_num_seq"),
    "validate-extra-value": (
        "llmsim.validate",
        ["FILES/cases.csv", "hardware.efficiency.hbm_bandwidth=2"],
        "hardware.efficiency.hbm_bandwidth=2",
    ),
    # python -m llmsim.calibrate
    "calibrate-missing-file": ("llmsim.calibrate", ["FILES/nope.csv"], "no such file"),
    "calibrate-columns": ("llmsim.calibrate", ["FILES/no-value-column.csv"], "missing num_gpus"),
    "calibrate-int-flag": ("llmsim.calibrate", ["FILES/cases.csv", "--steps", "abc"], "--steps: invalid int value"),
    "calibrate-zero-steps": ("llmsim.calibrate", ["FILES/cases.csv", "--steps", "0"], "--steps=0"),
    "calibrate-no-factor": ("llmsim.calibrate", ["FILES/cases.csv", "--factors", "nope"], "--factors='nope'"),
    "calibrate-out-file": ("llmsim.calibrate", ["FILES/cases.csv", "--out", "FILES/a-file"], "--out="),
    # python -m llmsim.rerun
    "rerun-no-argument": ("llmsim.rerun", [], "required: run_dir"),
    "rerun-missing-dir": ("llmsim.rerun", ["FILES/nope"], "an existing run directory"),
    "rerun-a-file": ("llmsim.rerun", ["FILES/a-file"], "a directory"),
    "rerun-no-hydra": ("llmsim.rerun", ["FILES/no-hydra"], ".hydra/config.yaml"),
    "rerun-sweep-root": ("llmsim.rerun", ["FILES/sweep"], "one of its job directories"),
    "rerun-bad-config": ("llmsim.rerun", ["FILES/bad-config"], "valid YAML"),
    "rerun-unfinished": ("llmsim.rerun", ["FILES/unfinished"], "no summary.json"),
    "rerun-bad-summary": ("llmsim.rerun", ["FILES/bad-summary"], "summary.json reads as JSON"),
    "rerun-unknown-flag": ("llmsim.rerun", ["FILES/unfinished", "--bogus"], "--bogus"),
    # python -m llmsim.workload fit
    "workload-no-command": ("llmsim.workload", [], "required: command"),
    "workload-unknown-command": ("llmsim.workload", ["fitt"], "invalid choice: 'fitt'"),
    "fit-no-file": ("llmsim.workload", ["fit"], "required: file"),
    "fit-missing-file": ("llmsim.workload", ["fit", "FILES/nope.csv"], "no such file"),
    "fit-missing-column": ("llmsim.workload", ["fit", "FILES/trace-missing-column.csv"], "missing column"),
    "fit-negative-length": ("llmsim.workload", ["fit", "FILES/trace-negative.csv"], "line 3"),
    "fit-unknown-format": ("llmsim.workload", ["fit", "FILES/trace.yaml"], "a .csv, .parquet or .jsonl file"),
    "fit-bad-dist": ("llmsim.workload", ["fit", "FILES/trace.csv", "--dist", "normal"], "invalid choice: 'normal'"),
    "fit-quantiles": ("llmsim.workload", ["fit", "FILES/trace.csv", "--quantiles", "1"], "--quantiles=1"),
    "fit-out-directory": ("llmsim.workload", ["fit", "FILES/trace.csv", "--out", "FILES/somedir"], "not a directory"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case, run concurrently once, from a scratch directory holding FILES."""
    root = tmp_path_factory.mktemp("entrypoints")
    for name, content in FILES.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    def one(case: str) -> subprocess.CompletedProcess[str]:
        module, args, _ = CASES[case]
        args = [arg.replace("FILES/", f"{root}/") for arg in args]
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_on_stderr_exit_2_and_no_traceback(results, case):
    result = results[case]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llmsim: error: "), lines[0]
    assert CASES[case][2] in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""  # the mistake is found before anything is printed or simulated


def test_every_tool_is_covered():
    modules = {module for module, _, _ in CASES.values()}
    assert modules == {"llmsim.inspect", "llmsim.validate", "llmsim.calibrate", "llmsim.rerun", "llmsim.workload"}


def test_a_bug_still_shows_its_traceback(tmp_path):
    # only user mistakes are shortened; anything else keeps the traceback that finds the bug
    code = (
        "from llmsim.entrypoint import run_entry_point\n"
        "def broken(argv):\n"
        "    raise ZeroDivisionError('a bug')\n"
        "raise SystemExit(run_entry_point(broken, []))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: a bug" in result.stderr


def test_help_still_exits_0(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmsim.rerun", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "usage: python -m llmsim.rerun" in result.stdout


def test_argument_parser_error_is_one_usage_error():
    from llmsim.entrypoint import ArgumentParser, UsageError

    parser = ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    with pytest.raises(
        UsageError, match=r"^tool: argument --n: invalid int value: 'x' \(usage: tool \[-h\] \[--n N\]\)$"
    ):
        parser.parse_args(["--n", "x"])


def test_written_paths_are_files_not_directories(tmp_path: Path):
    from llmsim.entrypoint import write_output
    from llmsim.errors import OutputError

    with pytest.raises(OutputError, match="not a directory"):
        write_output(tmp_path, lambda tmp: tmp.write_text("x"))
    write_output(tmp_path / "out.txt", lambda tmp: tmp.write_text("x"))
    assert (tmp_path / "out.txt").read_text() == "x"
