"""The ops of one engine iteration for a model at tensor parallelism ``tp`` (vectorised over iterations).

:func:`build_ops` lists every kernel call of a forward pass as rows of the canonical op schema
(shape columns understood by :mod:`predictor.opcost`), with ``count`` = calls per iteration
(``num_layers`` for per-layer ops). Per layer, in order::

    input_norm → qkv_proj → rope → attn_prefill / attn_decode → o_proj → attn_allreduce (tp>1)
    → attn_residual_add → post_attn_norm → gate_up_proj → act → down_proj   (dense)
                                         → moe_router → moe_experts          (MoE)
    → mlp_allreduce (tp>1) → mlp_residual_add

plus, once per iteration, ``embedding`` (+ its all-reduce for a vocab-parallel table when tp>1),
``final_norm``, ``lm_head`` over the tokens that sample only, ``logits_gather`` (tp>1) and ``sampling``.
Models with parallel attention/MLP (phi-2) have one norm and one residual add per layer; parallel
models with two norms per layer (GPT-NeoX's ``use_parallel_residual``) list both ``input_norm`` and
``post_attn_norm`` (each reading the layer input) and one residual add. Models without RoPE
(``rotary_fraction`` 0: MPT's ALiBi) have no ``rope`` op.

Today's models add per-kind blocks (:mod:`predictor.op_blocks`): sliding/chunked attention rows whose
window bounds the keys, MLA's latent projections and absorbed decode, gated delta-net layers, shared
experts, MoE all-to-alls under attention data parallelism, and a pipeline ``pp_send``.

Assumptions: linear weights use the precision's weight bits; embedding, lm_head and the MoE router
stay 16-bit and run on the 16-bit tensor-core path, as does attention (an fp8 KV cache is read at
8 bits and dequantised in the kernel). The precision's activation bits apply to the inputs and
outputs of quantised GEMMs; every other kernel moves 16-bit activations. KV heads fewer than ``tp``
are replicated (each GPU holds one).
"""

from __future__ import annotations

import numpy as np

from predictor import op_blocks as blocks
from predictor import opcost as oc
from predictor.batch import BatchShape, decode_batch
from predictor.lazy import pandas as pd
from predictor.model_spec import ModelSpec
from predictor.parallel import ParallelConfig, as_parallel
from predictor.precision import Precision

# Ops that run once per iteration (not per layer); every other op's count is its layers on one stage.
ITERATION_OPS = ("embedding", "embedding_allreduce", "final_norm", "lm_head", "logits_gather", "sampling", "pp_send")
LAYER_OPS_DENSE = (
    "input_norm", "qkv_proj", "rope", "attn_prefill", "attn_decode", "o_proj", "attn_allreduce",
    "attn_residual_add", "post_attn_norm", "gate_up_proj", "act", "down_proj", "mlp_allreduce", "mlp_residual_add",
)


def linear_shapes(model: ModelSpec, tp: int) -> dict[str, tuple[int, int]]:
    """Per-GPU ``(n, k)`` (output, input features) of each linear layer at tensor parallelism ``tp``.

    qkv_proj: n = (heads/tp + 2·kv_heads_per_gpu)·head_dim, k = hidden (column-parallel).
    o_proj: n = hidden, k = heads·head_dim/tp (row-parallel). gate_up_proj: n = 2·inter/tp (gated)
    or inter/tp; down_proj: n = hidden, k = inter/tp. lm_head: n = vocab/tp, k = hidden.
    """
    hd = model.head_dim
    q_local = model.num_heads // tp * hd
    kv_local = model.kv_heads_per_gpu(tp) * hd
    inter_local = model.intermediate_size // tp
    n_in = 2 if model.gated_mlp else 1
    return {
        "qkv_proj": (q_local + 2 * kv_local, model.hidden_size),
        "o_proj": (model.hidden_size, q_local),
        "gate_up_proj": (n_in * inter_local, model.hidden_size),
        "down_proj": (model.hidden_size, inter_local),
        "lm_head": (int(np.ceil(model.vocab_size / tp)), model.hidden_size),
    }


def rope_width(model: ModelSpec, tp: int) -> float:
    """Elements per token that RoPE rotates on one GPU: (q + k heads)·head_dim·rotary_fraction."""
    return (model.num_heads // tp + model.kv_heads_per_gpu(tp)) * model.head_dim * model.rotary_fraction


def _half_dtype(precision: Precision) -> str:
    return "bf16" if precision.compute == "bf16" else "fp16"


class _Rows:
    """Accumulates op rows column-wise (one array per op) and concatenates once."""

    def __init__(self, n_iter: int, only: frozenset[str] | None = None):
        self.n_iter = n_iter
        self.only = only
        self.parts: list[dict] = []

    def add(self, op: str, kind: str, count: float, mask: np.ndarray, compute_dtype: str, **cols) -> None:
        if self.only is not None and op not in self.only:
            return
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        part = {"iteration": idx, "op": op, "op_kind": kind, "count": float(count), "compute_dtype": compute_dtype}
        for name, value in cols.items():
            value = np.asarray(value, dtype=float)
            part[name] = value[idx] if value.ndim else np.full(idx.size, float(value))
        self.parts.append(part)

    def frame(self) -> pd.DataFrame:
        columns = ["iteration", "op", "op_kind", "count", "compute_dtype", *oc.SHAPE_DEFAULTS]
        if not self.parts:
            return pd.DataFrame({c: [] for c in columns})
        sizes = [p["iteration"].size for p in self.parts]
        out = {}
        for c in columns:
            chunks = []
            for p, size in zip(self.parts, sizes, strict=True):
                v = p.get(c, oc.SHAPE_DEFAULTS.get(c))
                chunks.append(v if isinstance(v, np.ndarray) else np.full(size, v, dtype=object if isinstance(v, str) else float))
            out[c] = np.concatenate(chunks)
        df = pd.DataFrame(out)
        df["iteration"] = df["iteration"].astype(np.int64)
        return df


def build_ops(
    model: ModelSpec,
    tp: int | ParallelConfig,
    precision: Precision,
    batch: BatchShape,
    *,
    attention: str = "flash",
    only: set[str] | frozenset[str] | None = None,
) -> pd.DataFrame:
    """Every kernel call of each iteration in ``batch`` as canonical op rows, on one GPU.

    Parameters
    ----------
    model : ModelSpec
    tp : int or ParallelConfig
        Tensor-parallel degree, or the full parallel layout (shapes are per GPU; see
        :mod:`predictor.op_blocks` for how pipeline, expert and attention-data parallelism enter).
    precision : Precision
    batch : BatchShape
        ``n`` iterations of the whole model instance (one pipeline micro-batch when ``pp`` > 1).
    attention : {"flash", "naive"}
        Flash-style attention (no N² score traffic, default) or naive (materialised scores).
    only : set of str, optional
        Build only these ops (by name); the others are skipped (lookup tables need a few at a time).

    Returns
    -------
    DataFrame
        One row per (iteration, op) with ``iteration``, ``op``, ``op_kind``, ``count``, ``compute_dtype``
        and the shape/precision columns of :data:`predictor.opcost.SHAPE_DEFAULTS`.
    """
    par = as_parallel(tp)
    model.check_parallel(par)
    rows = _Rows(len(batch), frozenset(only) if only is not None else None)
    local = batch.divided(par.dp_attention)  # one attention-DP replica's share
    ctx = blocks.OpContext(model=model, par=par, precision=precision, batch=batch, local=local, rows=rows,
                           naive=1.0 if attention == "naive" else 0.0, half=_half_dtype(precision))
    T, S = local.tokens, local.sample_tokens
    L, H = model.num_layers, model.hidden_size
    has_tokens = T > 0
    stage_layers = ctx.per_stage(L)

    rows.add("embedding", oc.EMBEDDING, 1, has_tokens, ctx.half, m=T, n=H, **ctx.half_bits)
    ctx.allreduce("embedding_allreduce", 1, T, par.tp)
    ctx.elementwise("input_norm", oc.NORM, L, T, H)
    counts = model.attention_layer_counts()
    gqa = {k: n for k, n in counts.items() if k in ("full", "sliding", "chunked", "sparse")}
    if gqa:
        blocks.gqa_attention(ctx, gqa)
    if counts.get("mla"):
        blocks.mla_attention(ctx, counts["mla"])
    if counts.get("linear"):
        blocks.linear_attention(ctx, counts["linear"])
    v4 = {k: n for k, n in counts.items() if k in ("window", "csa", "hca")}
    if v4:
        blocks.compressed_attention(ctx, v4)
    ctx.allreduce("attn_allreduce", stage_layers, T, par.tp)
    if not model.parallel_attn_mlp:
        ctx.elementwise("attn_residual_add", oc.ADD, L, T, H)
    M = model.mlp_layer_count  # L but for hybrids whose blocks hold a mixer or an MLP (Nemotron-H)
    if not model.parallel_attn_mlp or model.norms_per_layer == 2:
        ctx.elementwise("post_attn_norm", oc.NORM, M, T, H)  # parallel two-norm models: the MLP's own norm
    if model.moe_layer_count:
        blocks.moe_mlp(ctx, model.moe_layer_count)
    if model.dense_layer_count:
        blocks.dense_mlp(ctx, model.dense_layer_count, model.intermediate_size)
    blocks.mlp_allreduces(ctx)
    ctx.elementwise("mlp_residual_add", oc.ADD, M, T, H)
    if par.pp > 1:
        rows.add("pp_send", oc.P2P, 1, has_tokens, ctx.half, msg_bytes=T * H * 2.0, world_size=2.0, **ctx.half_bits)
    rows.add("final_norm", oc.NORM, 1, has_tokens, ctx.half, m=T, n=H, **ctx.half_bits)
    samples = S > 0
    rows.add("lm_head", oc.GEMM, 1, samples, ctx.half, m=S, n=int(np.ceil(model.vocab_size / par.tp)), k=H,
             **ctx.half_bits)
    if par.tp > 1:
        rows.add("logits_gather", oc.ALLGATHER, 1, samples, ctx.half, msg_bytes=S * model.vocab_size * 2.0,
                 world_size=float(par.tp), **ctx.half_bits)
    rows.add("sampling", oc.SAMPLING, 1, samples, ctx.half, m=S, n=model.vocab_size, **ctx.half_bits)
    return rows.frame()


def decode_launches(model: ModelSpec, tp: int | ParallelConfig, precision: Precision, context_len: int) -> float:
    """Kernel launches on one GPU for one decode step of one sequence with ``context_len`` cached tokens: the
    sum of :func:`build_ops`' ``count`` (× the pipeline's stage-times when ``pp`` > 1, as the predictor's
    breakdown counts them). A physical measure of how much of a small decode step is per-kernel cost (launch,
    tail, synchronisation) rather than work, which CUDA-graph replay and fused kernels change."""
    par = as_parallel(tp)
    count = float(build_ops(model, par, precision, decode_batch(1, int(context_len)))["count"].sum())
    return count * par.pipeline_factor
