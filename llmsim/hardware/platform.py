"""The virtual node: devices with a memory ledger, links, and the memory plan of a deployment."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmsim.errors import CapacityError, ConfigError
from llmsim.hardware.spec import GIB, ComputeDevice, HardwareConfig, NetworkLink
from llmsim.models import DTYPE_BYTES, ModelProfile

# Memory outside PyTorch's caching allocator and activations: CUDA context, NCCL buffers, CUDA
# graphs. A modelling assumption (vLLM's start-up log reports "non-torch memory" and "CUDA graph"
# sizes of this order for 8B-70B models); it is not taken from the reference files.
NON_TORCH_BYTES = 1.0 * GIB


@dataclass(frozen=True)
class MemoryPlan:
    """How one GPU of a deployment's tensor-parallel group spends its memory (bytes)."""

    device_capacity: float
    usable: float  # capacity x utilisation fraction
    weights: float
    workspace: float
    kv_cache: float
    kv_bytes_per_token: float  # per GPU
    block_size: int
    num_blocks: int
    #: the most tokens one request can hold when blocks are shared by KV-cache groups of a hybrid
    #: model (None: ``num_blocks * block_size``; see ``llmsim.frameworks.kv_groups``)
    max_request_tokens: int | None = None

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds (for one request: with hybrid groups, its longest sequence)."""
        if self.max_request_tokens is not None:
            return self.max_request_tokens
        return self.num_blocks * self.block_size

    def describe(self) -> str:
        """One line for logs: weights, workspace, KV cache and its capacity."""
        return (
            f"weights {self.weights / GIB:.2f} GiB + workspace {self.workspace / GIB:.2f} GiB + "
            f"KV cache {self.kv_cache / GIB:.2f} GiB ({self.num_blocks} blocks x {self.block_size} tokens) "
            f"of {self.usable / GIB:.2f} GiB usable per GPU"
        )


def weights_per_gpu(model: ModelProfile, dtype: str, tp: int, attention_dp: int = 1) -> float:
    """Bytes of weights on each GPU: every matrix (embeddings included) is sharded ``tp`` ways.

    With attention data parallelism each of the ``attention_dp`` ranks holds its own copy of
    everything but the routed experts, sharded over its ``tp / attention_dp`` GPUs; the routed
    experts are spread over all ``tp`` GPUs (expert- or tensor-parallel alike).
    """
    if attention_dp == 1:
        return model.weight_bytes(dtype) / tp
    routed = model.routed_expert_params * DTYPE_BYTES[model.expert_dtype or dtype]
    return (model.weight_bytes(dtype) - routed) / (tp // attention_dp) + routed / tp


def activation_workspace(model: ModelProfile, tp: int, max_batched_tokens: int, max_seqs: int) -> float:
    """Peak activation memory of the largest step plus logits and non-torch allocations.

    Mirrors what vLLM's profiling run measures: hidden states, QKV and MLP intermediates for
    ``max_batched_tokens`` tokens (16-bit) and fp32 logits for ``max_seqs`` rows.
    """
    h = model.hidden_size
    inter = model.expert_intermediate_size * (model.num_experts_per_tok if model.is_moe else 1)
    per_token = 2.0 * (4 * h + (model.q_dim + 2 * model.kv_dim) / tp + 2 * inter / tp)
    logits = 4.0 * max_seqs * model.vocab_size / tp
    return max_batched_tokens * per_token + logits + NON_TORCH_BYTES


def plan_memory(
    model: ModelProfile,
    device: ComputeDevice,
    *,
    dtype: str,
    kv_dtype: str,
    tp: int,
    utilisation: float,
    block_size: int,
    max_batched_tokens: int,
    max_seqs: int,
    num_gpus_in_node: int,
    key: str = "framework.tensor_parallel_size",
    fraction_of_free: bool = False,
    kv_layers_per_block: int | None = None,
    attention_dp: int = 1,
) -> MemoryPlan:
    """Split a GPU's memory into weights, workspace and KV blocks; a model that does not fit is an error.

    ``utilisation`` is vLLM's ``gpu_memory_utilization`` (a fraction of the whole GPU everything must
    fit in) or, with ``fraction_of_free``, TensorRT-LLM's ``free_gpu_memory_fraction`` / SGLang-style
    share of the memory left after weights and workspace that goes to the KV cache.
    ``kv_layers_per_block``: layers one block spans (default all; vLLM's hybrid allocator makes a
    block one KV-cache group's layers, ``llmsim.frameworks.kv_groups``), so ``kv_bytes_per_token``
    is the bytes of one token in one block.
    ``attention_dp`` ranks (each of ``tp / attention_dp`` GPUs) hold their own requests' KV: the
    blocks of all ranks together are the plan's ``num_blocks``.
    """

    def plan_at(size: int) -> MemoryPlan:
        dp = attention_dp if size == tp else 1
        weights = weights_per_gpu(model, dtype, size, dp)
        attn_tp = size // dp
        workspace = activation_workspace(model, attn_tp, -(-max_batched_tokens // dp), -(-max_seqs // dp))
        if kv_layers_per_block is None:
            kv_bytes = model.kv_bytes_per_token(kv_dtype) / model.kv_shards(attn_tp)
        else:
            kv_bytes = kv_layers_per_block * model.kv_bytes_per_token_layer(kv_dtype) / model.kv_shards(attn_tp)
        if fraction_of_free:
            usable = device.memory_capacity_bytes
            kv_cache = (usable - weights - workspace) * utilisation
        else:
            usable = device.memory_capacity_bytes * utilisation
            kv_cache = usable - weights - workspace
        num_blocks = dp * int(kv_cache // (kv_bytes * block_size)) if kv_cache > 0 else 0
        return MemoryPlan(
            device.memory_capacity_bytes, usable, weights, workspace, kv_cache, kv_bytes, block_size, num_blocks
        )

    plan = plan_at(tp)
    if plan.num_blocks >= 1:
        return plan
    larger = [2**i for i in range(7) if 2**i > tp and model.num_attention_heads % 2**i == 0]
    fits = [size for size in larger if plan_at(size).num_blocks >= 1]
    if fits:
        hint = f"tensor_parallel_size={fits[0]} would fit"
        if fits[0] > num_gpus_in_node:
            hint += f" but the node has only {num_gpus_in_node} GPUs"
    else:
        hint = "no tensor-parallel size up to 64 fits"
    raise CapacityError(
        f"{key}={tp}: {model.name} ({dtype}) needs {plan.weights / GIB:.1f} GiB of weights + "
        f"{plan.workspace / GIB:.1f} GiB workspace per GPU, but {device.name or device.device_id} offers "
        f"{plan.usable / GIB:.1f} GiB ({utilisation:g} x {device.memory_capacity_bytes / GIB:.1f} GiB); {hint}"
    )


#: the "link" of clients in the framework's own process: nothing to cross
IN_PROCESS = NetworkLink.model_construct(
    link_id="in_process",
    source_id="client_in_process",
    dest_id="framework_entry_0",
    bandwidth_bps=math.inf,
    latency_s=0.0,
)


class VirtualHardwarePlatform:
    """The node a simulation runs on: devices with a memory ledger and the client network link."""

    def __init__(self) -> None:
        self.config: HardwareConfig | None = None
        self.devices: dict[str, ComputeDevice] = {}
        self.links: dict[str, NetworkLink] = {}
        self.ledger: dict[str, dict[str, float]] = {}
        self.simpy_env: Any = None
        self.model_characteristics_db: dict[str, ModelProfile] = {}
        self._claimed: dict[str, str] = {}
        self._delays: dict[tuple[int, float], float] = {}
        self.has_client_link = True

    def initialize(
        self,
        hardware_profile: HardwareConfig,
        simpy_env: Any,
        model_characteristics_db: dict,
        *,
        client_link: bool = True,
    ) -> None:
        """Build devices and links from the hardware profile (the seed's two-step set-up).

        ``client_link=False`` runs the clients in the framework's process (vLLM's ``LLM`` class,
        ``vllm bench throughput``, trtllm-bench): requests and answers cross no network at all.
        """
        self.config = hardware_profile
        self.has_client_link = client_link
        self.simpy_env = simpy_env
        self.model_characteristics_db = model_characteristics_db
        self.devices = {d.device_id: d for d in hardware_profile.compute_devices}
        self.links = {link.link_id: link for link in hardware_profile.network_links}
        self.ledger = {device_id: {} for device_id in self.devices}
        self._delays = {}  # a new link: forget the memoised delays

    @property
    def client_link(self) -> NetworkLink:
        """The link between clients and the serving frameworks (in-process: no latency, no serialisation)."""
        assert self.config is not None, "initialize() first"
        if not self.has_client_link:
            return IN_PROCESS
        return self.config.client_link

    def serialisation_time(self, num_tokens: int, bytes_per_token: float) -> float:
        """Seconds the client link is busy putting ``num_tokens`` tokens on the wire (no latency)."""
        if not self.has_client_link:
            return 0.0
        return num_tokens * bytes_per_token * 8.0 / self.client_link.bandwidth_bps

    def transfer_delay(self, num_tokens: int, bytes_per_token: float) -> float:
        """Seconds for ``num_tokens`` tokens to cross an idle client link (either way); memoised per size.

        Latency plus serialisation; in-process clients (no client link) take no time.
        """
        key = (num_tokens, bytes_per_token)
        delay = self._delays.get(key)
        if delay is None:
            if not self.has_client_link:
                delay = self._delays[key] = 0.0
            else:
                link = self.client_link
                delay = self._delays[key] = link.latency_s + num_tokens * bytes_per_token * 8.0 / link.bandwidth_bps
        return delay

    #: seconds for a request's prompt to reach the server, and for response tokens to reach the client
    upload_delay = download_delay = transfer_delay

    def claim_devices(self, owner: str, tp: int, gpu_ids: tuple[str, ...] | None, key: str) -> list[str]:
        """Give ``owner`` exclusive use of ``tp`` devices (the named ones, or the next free ones)."""
        if gpu_ids is None:
            free = [d for d in self.devices if d not in self._claimed]
            if len(free) < tp:
                raise ConfigError(
                    key,
                    tp,
                    f"the node has {len(self.devices)} GPUs and {len(free)} are free; use at most {len(free)}",
                )
            gpu_ids = tuple(free[:tp])
        for device_id in gpu_ids:
            if device_id not in self.devices:
                raise ConfigError(key.rsplit(".", 1)[0] + ".gpu_ids", device_id, f"one of {', '.join(self.devices)}")
            if device_id in self._claimed:
                raise ConfigError(
                    key.rsplit(".", 1)[0] + ".gpu_ids",
                    device_id,
                    f"a GPU not already used by {self._claimed[device_id]}",
                )
        if len(gpu_ids) != tp:
            raise ConfigError(key, tp, f"equal to the number of GPUs given ({len(gpu_ids)})")
        for device_id in gpu_ids:
            self._claimed[device_id] = owner
        return list(gpu_ids)

    def allocate_memory(self, device_id: str, owner: str, nbytes: float) -> None:
        """Record ``nbytes`` on a device's ledger; more than its capacity is a CapacityError."""
        device = self.devices[device_id]
        used = sum(self.ledger[device_id].values())
        if used + nbytes > device.memory_capacity_bytes * (1 + 1e-9):
            raise CapacityError(
                f"{device_id}: {owner} needs {nbytes / GIB:.2f} GiB but only "
                f"{(device.memory_capacity_bytes - used) / GIB:.2f} GiB are free"
            )
        self.ledger[device_id][owner] = self.ledger[device_id].get(owner, 0.0) + nbytes

    def memory_used(self, device_id: str) -> float:
        """Bytes allocated on a device."""
        return sum(self.ledger[device_id].values())


def blocks_for(tokens: int, block_size: int) -> int:
    """KV blocks needed to hold ``tokens`` tokens."""
    return math.ceil(tokens / block_size)
