"""``python -m llmsim.workload``: trace tools.

* ``fit FILE [--out workload.yaml] [--dist empirical|lognormal] [--time-unit s|ms|us]``: print a
  trace's summary and write a ``conf/workload``-style YAML whose distributions reproduce it (copy
  it into ``conf/workload/NAME.yaml`` and run ``python -m llmsim workload=NAME``).
* ``sample-trace [--out FILE]``: regenerate the shipped sample trace (deterministic).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmsim.errors import LLMSimError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmsim.workload", description=__doc__.splitlines()[0])
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and return 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fit":
            from llmsim.outputs import write_text
            from llmsim.workload.fit import fit_workload, format_summary, render_workload_yaml, summarize_trace
            from llmsim.workload.trace import load_trace

            trace = load_trace(args.file, "trace", args.time_unit)
            summary = summarize_trace(trace)
            print(format_summary(summary))
            if args.out:
                workload = fit_workload(trace, dist=args.dist, quantiles=max(args.quantiles, 2))
                write_text(Path(args.out), render_workload_yaml(workload, summary))
                print(f"wrote {args.out}")
        else:
            from llmsim.workload.sample_trace import write_sample_trace

            print(f"wrote {write_sample_trace(args.out)}")
    except LLMSimError as exc:
        print(f"llmsim.workload: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
