"""Result files are written atomically (temp file + rename); a file that cannot be written is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, make_config

from llmsim import ExperimentOrchestrator
from llmsim.errors import ConfigError, OutputError
from llmsim.outputs import atomic_write, write_json

WRITE_CALL = re.compile(
    r"\.(write_text|write_bytes|to_parquet|to_csv|savefig|write_table)\(|ParquetWriter\(|open\(.*[\"'][wa]"
)
# write calls that are not result files, or that write the temporary file atomic_write hands them
NOT_RESULT_FILES = {
    ("llmsim/sweep/compare.py", "result.to_csv(index=False)"),  # renders a string
    ("llmsim/outputs.py", "writer = pq.ParquetWriter(path"),  # _write_parts: given atomic_write's temp path
    ("llmsim/outputs.py", "writer.write_table(table.cast"),
    ("llmsim/sweep/aggregate.py", "writer.write_table(table)"),  # _write_requests: the writer opened on tmp
    (
        "llmsim/sweep/aggregate.py",
        "pq.write_table(table.replace_schema_metadata(metadata), path)",
    ),  # write_runs_table(tmp)
}
NOT_MINE = {"llmsim/calibrate.py", "llmsim/validate.py"}  # see test_calibrate_and_validate_write_atomically


def write_sites() -> list[tuple[str, int, str]]:
    sites = []
    for path in sorted((REPO / "llmsim").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if WRITE_CALL.search(line) and not line.lstrip().startswith(("#", '"')):
                sites.append((name, number, line.strip()))
    return sites


def test_every_result_file_is_written_through_a_temporary_file_and_a_rename():
    offenders = [
        f"{name}:{number}: {line}"
        for name, number, line in write_sites()
        if name not in NOT_MINE
        and "tmp" not in line  # inside atomic_write's callback
        and not any(name == file and snippet in line for file, snippet in NOT_RESULT_FILES)
    ]
    assert not offenders, "\n".join(offenders)


def test_calibrate_and_validate_write_atomically():
    assert not [site for site in write_sites() if site[0] in NOT_MINE and "tmp" not in site[2]]


def test_an_interrupted_write_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"version": 1})

    def crash(tmp: Path) -> None:
        tmp.write_text('{"version": 2, "frameworks": {')  # half the new content, then the process dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_result_files_get_the_permissions_of_any_new_file_not_the_private_temporary_ones(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "summary.json", {"version": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644  # readable by a team, like plain.txt
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


def outputs_config(**paths: str | None) -> dict:
    metrics = {
        "output_summary_json_path": "summary.json",
        "output_requests_parquet_path": "requests.parquet",
        "output_steps_parquet_path": "steps.parquet",
        **paths,
    }
    return make_config(workload={"kind": "offline", "num_requests": 2}, metrics=metrics)


def test_a_result_file_that_cannot_be_written_is_one_line_naming_its_key(tmp_path):
    (tmp_path / "taken").write_text("a file where a directory should be")
    config = outputs_config(output_requests_parquet_path="taken/requests.parquet")
    with pytest.raises(OutputError) as info:
        ExperimentOrchestrator(config, output_dir=tmp_path).run(show_progress=False, print_table=False)
    message = str(info.value)
    assert "\n" not in message and "metrics.output_requests_parquet_path='taken/requests.parquet'" in message


def test_two_outputs_in_one_file_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"metrics\.output_steps_parquet_path.*output_requests_parquet_path"):
        ExperimentOrchestrator(outputs_config(output_steps_parquet_path="./requests.parquet"), output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_long_request_table_is_written_in_row_groups_and_reads_back_whole(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq

    import llmsim.outputs as outputs_module

    monkeypatch.setattr(outputs_module, "REQUEST_ROW_GROUP", 7)  # converted a slice at a time: no second copy
    config = outputs_config()
    config["workload"]["num_requests"] = 30
    orchestrator = ExperimentOrchestrator(config, output_dir=tmp_path)
    orchestrator.run(show_progress=False, print_table=False)
    assert pq.ParquetFile(tmp_path / "requests.parquet").num_row_groups == 5
    written = pd.read_parquet(tmp_path / "requests.parquet")
    pd.testing.assert_frame_equal(written, orchestrator.metrics_collector.get_all_request_metrics_df())
