"""``python -m llmsim.plot DIR [--out DIR] [--slo-ttft-ms MS] [--slo-tpot-ms MS]``."""

import sys

from llmsim.sweep.plots import main

if __name__ == "__main__":
    sys.exit(main())
