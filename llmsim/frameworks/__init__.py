"""Framework models: shared mechanisms (KV caches, the engine loop) and per-framework policies."""

from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.registry import framework_class_map, framework_spec, register_framework
from llmsim.frameworks.sglang import SGLangConfig, SGLangFramework
from llmsim.frameworks.static import StaticBatchingFramework, StaticConfig
from llmsim.frameworks.trtllm import TRTLLMConfig, TRTLLMFramework
from llmsim.frameworks.vllm import VLLMConfig, VLLMFramework

__all__ = [
    "AbstractLLMFramework",
    "SGLangConfig",
    "SGLangFramework",
    "StaticBatchingFramework",
    "StaticConfig",
    "TRTLLMConfig",
    "TRTLLMFramework",
    "VLLMConfig",
    "VLLMFramework",
    "framework_class_map",
    "framework_spec",
    "register_framework",
]
