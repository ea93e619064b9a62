"""Typed hardware profiles: a node of identical accelerators, its GPU links and the client link.

Two layouts validate into one :class:`HardwareConfig`:

* the catalogue layout of ``conf/hardware/*.yaml`` (``gpu`` + ``num_gpus`` + ``interconnect``);
* the seed's ``hardware_profile`` layout (a ``compute_devices`` list and ``network_links``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from llmsim.schema import Schema

GIB = 1024**3


class ComputeDevice(Schema):
    """One accelerator: dense peak throughput per dtype, memory and its bandwidth (seed field names)."""

    device_id: str = "gpu0"
    device_type: str = "GPU"
    name: str = ""
    peak_tflops: dict[str, PositiveFloat] = Field(
        description="Dense (non-sparse) peak TFLOPS/TOPS per dtype, e.g. {fp16: 312, int8: 624}."
    )
    memory_capacity_bytes: PositiveFloat
    memory_gbps: PositiveFloat = Field(description="HBM bandwidth in GB/s (1e9 bytes/s).")
    processing_units: PositiveInt = Field(default=1, description="SMs (NVIDIA) or CUs (AMD).")
    host_link_gbps: PositiveFloat = Field(
        default=32.0,
        description="GPU-host link per direction, GB/s (PCIe Gen4 x16: 32; Gen5: 64); used for KV swapping.",
    )

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s for a compute dtype; bf16 and fp16 share their figure when one is missing."""
        table = self.peak_tflops
        for key in (dtype, {"bf16": "fp16", "fp16": "bf16"}.get(dtype, dtype)):
            if key in table:
                return table[key] * 1e12
        raise KeyError(dtype)


class Efficiency(Schema):
    """Achieved fractions of peak, per GPU family (sources in each conf/hardware file)."""

    gemm_flops: float = Field(default=0.8, gt=0, le=1, description="Large-GEMM fraction of dense peak.")
    gemm_flops_fp8: float | None = Field(
        default=None, gt=0, le=1, description="Large-GEMM fraction of the FP8 peak (null: same as gemm_flops)."
    )
    moe_gemm_relative: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Grouped expert GEMMs of MoE layers reach this fraction of a dense GEMM's efficiency.",
    )
    gemm_half_tokens: PositiveFloat = Field(
        default=64.0, description="Tokens per GEMM at which it reaches half of gemm_flops (small shapes run slower)."
    )
    attention_flops: float = Field(default=0.6, gt=0, le=1, description="Prefill attention fraction of peak.")
    hbm_bandwidth: float = Field(default=0.85, gt=0, le=1, description="Weight/KV streaming fraction of HBM peak.")


class Interconnect(Schema):
    """Scale-up link between the GPUs of a node (NVLink, xGMI, PCIe)."""

    name: str = "NVLink"
    bandwidth_gbps: PositiveFloat = Field(default=300.0, description="Per direction, GB/s, per GPU.")
    allreduce_efficiency: float = Field(default=0.77, gt=0, le=1.2, description="busBW / bandwidth_gbps.")
    latency_s: NonNegativeFloat = Field(default=2.0e-5, description="Latency floor of one small all-reduce.")


class NetworkLink(Schema):
    """A link between the client and the framework's entry point (seed field names)."""

    link_id: str = "client_to_fw_entry"
    source_id: str = "client_node_0"
    dest_id: str = "framework_entry_0"
    bandwidth_bps: PositiveFloat = 10e9
    latency_s: NonNegativeFloat = 1e-4


class HardwareConfig(Schema):
    """A node: its accelerators (all identical for now), their interconnect and the client link."""

    name: str = "custom"
    description: str = ""
    compute_devices: tuple[ComputeDevice, ...] = Field(min_length=1)
    interconnect: Interconnect = Interconnect()
    efficiency: Efficiency = Efficiency()
    network_links: tuple[NetworkLink, ...] = Field(
        default=(NetworkLink(),),
        description="Client links; requests and responses travel over the first (at least one is needed).",
    )

    @field_validator("network_links")
    @classmethod
    def _one_link_at_least(cls, links: tuple[NetworkLink, ...]) -> tuple[NetworkLink, ...]:
        if not links:
            raise ValueError(
                "at least one link (the first is the client link requests and responses travel over), "
                "e.g. [{bandwidth_bps: 10e9, latency_s: 1e-4}]"
            )
        return links

    @model_validator(mode="before")
    @classmethod
    def _expand_node(cls, data: Any) -> Any:
        """Turn the catalogue layout (``gpu`` + ``num_gpus``) into a list of compute devices."""
        if not isinstance(data, dict) or "gpu" not in data:
            return data
        data = dict(data)
        gpu = dict(data.pop("gpu"))
        num_gpus = data.pop("num_gpus", 1)
        if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
            raise ValueError(f"num_gpus must be a whole number >= 1, got {num_gpus!r}")
        if "memory_capacity_gib" in gpu:
            gpu["memory_capacity_bytes"] = gpu.pop("memory_capacity_gib") * GIB
        data["compute_devices"] = [{**gpu, "device_id": f"gpu{i}"} for i in range(num_gpus)]
        return data

    @property
    def gpu(self) -> ComputeDevice:
        """The node's accelerator type (devices are identical)."""
        return self.compute_devices[0]

    @property
    def num_gpus(self) -> int:
        """How many accelerators the node has."""
        return len(self.compute_devices)

    @property
    def client_link(self) -> NetworkLink:
        """The link requests and responses travel over."""
        return self.network_links[0]


#: GPUs that share a die (and so their achieved efficiencies): calibration factors are fitted per family.
FAMILIES = {
    "a100": "ampere",
    "a100_40gb": "ampere",
    "a100_pcie": "ampere",
    "a10g": "ampere",
    "h100": "hopper",
    "h100_pcie": "hopper",
    "h200": "hopper",
    "l40s": "ada",
    "l4": "ada",
    "b200": "blackwell",
    "mi300x": "cdna3",
}


def gpu_family(hardware: str) -> str | None:
    """The family (``hopper``, ``ampere``...) of a hardware option name (``h100``, or a calibrated copy
    ``h100_calibrated``); None when unknown."""
    return FAMILIES.get(hardware.removesuffix("_calibrated"))
