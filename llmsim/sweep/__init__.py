"""Sweeps: job directory names, the parallel launcher, sweep tables, comparison and plots."""
