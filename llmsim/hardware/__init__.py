"""Virtual hardware: typed profiles, the node and its memory ledger, and the step-latency model."""

from llmsim.hardware.perf_model import BatchShape, PerformanceModel, StepCost
from llmsim.hardware.platform import MemoryPlan, VirtualHardwarePlatform, plan_memory
from llmsim.hardware.spec import ComputeDevice, Efficiency, HardwareConfig, Interconnect, NetworkLink

__all__ = [
    "BatchShape",
    "ComputeDevice",
    "Efficiency",
    "HardwareConfig",
    "Interconnect",
    "MemoryPlan",
    "NetworkLink",
    "PerformanceModel",
    "StepCost",
    "VirtualHardwarePlatform",
    "plan_memory",
]
