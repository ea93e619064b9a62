"""The ``run`` block of ``summary.json``: what was simulated, so that a summary file reads on its own.

Names follow ``vllm bench serve``'s result file where it has one (``num_prompts``, ``request_rate``,
``burstiness``, ``duration``); rates are per second and fractions are 0-1 (the console shows them
as percentages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmsim.orchestrator import ExperimentOrchestrator


def _first_framework_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return next(iter(summary["frameworks"].values()), {}) if summary.get("frameworks") else {}


def workload_info(orchestrator: ExperimentOrchestrator, summary: dict[str, Any]) -> dict[str, Any]:
    """The workload as configured (its group option, kind, rates, window) and as it came out."""
    workload = orchestrator.config.workload
    choices = orchestrator.config_choices
    profiles = [profile.profile_name for profile in workload.client_profiles]
    metrics = _first_framework_metrics(summary)
    generator = orchestrator.workload_generator
    info: dict[str, Any] = {
        "name": choices.get("workload") or "+".join(profiles),
        "kind": workload.kind,
        # open loop: new sessions (first turns) per second, follow-up turns come on top; null for
        # a batch sent at t=0 (workload=offline, or workload=random at rate=inf)
        "request_rate": workload.rate,
        "request_rate_unit": "sessions/s" if workload.kind == "open_loop" else "requests/s",
        "all_at_start": workload.kind == "offline" or (workload.kind == "random" and workload.rate is None),
        "burstiness": workload.burstiness,
        "rate_schedule": workload.rate_schedule,
        "total_duration": workload.total_duration if workload.kind in ("open_loop", "closed_loop") else None,
        "max_concurrency": workload.concurrency,
        "num_sessions": generator.num_sessions if generator is not None else None,
        "num_prompts": int(orchestrator.requests_sent()),
        "offered_session_rate": metrics.get("offered_session_rate"),
        "offered_request_rate": metrics.get("offered_request_rate"),
        "profiles": profiles,
        "random_seed": orchestrator.config.workload_seed,
    }
    if workload.kind == "trace":
        info["path"] = workload.path
    if workload.kind == "random":
        info.update(
            input_len=workload.input_len,
            output_len=workload.output_len,
            range_ratio=workload.range_ratio,
            prefix_len=workload.prefix_len,
        )
    return info


def framework_info(orchestrator: ExperimentOrchestrator) -> dict[str, dict[str, Any]]:
    """Per framework instance: its type, the release it models and every knob with the value in force."""
    out = {}
    for instance in orchestrator.llm_framework_instances:
        facts = instance.describe()
        out[instance.framework_id] = {
            "type": facts["type"],
            "version": facts.get("version", ""),
            "modelled_release": facts.get("modelled_release", ""),
            "tensor_parallel_size": facts["tensor_parallel_size"],
            "knobs": instance.effective_knobs(),
        }
    return out


def experiment_metadata(orchestrator: ExperimentOrchestrator, summary: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to read a summary alone: hardware, model, frameworks and knobs, workload, seed."""
    from llmsim import __version__

    cfg = orchestrator.config
    hardware = cfg.hardware_profile
    devices = hardware.compute_devices
    models = {
        instance.framework_id: {"name": instance.model.name, "dtype": instance.dtype}
        for instance in orchestrator.llm_framework_instances
    }
    first_model = next(iter(models.values()), {"name": "", "dtype": ""})
    return {
        "llmsim_version": __version__,
        "experiment": cfg.name,
        "hardware": {
            "name": orchestrator.config_choices.get("hardware") or hardware.name,
            "gpu": devices[0].name or devices[0].device_type,
            "num_gpus": len(devices),
            "gpu_memory_gib": round(devices[0].memory_capacity_bytes / 2**30, 3),
            "interconnect": hardware.interconnect.name,
        },
        "model": {"name": first_model["name"], "dtype": first_model["dtype"], "per_framework": models},
        "frameworks": framework_info(orchestrator),
        "workload": workload_info(orchestrator, summary),
        "seed": cfg.simulation.random_seed,
        "simulated_time": summary.get("simulated_time_s"),
        "max_simulation_time": cfg.simulation.max_simulation_time,
        "warm_up_duration_s": cfg.metrics_config.warm_up_duration_s,
        "slos_ms": dict(cfg.metrics_config.slos_ms or {}),
    }
