"""GPU memory model: weights, KV cache and workspace per GPU at tensor parallelism ``tp``.

Usable memory is ``gpu_memory_utilization × memory`` (as in vLLM). From it we subtract

* **weights** on one GPU: linear layers at the precision's weight bits, sharded by ``tp`` (K/V
  projections replicated when there are fewer KV heads than GPUs); the vocab-parallel embedding and
  lm_head sharded by ``tp`` at 16 bits; norms, biases and the MoE router replicated at 16 bits;
* **activation workspace** for the largest forward pass: ``max_num_batched_tokens`` tokens holding
  the residual stream, the hidden state and the widest intermediate (QKV output, or gate/up output
  plus the activation output) at 16 bits, plus fp32 logits and probabilities for ``max_num_seqs``;
* **runtime overhead**: a fixed 1 GiB (CUDA context, cuBLAS workspaces, CUDA graphs) plus 0.4 GiB of
  NCCL buffers when ``tp > 1`` (assumptions, close to what vLLM and NCCL report at start-up).

What is left is the KV cache, in blocks of ``block_size`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from predictor.errors import InputError, ModelDoesNotFitError
from predictor.gpus import GPUSpec
from predictor.models import ModelSpec
from predictor.ops import linear_shapes
from predictor.precision import Precision

GIB = 2**30
RUNTIME_OVERHEAD_BYTES = 1.0 * GIB
NCCL_OVERHEAD_BYTES = 0.4 * GIB
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256


def weights_bytes_per_gpu(model: ModelSpec, tp: int, precision: Precision) -> float:
    """Bytes of model weights resident on one GPU (see module docstring for what is sharded)."""
    shapes = linear_shapes(model, tp)
    L, H = model.num_layers, model.hidden_size
    attn = sum(n * k for op, (n, k) in shapes.items() if op in ("qkv_proj", "o_proj"))
    if model.is_moe:
        mlp = model.num_experts * (3 if model.gated_mlp else 2) * H * (model.intermediate_size // tp)
    else:
        mlp = sum(n * k for op, (n, k) in shapes.items() if op in ("gate_up_proj", "down_proj"))
    linear = L * (attn + mlp) * precision.weight_bytes
    embeddings = math.ceil(model.vocab_size / tp) * H * (1 if model.tie_word_embeddings else 2) * 2
    # Router, biases and norms are small and kept whole on every GPU at 16 bits (an upper bound).
    small = L * (model.router_params() + model.small_params_per_layer()) + model.norm_params_per_norm()
    small += model.vocab_size if model.lm_head_bias else 0
    return float(linear + embeddings + small * 2)


def activation_workspace_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak activation memory of one forward pass (bytes; 16-bit activations, fp32 logits)."""
    shapes = linear_shapes(model, tp)
    widest = max(shapes["qkv_proj"][0], shapes["gate_up_proj"][0] + model.intermediate_size // tp)
    per_token = (2 * model.hidden_size + widest) * 2
    logits = max_num_seqs * model.vocab_size * 4 * 2
    return float(max_num_batched_tokens * per_token + logits)


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one GPU of a ``tp``-way model instance (all sizes in bytes).

    ``max_tokens`` is the KV-cache capacity in tokens (a whole number of blocks).
    """

    gpu_memory_bytes: float
    gpu_memory_utilization: float
    usable_bytes: float
    weights_bytes: float
    activation_bytes: float
    overhead_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float
    block_size: int
    num_blocks: int
    max_tokens: int

    def max_sequences(self, seq_len: int) -> int:
        """Sequences of ``seq_len`` tokens that fit in the KV cache at once (paged, whole blocks each)."""
        if seq_len <= 0:
            raise InputError(f"seq_len: must be > 0, got {seq_len}")
        return self.num_blocks // math.ceil(seq_len / self.block_size)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_memory(
    model: ModelSpec,
    gpu: GPUSpec,
    tp: int,
    precision: Precision,
    *,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
    block_size: int = 16,
) -> MemoryPlan:
    """Split one GPU's memory into weights, workspace, overhead and KV cache.

    Raises
    ------
    ModelDoesNotFitError
        When weights, workspace and overhead leave no room for even one KV block.
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise InputError(f"--gpu-memory-utilization: must be in (0, 1], got {gpu_memory_utilization}")
    if block_size <= 0:
        raise InputError(f"--block-size: must be > 0, got {block_size}")
    model.check_tp(tp)
    precision.check_native(gpu)  # fp4 compute needs fp4 tensor cores
    usable = gpu.memory_bytes * gpu_memory_utilization
    weights = weights_bytes_per_gpu(model, tp, precision)
    workspace = activation_workspace_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
    overhead = RUNTIME_OVERHEAD_BYTES + (NCCL_OVERHEAD_BYTES if tp > 1 else 0.0)
    kv_per_token = model.kv_cache_bytes_per_token(precision.kv_bits, tp)
    free = usable - weights - workspace - overhead
    num_blocks = int(free // (kv_per_token * block_size)) if free > 0 else 0
    if num_blocks < 1:
        need = (weights + workspace + overhead) / GIB
        suggestion = next((t for t in (2, 4, 8, 16) if t > tp and model.num_heads % t == 0
                           and weights_bytes_per_gpu(model, t, precision) + workspace + overhead < usable * 0.9), None)
        hint = f"; try --tp {suggestion}" if suggestion else "; try a larger tp, a bigger GPU or fewer weight bits"
        raise ModelDoesNotFitError(
            f"--model: {model.name} does not fit on {gpu.name} at tp={tp}: weights {weights / GIB:.1f} GiB + workspace "
            f"{(workspace + overhead) / GIB:.1f} GiB per GPU = {need:.1f} GiB > usable {usable / GIB:.1f} GiB "
            f"(gpu_memory_utilization={gpu_memory_utilization}){hint}"
        )
    return MemoryPlan(
        gpu_memory_bytes=gpu.memory_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        usable_bytes=usable,
        weights_bytes=weights,
        activation_bytes=workspace,
        overhead_bytes=overhead,
        kv_cache_bytes=num_blocks * block_size * kv_per_token,
        kv_bytes_per_token=kv_per_token,
        block_size=block_size,
        num_blocks=num_blocks,
        max_tokens=num_blocks * block_size,
    )
