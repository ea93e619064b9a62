"""What the README's security notes say about config directories holds (issue 16, item 17).

A preset found through ``--config-dir`` can make Hydra call a ``_target_`` before the run (so such
directories must be treated like scripts); a saved run config replayed through the Python API
instantiates nothing.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from llmsim import ExperimentOrchestrator
from llmsim.cli import experiment_container

PRESET = """# @package _global_
hydra:
  callbacks:
    planted:
      _target_: logging.FileHandler
      filename: {target}
"""


def test_the_readme_tells_users_to_treat_config_directories_like_scripts():
    readme = (REPO / "README.md").read_text()
    notes = readme.split("### Security notes", 1)[1].split("\n## ", 1)[0]
    for phrase in ("hydra.callbacks", "--config-dir", "like scripts", "_target_"):
        assert phrase in notes


@pytest.mark.slow
def test_a_preset_in_a_config_dir_makes_hydra_call_its_callback_target_as_the_notes_warn(tmp_path):
    target = tmp_path / "outside" / "planted.log"
    target.parent.mkdir()
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "planted.yaml").write_text(PRESET.format(target=target))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmsim",
            "--config-dir",
            str(tmp_path / "conf"),
            "experiment=planted",
            "workload.total_duration=2",
            "simulation.max_simulation_time=5",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert target.exists()  # written outside the run directory, by the preset alone


def test_a_saved_config_with_a_callback_run_through_the_api_instantiates_nothing(tmp_path, config_factory):
    config = config_factory()
    config["hydra"] = {"callbacks": {"planted": {"_target_": "logging.FileHandler", "filename": str(tmp_path / "x")}}}
    ExperimentOrchestrator(experiment_container(config), output_dir=None).setup_simulation()  # as rerun does
    assert not (tmp_path / "x").exists()
