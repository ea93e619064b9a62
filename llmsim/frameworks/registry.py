"""The one registry of framework models: seed type name -> class (the seed's ``framework_class_map``)."""

from __future__ import annotations

from llmsim.errors import ConfigError
from llmsim.frameworks.base import AbstractLLMFramework
from llmsim.frameworks.sglang import SGLangFramework
from llmsim.frameworks.static import StaticBatchingFramework
from llmsim.frameworks.trtllm import TRTLLMFramework
from llmsim.frameworks.vllm import VLLMFramework

framework_class_map: dict[str, type[AbstractLLMFramework]] = {
    "VLLM": VLLMFramework,
    "TRTLLM": TRTLLMFramework,
    "SGLANG": SGLangFramework,
    "STATIC": StaticBatchingFramework,
}


def framework_spec(framework_type: str, key: str = "framework.type") -> type[AbstractLLMFramework]:
    """The class registered for a type name (case-insensitive); unknown types are a ConfigError."""
    cls = framework_class_map.get(str(framework_type).upper())
    if cls is None:
        raise ConfigError(
            key,
            framework_type,
            f"Unknown framework type: {framework_type}; known types: {', '.join(framework_class_map)}",
        )
    return cls


def register_framework(type_name: str, cls: type[AbstractLLMFramework]) -> None:
    """Add a framework model under a seed type name (for plug-ins and tests)."""
    framework_class_map[type_name.upper()] = cls
