"""``python -m llmsim.aggregate SWEEP_DIR``: (re)build ``runs.parquet`` and ``requests.parquet``."""

import sys

from llmsim.sweep.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
