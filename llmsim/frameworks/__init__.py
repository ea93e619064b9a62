"""Framework models: shared mechanisms (KV cache) and per-framework scheduling policies."""

from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.registry import framework_class_map, framework_spec, register_framework
from llmsim.frameworks.vllm import VLLMConfig, VLLMFramework

__all__ = [
    "AbstractLLMFramework",
    "VLLMConfig",
    "VLLMFramework",
    "framework_class_map",
    "framework_spec",
    "register_framework",
]
