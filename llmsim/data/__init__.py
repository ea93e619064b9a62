"""Data files shipped inside the llmsim package (installed with it as package data).

* :data:`CASES_FILE`: the validation cases, published measurements one row per number, that
  ``python -m llmsim.validate`` and ``python -m llmsim.calibrate`` use when no file is given. A copy of
  ``shared/reference/calibration_cases.csv``; tests/test_shipped_data.py checks the two are identical.
* :data:`SCHEMA_FILE`: what each column of a cases file means (a copy of ``shared/reference/validation.md``).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
CASES_FILE = DATA_DIR / "calibration_cases.csv"
SCHEMA_FILE = DATA_DIR / "validation.md"
#: How messages and help name the schema document (its path in a checkout).
SCHEMA_NAME = "llmsim/data/validation.md"
