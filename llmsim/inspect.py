"""``python -m llmsim.inspect [--config-dir DIR] [overrides]``: the memory plan and a roofline view of step latency.

Takes the same overrides as ``python -m llmsim`` (``hardware=h100 model=llama3_70b
framework.tensor_parallel_size=4``; ``--config-dir DIR`` adds config groups, such as the files
``python -m llmsim.calibrate`` writes), checks them as ``python -m llmsim`` does, builds the deployment exactly as a run would, and prints how
each GPU's memory is spent and, for a few batch shapes, the step latency, achieved TFLOPS and
bandwidth per GPU, and whether the step is compute- or memory-bound — the view of llm-analysis
style tools, from llmsim's own performance model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from llmsim.entrypoint import UsageError, run_entry_point
from llmsim.errors import ConfigError, one_line
from llmsim.hardware.spec import GIB

PREFILL_SHAPES = (128, 512, 2048, 8192)
DECODE_BATCHES = (1, 8, 32, 128, 256)
DECODE_CONTEXT = 1024


def split_config_dirs(args: list[str]) -> tuple[list[str], list[Path]]:
    """The overrides and the ``--config-dir DIR`` / ``-cd DIR`` directories (Hydra's flag) of a command line.

    Any other flag is a :class:`~llmsim.entrypoint.UsageError`: inspect shows one deployment, so
    ``--multirun`` and Hydra's other run flags have no meaning here.
    """
    overrides: list[str] = []
    dirs: list[Path] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("--config-dir", "-cd"):
            if index + 1 >= len(args):
                raise UsageError(f"python -m llmsim.inspect: {arg} needs a directory")
            dirs.append(Path(args[index + 1]))
            index += 2
            continue
        if arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg.startswith("-"):
            raise UsageError(
                f"python -m llmsim.inspect: {arg} is not an option; it takes overrides (key=value, as "
                "python -m llmsim) and --config-dir DIR, one deployment at a time (no --multirun)"
            )
        else:
            overrides.append(arg)
        index += 1
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError("--config-dir", str(folder), "an existing directory of config groups")
    return overrides, dirs


def compose_deployment(args: list[str]) -> dict[str, Any]:
    """The experiment config of a command line, checked as ``python -m llmsim`` checks it.

    Without ``--config-dir`` the checks are :func:`llmsim.cli.preflight` itself; with it, the same
    steps (group options, Hydra composition, validation) with the extra directories on the search path.
    A mistake is a one-line :class:`~llmsim.errors.LLMSimError`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmsim.cli import check_group_overrides, experiment_container, preflight
    from llmsim.models import CONF_DIR

    overrides, dirs = split_config_dirs(args)
    if dirs:
        check_group_overrides([*overrides, *(f"--config-dir={d}" for d in dirs)])
    else:
        overrides = preflight(overrides)  # rewritten as the main CLI hands them to Hydra (nested workload keys)
    overrides = [a for a in overrides if not a.startswith(("hydra.", "hydra/"))]
    search = [f"hydra.searchpath=[{','.join(f'file://{d.resolve()}' for d in dirs)}]"] if dirs else []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="inspect"):
            cfg = compose(config_name="config", overrides=[*overrides, *search])
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError("override", " ".join(overrides), one_line(str(exc))) from None
    return experiment_container(cfg)


def inspect(args: list[str], console: Console | None = None) -> None:
    """Print the memory plan and the roofline table of the deployment a command line describes.

    ``args`` are overrides as ``python -m llmsim`` takes them, and optionally ``--config-dir DIR``
    (for example the files ``python -m llmsim.calibrate`` wrote). They are checked as the main CLI
    checks them: a mistake raises a one-line :class:`~llmsim.errors.LLMSimError` before anything is printed.
    """
    from llmsim.orchestrator import ExperimentOrchestrator

    orchestrator = ExperimentOrchestrator(compose_deployment(args))
    orchestrator.setup_simulation()
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=140)
    for framework in orchestrator.llm_framework_instances:
        plan = framework.memory_plan
        model, device, perf = framework.model, framework.device, framework.perf_model
        tp = framework.config.tensor_parallel_size
        console.print(
            f"[bold]{framework.framework_id}[/bold]: {model.display_name or model.name} "
            f"({model.total_params / 1e9:.1f}B params, {framework.dtype}, KV {framework.kv_dtype}) on "
            f"{tp} x {device.name or device.device_id}"
        )
        memory = Table(title="memory per GPU", title_justify="left")
        for column in ("weights", "workspace", "KV cache", "usable", "capacity", "KV tokens", "KV per token"):
            memory.add_column(column, justify="right")
        memory.add_row(
            f"{plan.weights / GIB:.2f} GiB",
            f"{plan.workspace / GIB:.2f} GiB",
            f"{plan.kv_cache / GIB:.2f} GiB",
            f"{plan.usable / GIB:.2f} GiB",
            f"{plan.device_capacity / GIB:.2f} GiB",
            f"{plan.kv_capacity_tokens:,}",
            f"{plan.kv_bytes_per_token / 1024:.1f} KiB",
        )
        console.print(memory)
        roofline = Table(title="step latency (GPU time; framework CPU overhead excluded)", title_justify="left")
        for column in ("phase", "shape", "latency ms", "tokens/s", "TFLOPS/GPU", "GB/s/GPU", "comm ms", "bound"):
            roofline.add_column(column, justify="right" if column not in ("phase", "bound") else "left")
        shapes = [("prefill", f"1 x {n} tokens", n, None) for n in PREFILL_SHAPES] + [
            ("decode", f"{b} seqs @ {DECODE_CONTEXT} ctx", None, b) for b in DECODE_BATCHES
        ]
        for phase, label, prompt, batch_size in shapes:
            batch = perf.new_batch()
            if prompt is not None:
                batch.add_prefill(prompt, 0, samples_token=True)
            else:
                for _ in range(batch_size):
                    batch.add_decode(DECODE_CONTEXT)
            cost = perf.step_cost(batch)
            tokens = batch.num_tokens
            bound = "compute" if cost.compute_s >= cost.memory_s else "memory"
            if cost.comm_s > max(cost.compute_s, cost.memory_s):
                bound = "communication"
            roofline.add_row(
                phase,
                label,
                f"{cost.time_s * 1e3:.2f}",
                f"{tokens / cost.time_s:,.0f}",
                f"{cost.flops / cost.time_s / 1e12:.1f}",
                f"{cost.bytes / cost.time_s / 1e9:,.0f}",
                f"{cost.comm_s * 1e3:.2f}",
                bound,
            )
        console.print(roofline)
        peak = device.peak_flops("fp8" if framework.dtype == "fp8" else "bf16") / 1e12
        console.print(f"peak: {peak:,.0f} TFLOPS ({framework.dtype}), {device.memory_gbps:,.0f} GB/s HBM per GPU\n")


def _main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    inspect(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: a user mistake ends in one line on stderr and exit status 2."""
    return run_entry_point(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
