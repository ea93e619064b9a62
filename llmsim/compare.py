"""``python -m llmsim.compare A B [--metrics m1,m2] [--format table|csv|markdown] [--out FILE]``."""

import sys

from llmsim.sweep.compare import main

if __name__ == "__main__":
    sys.exit(main())
