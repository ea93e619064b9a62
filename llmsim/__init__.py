"""llmsim: predict how LLM serving frameworks perform on GPUs before renting them."""

from llmsim.config import ExperimentConfig, load_experiment_config
from llmsim.errors import CapacityError, ConfigError, LLMSimError
from llmsim.orchestrator import ExperimentOrchestrator

__version__ = "0.1.0"

__all__ = [
    "CapacityError",
    "ConfigError",
    "ExperimentConfig",
    "ExperimentOrchestrator",
    "LLMSimError",
    "__version__",
    "load_experiment_config",
]
