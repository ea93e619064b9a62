"""Every option of every conf/ group composes with Hydra and validates; the seed example validates too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from llmsim.config import ExperimentConfig, load_experiment_config

CONF = Path(__file__).resolve().parent.parent / "conf"
SEED_EXAMPLE = CONF / "experiment" / "seed_example.yaml"

OPTIONS = sorted((path.parent.name, path.stem) for path in CONF.glob("*/*.yaml") if path.parent.name != "hydra")


def compose_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


HF_CONFIG = Path(__file__).parent / "data" / "hf_configs" / "Meta-Llama-3-8B" / "config.json"


def test_every_group_has_options():
    groups = {group for group, _ in OPTIONS}
    assert {"hardware", "model", "workload", "framework", "metrics", "simulation", "experiment"} <= groups


def test_default_config_composes_and_validates():
    config = load_experiment_config(compose_config())
    assert isinstance(config, ExperimentConfig)
    assert config.layout == "hydra"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_of_every_group_composes_and_validates(group, option):
    if (group, option) == ("model", "hf"):  # the config.json reader needs a config.json
        config = load_experiment_config(compose_config("model=hf", f"model.config_path={HF_CONFIG}"))
        assert list(config.models) == ["Meta-Llama-3-8B"]
        return
    data = compose_config(f"{group}={option}")
    config = load_experiment_config(data)
    assert isinstance(config, ExperimentConfig)
    # the option's file lands, as written, under its group (read as Hydra reads it: PyYAML alone
    # would take "1.0e10" for a string)
    path = CONF / group / f"{option}.yaml"
    if path.read_text().startswith("# @package _global_"):
        return  # a preset: its keys land at the top level, checked by its own tests
    written = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert data[group] == written
    if group == "model":
        assert list(config.models) == [written["name"]]
        assert config.frameworks_to_test[0].config["model_profile_id"] == written["name"]
    elif group == "hardware":
        assert config.hardware_profile.name == written["name"]
        assert config.hardware_profile.num_gpus == written.get("num_gpus", 1)
    elif group == "framework":
        assert config.frameworks_to_test[0].type == written["type"]
        config.framework_config(0)  # the framework's own schema accepts every knob
    elif group == "workload":
        assert config.workload.kind == written["kind"]
    elif group == "simulation":
        assert config.simulation.max_simulation_time == written["max_simulation_time"]


def _seed_summary(config: ExperimentConfig) -> dict:
    return config.model_dump(mode="json")


def test_seed_example_file_validates_in_the_seed_layout():
    config = load_experiment_config(yaml.safe_load(SEED_EXAMPLE.read_text()))
    assert config.layout == "seed"
    assert config.simulation.random_seed == 42
    assert config.workload_seed == 123
    assert config.hardware_profile.gpu.memory_capacity_bytes == 80_000_000_000
    assert config.frameworks_to_test[0].config["model_profile_id"] == "Llama3-8B"
    assert config.metrics_config.percentiles_to_calculate == (50.0, 90.0, 95.0, 99.0)
    dists = config.distributions()[0]
    assert dists["prompt"].kind == "LogNormal" and dists["prompt"].is_int
    assert dists["output"].kind == "Uniform"


def test_seed_example_composes_as_an_experiment_and_validates_as_written():
    config = load_experiment_config(compose_config("experiment=seed_example"))
    assert config.layout == "seed"
    direct = load_experiment_config(yaml.safe_load(SEED_EXAMPLE.read_text()))
    assert _seed_summary(config) == _seed_summary(direct)
