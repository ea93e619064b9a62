"""``python -m llmsim.workload``: trace tools.

* ``fit FILE [--out workload.yaml] [--dist empirical|lognormal] [--time-unit s|ms|us]``: print a
  trace's summary and write a ``conf/workload``-style YAML whose distributions reproduce it (copy
  it into ``conf/workload/NAME.yaml`` and run ``python -m llmsim workload=NAME``).
* ``sample-trace [--out FILE]``: regenerate the shipped sample trace (deterministic).
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmsim.entrypoint import ArgumentParser, run_entry_point, write_output
from llmsim.errors import ConfigError


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llmsim.workload", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="summarise a trace and write a workload YAML that reproduces it")
    fit.add_argument("file", help="trace file: CSV, Parquet or JSONL (llmsim, Azure or BurstGPT layout)")
    fit.add_argument("--out", help="write the fitted workload YAML here (default: print the summary only)")
    fit.add_argument("--dist", choices=("empirical", "lognormal"), default="empirical", help="length distributions")
    fit.add_argument("--quantiles", type=int, default=64, help="points of each Empirical distribution")
    fit.add_argument("--time-unit", choices=("s", "ms", "us"), default="s", help="unit of numeric timestamps")
    sample = commands.add_parser("sample-trace", help="write the sample trace shipped in conf/workload/traces")
    sample.add_argument("--out", help="where to write it (default: the shipped file)")
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.out and Path(args.out).is_dir():  # before any work: the file would not be written
        raise ConfigError("--out", args.out, "a file path, not a directory")
    if args.command == "fit":
        from llmsim.workload.fit import fit_workload, format_summary, render_workload_yaml, summarize_trace
        from llmsim.workload.trace import load_trace

        if args.quantiles < 2:
            raise ConfigError("--quantiles", args.quantiles, "a whole number of points, at least 2")
        trace = load_trace(args.file, "trace", args.time_unit)
        summary = summarize_trace(trace)
        print(format_summary(summary))
        if args.out:
            workload = fit_workload(trace, dist=args.dist, quantiles=args.quantiles)
            text = render_workload_yaml(workload, summary)
            write_output(Path(args.out), lambda tmp: tmp.write_text(text, newline="\n"))
            print(f"wrote {args.out}")
    else:
        from llmsim.workload.sample_trace import REPO_ROOT, SAMPLE_TRACE, render_sample_trace

        target = Path(args.out) if args.out else REPO_ROOT / SAMPLE_TRACE
        text = render_sample_trace()
        write_output(target, lambda tmp: tmp.write_text(text, newline="\n"))
        print(f"wrote {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user mistake prints one line (``llmsim: error: ...``) and returns 2."""
    return run_entry_point(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
