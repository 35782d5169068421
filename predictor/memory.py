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

What is left is the KV cache, in blocks of ``block_size`` tokens. Serving frameworks size it differently
(``kv_memory``, :data:`KV_MEMORY`), from the fraction ``f`` of their memory setting:

* ``total`` (vLLM ``gpu_memory_utilization``): KV = f × memory − weights − workspace − overhead;
* ``free`` (TensorRT-LLM ``free_gpu_memory_fraction``): KV = f × (memory − weights − workspace − overhead),
  a fraction of what is free once the model is loaded;
* ``static`` (SGLang ``mem_fraction_static``): KV = f × memory − weights; workspace, CUDA graphs and overhead
  live in the (1 − f) × memory left. Its default (``f`` None) is SGLang's start-up rule: memory less a reserve
  of 512 MiB + 1.5 MiB per token of ``max(max_num_batched_tokens, 2048)`` + 2 MiB per CUDA-graph batch (512)
  + 1 GiB per 8 GPUs of TP × PP (:func:`static_fraction`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from predictor.errors import InputError, ModelDoesNotFitError
from predictor.gpus import GPUSpec
from predictor.model_spec import ModelSpec, state_bytes
from predictor.ops import ITERATION_OPS, linear_shapes
from predictor.parallel import ParallelConfig, as_parallel
from predictor.precision import Precision

GIB = 2**30
RUNTIME_OVERHEAD_BYTES = 1.0 * GIB
NCCL_OVERHEAD_BYTES = 0.4 * GIB
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
KV_MEMORY = ("total", "free", "static")
DEFAULT_MEMORY_FRACTION = 0.9
MIB = 2**20
STATIC_CUDA_GRAPH_BATCH = 512  # CUDA-graph batches SGLang's reserve rule counts


def static_fraction(gpu: GPUSpec, par: ParallelConfig, max_num_batched_tokens: int) -> float:
    """SGLang's default ``mem_fraction_static``: 1 − reserve / memory (reserve in the module docstring)."""
    reserve = (512 * MIB + 1.5 * MIB * max(max_num_batched_tokens, 2048) + 2 * MIB * STATIC_CUDA_GRAPH_BATCH
               + GIB * par.tp * par.pp / 8)
    return min(max(1.0 - reserve / gpu.memory_bytes, 0.05), 1.0)


def _is_classic(model: ModelSpec, par: ParallelConfig) -> bool:
    """A GQA model with one MLP kind under plain TP: the closed-form paths below apply."""
    return (par.is_plain_tp and model.mla is None and model.linear_attention is None and not model.layer_types
            and not model.shared_expert_intermediate_size and model.dense_layer_count in (0, model.num_layers)
            and model.num_mlp_layers < 0 and not model.moe_latent_size and model.global_attention is None
            and not model.v_head_dim
            and not (model.qk_norm or model.attn_output_gate or model.attention_sinks))


def _probe_ops(model: ModelSpec, par: ParallelConfig, precision: Precision):
    from predictor.batch import BatchShape
    from predictor.ops import build_ops

    probe = BatchShape(*(np.ones(1) for _ in fields(BatchShape)))
    return build_ops(model, par, precision, probe)


def _stage_layer_fraction(model: ModelSpec, par: ParallelConfig) -> float:
    """Share of the layers on the largest pipeline stage: ceil(L/pp)/L."""
    return math.ceil(model.num_layers / par.pp) / model.num_layers


def weights_bytes_per_gpu(model: ModelSpec, tp: int | ParallelConfig, precision: Precision) -> float:
    """Bytes of model weights resident on one GPU (see module docstring for what is sharded).

    Classic models use the closed form over :func:`predictor.ops.linear_shapes`. Others sum the per-GPU
    weight matrices of their op rows (one place for every shape): each GEMM's k·n (the MLA absorbed
    query/value maps are counted as the separate 16-bit copies engines keep), each MoE row's local
    experts × (n_in + 1)·k·n, on the largest pipeline stage; norm weights whole at 16 bits.
    """
    par = as_parallel(tp)
    if not _is_classic(model, par):
        return _weights_from_ops(model, par, precision)
    tp = par.tp
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


@functools.lru_cache(maxsize=512)
def _weights_from_ops(model: ModelSpec, par: ParallelConfig, precision: Precision) -> float:
    """(Remembered per configuration: the op table is built once per model, layout and precision.)"""
    ops = _probe_ops(model, par, precision)
    layer_scale = _stage_layer_fraction(model, par) * par.pp  # per-stage counts → the largest stage's
    once = ops["op"].isin(ITERATION_OPS).to_numpy()
    count = np.where(once, 1.0, ops["count"].to_numpy(float) * layer_scale)
    n, k = ops["n"].to_numpy(float), ops["k"].to_numpy(float)
    wbytes = ops["weight_bits"].to_numpy(float) / 8
    kind = ops["op_kind"].to_numpy(object)
    n_in = np.where(ops["gated"].to_numpy(float) > 0, 2.0, 1.0)
    per_row = np.select([kind == "gemm", kind == "moe"],
                        [n * k, ops["experts_local"].to_numpy(float) * (n_in + 1.0) * k * n], 0.0)
    lm_head = (ops["op"] == "lm_head").to_numpy()
    if model.tie_word_embeddings:  # the embedding table serves as lm_head: counted once, below
        per_row = np.where(lm_head, 0.0, per_row)
    linear = float((count * per_row * wbytes).sum())
    embedding = math.ceil(model.vocab_size / par.tp) * model.hidden_size * 2
    norms = (model.layer_norm_count + 1) * model.norm_params_per_norm() * 2
    return linear + embedding + norms


@functools.lru_cache(maxsize=512)
def _widest_output(model: ModelSpec, par: ParallelConfig) -> float:
    """Widest per-token activation of one GPU (elements): the widest token GEMM output, or the routed experts'
    gate/up + activation per token (remembered per model and layout)."""
    if _is_classic(model, par):
        shapes = linear_shapes(model, par.tp)
        return max(shapes["qkv_proj"][0], shapes["gate_up_proj"][0] + model.intermediate_size // par.tp)
    ops = _probe_ops(model, par, Precision())
    gemm = ops[(ops["op_kind"] == "gemm") & ~ops["op"].isin(["lm_head"])]
    widest = float(gemm["n"].max()) if len(gemm) else 0.0
    if model.is_moe:
        width = model.expert_intermediate_size // par.moe_tp
        widest = max(widest, model.experts_per_token * width * (3 if model.gated_mlp else 2) / par.ep)
    return widest


def activation_workspace_bytes(model: ModelSpec, tp: int | ParallelConfig, max_num_batched_tokens: int,
                               max_num_seqs: int) -> float:
    """Peak activation memory of one forward pass (bytes; 16-bit activations, fp32 logits)."""
    par = as_parallel(tp)
    per_token = (2 * model.hidden_size + _widest_output(model, par)) * 2
    logits = max_num_seqs * model.vocab_size * 4 * 2
    return float(max_num_batched_tokens * per_token + logits)


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one GPU of a model instance (sizes in bytes), and the instance's KV capacity.

    ``num_blocks`` and ``max_tokens`` are the KV-cache capacity of the whole instance, in blocks and tokens:
    one GPU's blocks × ``replicas`` (attention data-parallel replicas each cache their own sequences).
    ``per_sequence_bytes`` is the most one running sequence holds whatever its length (full sliding windows,
    linear-attention states): reserved for ``max_num_seqs`` sequences, unless ``state_on_demand`` (then the
    KV blocks hold it, taken as each sequence is admitted: :func:`state_block_counter`).
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
    replicas: int = 1
    per_sequence_bytes: float = 0.0
    state_on_demand: bool = False
    kv_memory: str = "total"

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
    tp: int | ParallelConfig,
    precision: Precision,
    *,
    gpu_memory_utilization: float | None = DEFAULT_MEMORY_FRACTION,
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
    block_size: int = 16,
    state_on_demand: bool = False,
    sequence_tokens: int | None = None,
    sequences_flag: str = "--max-num-seqs",
    kv_memory: str = "total",
) -> MemoryPlan:
    """Split one GPU's memory into weights, workspace, overhead, per-sequence state and KV cache.

    ``tp`` is the TP degree or a :class:`~predictor.parallel.ParallelConfig`: weights shard over TP, EP,
    MoE-TP and pipeline stages; each attention-DP replica holds ``1/dp_attention`` of the running
    sequences and its workspace covers its share of the token budget.

    Per-sequence state (sliding windows, recurrent states) is reserved for ``max_num_seqs`` sequences — a
    static batch's own sequences — unless ``state_on_demand``: then, as serving engines with a hybrid KV
    allocator do (vLLM V1), it comes out of the KV blocks as sequences are admitted (the simulator's block
    manager takes :func:`state_block_counter`'s blocks per sequence) and nothing is set aside for it here. A
    model with no per-token cache at all (every layer windowed or linear) always reserves.
    ``sequence_tokens``: the length the reserved sequences reach (a static batch's prompt + output), so that
    their windows are reserved up to it; None: any length (whole windows). ``sequences_flag`` names the setting
    that gives ``max_num_seqs`` in the hint of a refusal. ``kv_memory`` says what ``gpu_memory_utilization`` is a
    fraction of (:data:`KV_MEMORY`, module docstring); None: 0.9, or SGLang's rule for ``static``.

    Raises
    ------
    ModelDoesNotFitError
        When weights, workspace and overhead leave no room for even one KV block.
    """
    if kv_memory not in KV_MEMORY:
        raise InputError(f"kv_memory: unknown value {kv_memory!r}; allowed: {', '.join(KV_MEMORY)}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise InputError(f"--gpu-memory-utilization: must be in (0, 1], got {gpu_memory_utilization}")
    if block_size <= 0:
        raise InputError(f"--block-size: must be > 0, got {block_size}")
    par = as_parallel(tp)
    model.check_parallel(par)
    dp = par.dp_attention
    precision.check_native(gpu)  # fp4 compute needs fp4 tensor cores
    if gpu_memory_utilization is None:
        gpu_memory_utilization = (static_fraction(gpu, par, max_num_batched_tokens) if kv_memory == "static"
                                  else DEFAULT_MEMORY_FRACTION)
    weights = weights_bytes_per_gpu(model, par, precision)
    workspace = activation_workspace_bytes(model, par, math.ceil(max_num_batched_tokens / dp),
                                           math.ceil(max_num_seqs / dp))
    overhead = RUNTIME_OVERHEAD_BYTES + (NCCL_OVERHEAD_BYTES if par.gpus > 1 else 0.0)
    usable = gpu.memory_bytes * (1.0 if kv_memory == "free" else gpu_memory_utilization)
    stage = _stage_layer_fraction(model, par)
    kv_per_token = model.kv_cache_bytes_per_token(precision.kv_bits, par.tp) * stage
    length = float("inf") if sequence_tokens is None else sequence_tokens
    per_seq = float(model.sequence_state_bytes(length, precision.kv_bits, par.tp)) * stage
    on_demand = state_on_demand and kv_per_token > 0 and per_seq > 0
    reserved = 0.0 if on_demand else per_seq * math.ceil(max_num_seqs / dp)
    # what the KV cache may take: workspace and overhead come out of it unless SGLang's static fraction left them out
    fixed = 0.0 if kv_memory == "static" else workspace + overhead
    free = usable - weights - reserved - fixed
    if kv_memory == "free" and free > 0:
        free *= gpu_memory_utilization
    blocks_per_gpu = int(free // (kv_per_token * block_size)) if free > 0 and kv_per_token > 0 else 0
    if kv_per_token <= 0 and free > 0:  # no per-token cache at all (every layer windowed or linear)
        blocks_per_gpu = (1 << 30) // block_size
    if blocks_per_gpu < 1:
        need = (weights + fixed + reserved) / GIB
        state = ""
        if reserved > 0:  # sliding-window or recurrent state of every sequence max_num_seqs admits
            state = (f" + per-sequence state {reserved / GIB:.1f} GiB ({per_seq / 2**20:.1f} MiB × "
                     f"{math.ceil(max_num_seqs / dp)} sequences)")
            # the largest max_num_seqs that fits: each sequence per replica costs its state and its logits workspace
            tokens_only = activation_workspace_bytes(model, par, math.ceil(max_num_batched_tokens / dp), 0)
            room = usable - weights - tokens_only - overhead - kv_per_token * block_size
            fitting = int(room // (per_seq + (workspace - tokens_only) / math.ceil(max_num_seqs / dp))) * dp \
                if room > 0 else 0
        hint = (f"; try {sequences_flag} {fitting}" if reserved > 0 and fitting >= 1
                else _fit_hint(model, gpu, par, precision, usable, workspace + overhead))
        raise ModelDoesNotFitError(
            f"--model: {model.name} does not fit on {gpu.name} at {par.label}: weights {weights / GIB:.1f} GiB"
            f"{f' + workspace {fixed / GIB:.1f} GiB' if fixed else ''}{state} per GPU = {need:.1f} GiB > usable "
            f"{usable / GIB:.1f} GiB ({_usable_rule(kv_memory, gpu_memory_utilization)}){hint}"
        )
    num_blocks = blocks_per_gpu * dp
    return MemoryPlan(
        gpu_memory_bytes=gpu.memory_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        usable_bytes=usable,
        weights_bytes=weights,
        activation_bytes=workspace,
        overhead_bytes=overhead,
        kv_cache_bytes=blocks_per_gpu * block_size * kv_per_token,
        kv_bytes_per_token=kv_per_token,
        block_size=block_size,
        num_blocks=num_blocks,
        max_tokens=num_blocks * block_size,
        replicas=dp,
        per_sequence_bytes=per_seq,
        state_on_demand=on_demand,
        kv_memory=kv_memory,
    )


def _usable_rule(kv_memory: str, fraction: float) -> str:
    """How the usable memory of a refusal was set, in the framework's terms."""
    if kv_memory == "free":
        return f"all of it for weights and workspace; the KV cache gets {fraction:.3g} of what is left"
    if kv_memory == "static":
        return f"a static fraction {fraction:.3g} of GPU memory for weights and KV cache"
    return f"gpu_memory_utilization={fraction:.3g}"


def sequence_blocks(model: ModelSpec, tp: int | ParallelConfig, precision: Precision, tokens: int,
                    block_size: int = 16) -> int:
    """KV blocks one sequence holding ``tokens`` tokens takes when its per-sequence state comes out of the blocks
    (``state_on_demand``): its tokens' blocks and its state's (:func:`state_block_counter`)."""
    count = state_block_counter(model, tp, precision, block_size)
    return -(-int(tokens) // block_size) + (count(int(tokens)) if count is not None else 0)


def state_block_counter(model: ModelSpec, tp: int | ParallelConfig, precision: Precision, block_size: int = 16):
    """A function from a sequence's length (tokens; an int or an int array) to the KV blocks its per-sequence state
    takes — its windows filled to min(length, window), its recurrent states — in blocks of ``block_size`` tokens of
    the per-token cache (whole blocks, rounded up); None when the model keeps no per-sequence state or has no
    per-token cache to measure blocks by. The ratio of state to per-token bytes is the same on every GPU of an
    instance (TP shards, pipeline stages), so the count is per sequence whatever the layout."""
    par = as_parallel(tp)
    block_bytes = model.kv_cache_bytes_per_token(precision.kv_bits, par.tp) * block_size
    if block_bytes <= 0 or model.per_sequence_cache_bytes(precision.kv_bits, par.tp) <= 0:
        return None
    terms = model.state_terms(precision.kv_bits, par.tp)  # taken once: the count runs at every admission

    def blocks(tokens):
        count = np.ceil(state_bytes(terms, tokens) / block_bytes)
        if isinstance(tokens, np.ndarray):  # a recurrent state alone does not depend on the length: broadcast
            return np.broadcast_to(count, tokens.shape).astype(np.int64)
        return int(count)

    return blocks


def _fit_hint(model: ModelSpec, gpu: GPUSpec, par: ParallelConfig, precision: Precision, usable: float,
              fixed: float) -> str:
    """A larger TP (plain models) or expert-parallel degree (MoE) that would fit, if any."""
    from dataclasses import replace

    for t in (2, 4, 8, 16):
        if t <= par.tp or model.num_heads % t:
            continue
        trial = replace(par, tp=t, moe_tp=0)
        try:
            if weights_bytes_per_gpu(model, trial, precision) + fixed < usable * 0.9:
                return f"; try --tp {t}" + (f" --ep {trial.ep}" if trial.ep > 1 else "")
        except InputError:
            continue
    return "; try a larger tp/ep, more pipeline stages (--pp), a bigger GPU or fewer weight bits"
