"""framework.version: which release a framework model follows, and the defaults that come with it."""

from __future__ import annotations

import pytest
from conftest import make_config

from llmsim import ConfigError, ExperimentOrchestrator
from llmsim.frameworks.versions import Release, ReleaseTable, parse_release
from llmsim.frameworks.vllm import RELEASES as VLLM_RELEASES


def built_framework(**knobs):
    orchestrator = ExperimentOrchestrator(make_config(framework=knobs))
    orchestrator.setup_simulation()
    return orchestrator.llm_framework_instances[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.11.0", (0, 11, 0)),
        ("v0.4.3", (0, 4, 3)),
        ("0.4.5.post3", (0, 4, 5)),
        ("1.0.0rc2", (1, 0, 0)),
        ("1.2", (1, 2, 0)),
    ],
)
def test_release_strings_parse_to_comparable_numbers(text, expected):
    assert parse_release(text) == expected


def test_a_release_resolves_to_the_newest_row_at_or_before_it():
    table = ReleaseTable(
        "X", (Release("0.5.0", {"knob": 1}), Release("0.8.0", {"knob": 2}), Release("0.10.0", {"knob": 3})), "0.12.0"
    )
    assert table.default("0.5.0", "knob") == 1
    assert table.default("0.7.9", "knob") == 1
    assert table.default("0.8.0", "knob") == 2
    assert table.default("0.9.1", "knob") == 2  # 0.9 < 0.10: numeric, not string order
    assert table.default(None, "knob") == 3
    assert table.newest == "0.12.0"


def test_release_rows_must_name_the_same_knobs_in_increasing_order():
    with pytest.raises(ValueError, match="same knobs"):
        ReleaseTable("X", (Release("0.1.0", {"a": 1}), Release("0.2.0", {"b": 1})))
    with pytest.raises(ValueError, match="increasing"):
        ReleaseTable("X", (Release("0.2.0", {}), Release("0.1.0", {})))


def test_default_version_is_the_newest_release_and_the_summary_names_it():
    framework = built_framework()
    assert framework.version == VLLM_RELEASES.newest
    facts = framework.describe()
    assert facts["version"] == VLLM_RELEASES.newest
    assert facts["modelled_release"].startswith(f"vLLM {VLLM_RELEASES.newest}")
    assert framework.effective_knobs()["version"] == VLLM_RELEASES.newest


def test_an_old_vllm_release_defaults_to_the_v0_engine_and_a_set_knob_wins():
    assert built_framework(version="0.7.3").config.engine_version == "v0"
    assert built_framework(version="0.8.4").config.engine_version == "v1"
    assert built_framework(version="0.7.3", engine_version="v1").config.engine_version == "v1"


@pytest.mark.parametrize("bad", ["0.1.0", "99.0", "latest", 0.11])
def test_an_unmodelled_or_malformed_version_is_a_one_line_error_naming_the_key(bad):
    with pytest.raises(ConfigError) as excinfo:
        built_framework(version=bad)
    message = str(excinfo.value)
    assert "framework.version" in message
    assert "\n" not in message
    assert VLLM_RELEASES.oldest in message and VLLM_RELEASES.newest in message
