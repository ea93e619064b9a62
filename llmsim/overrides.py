"""Command-line overrides made settable as ``key=value``, and typos named before anything runs.

Hydra refuses ``key=value`` for a key that the composed YAML does not list (struct mode), telling
the user to add ``+``, even for keys the schemas know; and it merges a ``{...}`` value into the
mapping already there. :func:`normalize_overrides` rewrites such overrides so that every documented
key can be set as written and a distribution given on the command line replaces the preset's;
validation then names an unknown key with the nearest known ones. For a ``--multirun`` sweep,
:func:`check_sweep_keys` does that before any job starts.
"""

from __future__ import annotations

import itertools
from typing import Any

from omegaconf import DictConfig, ListConfig

from llmsim.errors import ConfigError, one_line
from llmsim.models import CONF_DIR

#: Config groups (``group=option``) of the primary config; ``sweeps`` lives beside ``conf``.
CONFIG_GROUPS = ("hardware", "model", "workload", "framework", "metrics", "simulation", "experiment", "sweeps")

#: Hydra flags that take the next argument as their value.
VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c", "--package", "-p")
#: Flags that change where configs come from: the command line is then left to Hydra as written.
SOURCE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
#: Flags that only print (help, the composed config, info): overrides are rewritten, not validated.
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version")
#: At most this many combinations of swept config groups are composed to check a sweep's keys.
MAX_CHECKED_COMBINATIONS = 16


def split_command_line(args: list[str]) -> tuple[list[str], list[str]]:
    """``(flags, overrides)``: Hydra's ``--flags`` (with their values) apart from ``key=value`` overrides."""
    flags: list[str] = []
    overrides: list[str] = []
    takes_value = False
    for arg in args:
        if takes_value:
            flags.append(arg)
            takes_value = False
        elif arg.startswith("-") and not arg.startswith(("~", "+")):
            flags.append(arg)
            takes_value = arg in VALUE_FLAGS
        else:
            overrides.append(arg)
    return flags, overrides


def dotted(key: str) -> str:
    """``a.b[0].c`` -> ``a.b.0.c`` (how Hydra overrides spell list items)."""
    return key.replace("[", ".").replace("]", "")


def _is_group_override(key: str) -> bool:
    return "." not in key and (key.split("@")[0] in CONFIG_GROUPS or "/" in key)


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed = []
    for text in overrides:
        try:
            parsed.append(OverridesParser.create().parse_overrides([text])[0])
        except HydraException as exc:
            raise ConfigError("override", text, one_line(str(exc))) from None
    return parsed


def _values(override: Any) -> list[str]:
    """The value of an override as text, one entry per swept value."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _group_combinations(parsed: list[Any]) -> list[list[str]]:
    """The config-group choices of every job (a sweep over groups gives several), as override lists."""
    axes: list[list[str]] = []
    for override in parsed:
        key = override.key_or_group
        if not _is_group_override(key) or key.startswith("hydra"):
            continue
        prefix = override.input_line.split("=", 1)[0]
        axes.append([f"{prefix}={value}" for value in _values(override)])
    return [list(combo) for combo in itertools.islice(itertools.product(*axes), MAX_CHECKED_COMBINATIONS)]


_ABSENT = object()


def _lookup(cfg: DictConfig, key: str, value: Any) -> Any:
    """The node at a dotted override key, ``_ABSENT`` if a key on the way is missing.

    A list index beyond the list's end is a one-line ConfigError.
    """
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, ListConfig):
            size = len(node)
            if not part.isdigit() or int(part) >= size:
                where = ".".join(parts[:depth])
                entries = f"{size} entry (index 0)" if size == 1 else f"{size} entries (index 0 to {size - 1})"
                raise ConfigError(key, value, f"{where} has {entries}")
            node = node._get_node(int(part))
        elif isinstance(node, DictConfig):
            if part not in node:
                return _ABSENT
            node = node._get_node(part)
        else:
            return _ABSENT
    return node


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed config for ``overrides``; Hydra's complaint becomes one ConfigError line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="llmsim"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError("override", " ".join(overrides), message) from None


def _replaces_mapping(override: Any) -> bool:
    """A ``{...}`` value for a workload key: it replaces the mapping there (a distribution), not merges."""
    return override.key_or_group.startswith("workload.") and any(
        value.lstrip().startswith("{") for value in _values(override)
    )


def normalize_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite overrides so that every key the schemas know can be set as ``key=value``.

    Hydra refuses ``key=value`` when ``key`` is not in the composed YAML (struct mode) and merges a
    ``{...}`` value into the mapping already there (``{type: Constant, value: 512}`` over a
    LogNormal would keep its ``mean`` and ``sigma``). So a key missing from the composed YAML (of
    any swept variant) becomes ``++key=value``, and validation names it if it is unknown; a workload
    mapping such as a distribution is replaced: ``++key=null`` goes before it. Returns the rewritten
    overrides and the keys that were missing (to check for typos before a sweep starts).
    """
    parsed = _parse(overrides)
    bases = [compose_config(combo) for combo in _group_combinations(parsed)]
    rewritten: list[str] = []
    missing: list[str] = []
    for text, override in zip(overrides, parsed, strict=True):
        key = override.key_or_group
        if _is_group_override(key) or key.startswith("hydra") or override.type.name == "DEL":
            rewritten.append(text)
            continue
        if override.type.name != "CHANGE":  # +key / ++key: Hydra adds it; a mapping still replaces
            if _replaces_mapping(override) and any(isinstance(_lookup(b, key, None), DictConfig) for b in bases):
                rewritten.append(f"++{key}=null")
            rewritten.append(text)
            continue
        shown = _values(override)[0] if override.is_sweep_override() else override.value()
        nodes = [_lookup(base, key, shown) for base in bases]
        absent = [node is _ABSENT for node in nodes]
        if any(absent):
            missing.append(key)
        if _replaces_mapping(override) and (any(absent) or any(isinstance(node, DictConfig) for node in nodes)):
            reset = f"++{key}=null"
            if reset not in rewritten:
                rewritten.append(reset)
            rewritten.append(text)
        elif any(absent):
            rewritten.append(f"++{text}")
        else:
            rewritten.append(text)
    return rewritten, missing


def as_written(exc: Any, overrides: list[str]) -> Any:
    """A ConfigError about ``a.b[0].c`` named as the user wrote it (``a.b.0.c``)."""
    if not isinstance(exc, ConfigError) or "[" not in exc.key:
        return exc
    written = dotted(exc.key)
    if not any(o.lstrip("+~").split("=", 1)[0] == written for o in overrides):
        return exc
    parent = exc.key.rpartition(".")[0]
    allowed = exc.allowed.replace(parent + ".", dotted(parent) + ".") if parent else exc.allowed
    return ConfigError(written, exc.value, allowed)


def _unknown_everywhere(key: str, probe: str, combos: list[list[str]]) -> Any:
    """The 'unknown key' error for ``key`` if every composed variant's schema refuses it, else None."""
    from llmsim.cli import experiment_container
    from llmsim.config import load_experiment_config

    first = None
    for combo in combos:
        try:
            load_experiment_config(experiment_container(compose_config([*combo, probe])))
        except ConfigError as exc:
            if dotted(exc.key) == key and exc.allowed.startswith("unknown key"):
                first = first or exc
                continue
        return None  # this variant knows the key (its value may still be wrong: that job says so)
    return first


def check_sweep_keys(rewritten: list[str], missing: list[str]) -> None:
    """A key missing from the YAML that no swept variant's schema knows stops the sweep before any job."""
    if not missing:
        return
    parsed = _parse(rewritten)
    combos = _group_combinations(parsed)
    for key in missing:
        override = next(p for p in reversed(parsed) if p.key_or_group == key)
        probe = f"++{key}={_values(override)[0]}"
        error = _unknown_everywhere(key, probe, combos)
        if error is not None:
            raise as_written(error, [probe])
