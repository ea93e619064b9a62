"""Workload generation: distributions of lengths and gaps, arrival processes, sessions, traces."""
