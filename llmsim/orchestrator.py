"""ExperimentOrchestrator: builds every component from one config, runs the simulation, reports.

The seed's API: ``ExperimentOrchestrator(config_data).run() -> dict``. ``config_data`` may use the
seed's layout or be a composed Hydra config; both validate into :class:`ExperimentConfig`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import yaml

from llmsim.config import ExperimentConfig, load_experiment_config
from llmsim.engine import SimulationEnvironment, guarded_loop, relaxed_garbage_collection
from llmsim.errors import ConfigError, LLMSimError, one_line
from llmsim.experiment_info import experiment_metadata
from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.registry import framework_spec
from llmsim.hardware.platform import VirtualHardwarePlatform
from llmsim.metrics.collector import MetricsCollector
from llmsim.models import ModelDatabase
from llmsim.workload.generator import WorkloadGenerator

log = logging.getLogger(__name__)
#: step rows from which a run that keeps its per-step series suggests buckets (metrics.step_series_bucket_s)
LONG_STEP_SERIES = 5_000_000


class ExperimentOrchestrator:
    """Sets up and runs one experiment (see the seed document, "Experiment Configuration and Orchestration")."""

    def __init__(self, config_data: Any, output_dir: str | Path | None = None) -> None:
        self.config: ExperimentConfig = load_experiment_config(config_data)
        self.output_dir = Path(output_dir) if output_dir is not None else Path.cwd()
        self.model_characteristics_db = self._load_model_db()
        self.sim_env_wrapper: SimulationEnvironment | None = None
        self.virtual_hardware: VirtualHardwarePlatform | None = None
        self.metrics_collector: MetricsCollector | None = None
        self.workload_generator: WorkloadGenerator | None = None
        self.llm_framework_instances: list[AbstractLLMFramework] = []
        self.summary: dict[str, Any] | None = None
        #: frameworks that stopped during the run (deadlock, livelock, an error), with the reason
        self.framework_errors: dict[str, str] = {}
        #: the config-group options the run was composed from (``{"workload": "chat", ...}``), when known
        self.config_choices: dict[str, str] = {}

    def _load_model_db(self) -> ModelDatabase:
        path = self.config.model_characteristics_db_path
        resolved = None
        if path:
            candidate = Path(path)
            if candidate.is_file():
                resolved = candidate
            elif candidate.is_dir():
                log.warning(
                    "model_characteristics_db_path %s is a directory, not a JSON or YAML file of model profiles; "
                    "using the built-in model database",
                    path,
                )
            else:
                log.warning("model_characteristics_db_path %s not found; using the built-in model database", path)
        try:
            return ModelDatabase.load(resolved, extra=self.config.models)
        except LLMSimError:
            raise
        except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:  # unreadable, not JSON/YAML, wrong shapes
            raise ConfigError(
                "model_characteristics_db_path", str(path), f"a readable JSON or YAML file of model profiles ({exc})"
            ) from None

    def setup_simulation(self) -> None:
        """Create the environment, metrics, hardware, frameworks and workload (validating as it goes)."""
        cfg = self.config
        self.framework_errors = {}
        self.sim_env_wrapper = SimulationEnvironment(cfg.simulation)
        env = self.sim_env_wrapper.get_simpy_env()
        self.metrics_collector = MetricsCollector(env, cfg.metrics_config)
        self.virtual_hardware = VirtualHardwarePlatform()
        self.virtual_hardware.initialize(
            cfg.hardware_profile, env, self.model_characteristics_db, client_link=cfg.workload.has_client_link
        )
        self.llm_framework_instances = []
        for index, entry in enumerate(cfg.frameworks_to_test):
            type_key = "framework.type" if cfg.layout == "hydra" else f"frameworks_to_test[{index}].type"
            framework_class = framework_spec(entry.type, type_key)
            framework_config = cfg.framework_config(index)
            model_profile = self.model_characteristics_db.get(framework_config.model_profile_id)
            if model_profile is None:
                raise ConfigError(
                    f"{cfg.framework_key(index)}.model_profile_id",
                    framework_config.model_profile_id,
                    f"Model profile ID {framework_config.model_profile_id} not found in database for framework "
                    f"{entry.name}; known profiles: "
                    + ", ".join(sorted({p.name for p in self.model_characteristics_db.values()})),
                )
            instance = framework_class(
                framework_id=entry.name,
                simpy_env=env,
                framework_specific_config=framework_config,
                virtual_hardware=self.virtual_hardware,
                metrics_collector=self.metrics_collector,
                model_profile=model_profile,
                config_key=cfg.framework_key(index),
                workload_kind=cfg.workload.kind,
                workload=cfg.workload,
            )
            if hasattr(instance, "fast_forward"):
                instance.fast_forward = cfg.simulation.fast_forward
            self.metrics_collector.register_framework(entry.name, instance.describe())
            self.llm_framework_instances.append(instance)
        target_dispatch_points = {
            fw.framework_id: fw.request_arrival_queue
            for fw, entry in zip(self.llm_framework_instances, cfg.frameworks_to_test, strict=True)
            if entry.is_target_for_workload
        }
        generator = self.workload_generator = WorkloadGenerator(
            env,
            cfg.workload,
            target_dispatch_points,
            self.metrics_collector,
            self.virtual_hardware,
            distributions=cfg.distributions(),
            seed=cfg.workload_seed,
            on_all_done=self.sim_env_wrapper.signal_work_done,
            horizon_s=cfg.simulation.max_simulation_time,
        )
        limit = cfg.simulation.max_simulation_time
        for fw in self.llm_framework_instances:
            fw.arrival_bound = functools.partial(generator.next_arrival_bound, fw.framework_id, limit)
        self.metrics_collector.arrival_window_s = self._configured_arrival_window()

    def _configured_arrival_window(self) -> tuple[float, float] | None:
        """Open-loop sessions arrive from the end of the warm-up to ``total_duration`` (or the time limit).

        None where the config does not fix the window (a ``num_requests`` cap may end arrivals early,
        traces, closed loops and batches): the summary then measures it from the send times.
        """
        workload = self.config.workload
        if workload.kind != "open_loop" or workload.total_duration is None or workload.num_requests is not None:
            return None
        end = min(workload.total_duration, self.config.simulation.max_simulation_time)
        return (self.config.metrics_config.warm_up_duration_s, end)

    def run(self, show_progress: bool | None = None, print_table: bool = True) -> dict[str, Any]:
        """Set up, simulate, write the configured outputs and return the summary report.

        ``show_progress``: a progress bar in simulated time on stderr (default: when it is a terminal);
        ``print_table``: print the summary table (sweeps print one line per job instead).
        """
        with relaxed_garbage_collection():
            return self._run(show_progress, print_table)

    def _run(self, show_progress: bool | None, print_table: bool) -> dict[str, Any]:
        from llmsim.outputs import print_summary, write_outputs
        from llmsim.progress import SimulationProgress

        self.setup_simulation()
        assert self.sim_env_wrapper and self.workload_generator and self.metrics_collector
        log.info(
            "experiment %s: %d framework(s), %d sessions",
            self.config.name,
            len(self.llm_framework_instances),
            self.workload_generator.num_sessions,
        )
        for fw_instance in self.llm_framework_instances:
            self.sim_env_wrapper.schedule_process(guarded_loop(fw_instance, self._framework_failed))
        self.sim_env_wrapper.schedule_process(self.workload_generator.generate_requests_process)
        with SimulationProgress(self._horizon(), show_progress) as progress:
            if progress.enabled:
                collector = self.metrics_collector
                done = lambda: len(collector.requests["request_id"])  # noqa: E731
                self.sim_env_wrapper.schedule_process(progress.process(self.sim_env_wrapper.env, done))
            self.sim_env_wrapper.run()
        self._record_incomplete()
        simulation_actual_duration = self.sim_env_wrapper.now()
        summary = self.metrics_collector.generate_summary_report(simulation_actual_duration)
        summary["stopped_by_time_limit"] = self.sim_env_wrapper.stopped_by_time_limit
        summary["experiment"] = self.config.name
        if self.framework_errors:
            summary["framework_errors"] = dict(self.framework_errors)
            for name, error in self.framework_errors.items():
                summary["frameworks"][name]["error"] = error
        summary["run"] = experiment_metadata(self, summary)
        self.summary = summary
        self._warn_all_rejected(summary)
        if print_table:
            print_summary(
                summary, run_dir=self.output_dir if self.config.metrics_config.output_summary_json_path else None
            )
        write_outputs(self, summary)
        self._hint_long_step_series()
        log.info("experiment %s finished at simulated t=%.3f s", self.config.name, simulation_actual_duration)
        return summary

    def requests_sent(self) -> int:
        """Requests the workload sent to one framework under test (each gets the same stream)."""
        assert self.metrics_collector is not None
        frameworks = self.metrics_collector.requests["framework"]
        if not frameworks:
            return 0
        first = frameworks[0]
        return sum(1 for name in frameworks if name == first)

    def _hint_long_step_series(self) -> None:
        """A per-step series of many millions of rows is worth a hint: buckets keep it to the simulated time."""
        assert self.metrics_collector is not None
        series = self.metrics_collector.step_series
        if series is not None and series.bucket_s is None and series.num_steps >= LONG_STEP_SERIES:
            log.info(
                "the step series has %s rows (one per engine step); metrics.step_series_bucket_s=1 keeps "
                "one row per simulated second instead",
                f"{series.num_steps:,}",
            )

    def _warn_all_rejected(self, summary: dict[str, Any]) -> None:
        """A framework that served nothing because it refused every request is worth a line in the log."""
        assert self.metrics_collector is not None
        columns = self.metrics_collector.requests
        for name, metrics in summary["frameworks"].items():
            if metrics["completed"] == 0 and metrics["failed"] > 0 and not metrics.get("error"):
                reason = next(
                    (
                        why
                        for fw, why in zip(columns["framework"], columns["reason"], strict=True)
                        if fw == name and why
                    ),
                    "",
                )
                log.warning("%s rejected every request it received (%d), e.g.: %s", name, metrics["failed"], reason)

    def _framework_failed(self, framework: AbstractLLMFramework, error: Exception) -> str:
        """A framework stopped during the run: record why and fail the requests it held (others go on)."""
        message = str(error) if isinstance(error, LLMSimError) else f"{type(error).__name__}: {error}"
        message = one_line(message)
        if framework.framework_id not in message:
            message = f"{framework.framework_id}: {message}"
        self.framework_errors[framework.framework_id] = message
        log.error("framework %s", message)
        reason = f"framework stopped: {message}"
        for request in framework.in_flight():
            if request.status not in ("completed", "rejected"):
                framework.reject(request, reason)
        return reason

    def _horizon(self) -> float:
        """Simulated seconds the run is expected to take (for progress only)."""
        limit = self.config.simulation.max_simulation_time
        duration = self.config.workload.total_duration
        return min(limit, duration) if self.config.workload.kind == "open_loop" and duration else limit

    def _record_incomplete(self) -> None:
        """Requests still in flight when the run stopped are reported as incomplete, never dropped.

        That includes requests sent but still on the client link (not yet in any framework's queue).
        """
        assert self.metrics_collector is not None
        for fw in self.llm_framework_instances:
            for request in [*fw.in_flight(), *fw.in_transit()]:
                if request.status not in ("completed", "rejected"):  # a stopped framework's were rejected
                    self.metrics_collector.record_request(request, status="incomplete")
        if self.workload_generator is not None:
            for request in self.workload_generator.in_transit():
                self.metrics_collector.record_request(request, status="incomplete")
