"""Metrics: columnar collection during the run and vLLM-benchmark-style summaries after it."""

from llmsim.metrics.collector import MetricsCollector
from llmsim.metrics.summary import summarize

__all__ = ["MetricsCollector", "summarize"]
