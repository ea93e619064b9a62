"""llmsim: predict how LLM serving frameworks perform on GPUs before renting them."""

from llmsim.config import ExperimentConfig, load_experiment_config
from llmsim.errors import CapacityError, ConfigError, LLMSimError
from llmsim.orchestrator import ExperimentOrchestrator
from llmsim.sweep.naming import register_resolvers

register_resolvers()  # ${llmsim_dirname:...} must resolve in sweep workers too

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
