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

Assumptions: linear weights use the precision's weight bits; embedding, lm_head and the MoE router
stay 16-bit and run on the 16-bit tensor-core path, as does attention (an fp8 KV cache is read at
8 bits and dequantised in the kernel). The precision's activation bits apply to the inputs and
outputs of quantised GEMMs; every other kernel moves 16-bit activations. KV heads fewer than ``tp``
are replicated (each GPU holds one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor import opcost as oc
from predictor.batch import BatchShape
from predictor.models import ModelSpec
from predictor.precision import Precision

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
    tp: int,
    precision: Precision,
    batch: BatchShape,
    *,
    attention: str = "flash",
    only: set[str] | frozenset[str] | None = None,
) -> pd.DataFrame:
    """Every kernel call of each iteration in ``batch`` as canonical op rows.

    Parameters
    ----------
    model : ModelSpec
    tp : int
        Tensor-parallel degree (shapes are per GPU).
    precision : Precision
    batch : BatchShape
        ``n`` iterations.
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
    model.check_tp(tp)
    n_iter = len(batch)
    rows = _Rows(n_iter, frozenset(only) if only is not None else None)
    T = batch.tokens
    S = batch.sample_tokens
    L = model.num_layers
    H = model.hidden_size
    hd = model.head_dim
    heads_local = model.num_heads // tp
    kv_local = model.kv_heads_per_gpu(tp)
    half = _half_dtype(precision)
    shapes = linear_shapes(model, tp)
    has_tokens = T > 0
    half_bits = {"weight_bits": 16.0, "act_bits": 16.0, "kv_bits": precision.kv_bits}
    quant_bits = {"weight_bits": precision.weight_bits, "act_bits": precision.act_bits, "kv_bits": precision.kv_bits}
    naive = 1.0 if attention == "naive" else 0.0
    tp_f = float(tp)

    def linear(op: str, m):
        n, k = shapes[op]
        rows.add(op, oc.GEMM, L, has_tokens & (m > 0), precision.compute, m=m, n=n, k=k, **quant_bits)

    def allreduce(op: str, count: float):
        if tp > 1:
            rows.add(op, oc.ALLREDUCE, count, has_tokens, half, msg_bytes=T * H * 2.0, world_size=tp_f, **half_bits)

    def norm(op: str, count: float):
        rows.add(op, oc.NORM, count, has_tokens, half, m=T, n=H, **half_bits)

    rows.add("embedding", oc.EMBEDDING, 1, has_tokens, half, m=T, n=H, **half_bits)
    allreduce("embedding_allreduce", 1)
    norm("input_norm", L)
    linear("qkv_proj", T)
    if model.rotary_fraction > 0:
        rows.add("rope", oc.ROPE, L, has_tokens, half, m=T, n=rope_width(model, tp), **half_bits)

    pseqs = np.maximum(batch.prefill_seqs, 1.0)
    rows.add(
        "attn_prefill", oc.ATTN_PREFILL, L, batch.prefill_tokens > 0, half,
        batch=batch.prefill_seqs, q_tokens=batch.prefill_tokens / pseqs, kv_len=batch.prefill_kv_tokens / pseqs,
        attn_pairs=batch.prefill_attention_pairs, score_elements=batch.prefill_score_elements,
        heads=heads_local, kv_heads=kv_local, head_dim=hd, naive_attention=naive, **half_bits,
    )
    dseqs = np.maximum(batch.decode_seqs, 1.0)
    rows.add(
        "attn_decode", oc.ATTN_DECODE, L, batch.decode_seqs > 0, half,
        batch=batch.decode_seqs, q_tokens=1.0, kv_len=batch.decode_kv_tokens / dseqs,
        attn_pairs=batch.decode_kv_tokens, score_elements=batch.decode_kv_tokens,
        heads=heads_local, kv_heads=kv_local, head_dim=hd, naive_attention=naive, **half_bits,
    )
    linear("o_proj", T)
    allreduce("attn_allreduce", L)
    if not model.parallel_attn_mlp:
        rows.add("attn_residual_add", oc.ADD, L, has_tokens, half, m=T, n=H, **half_bits)
    if not model.parallel_attn_mlp or model.norms_per_layer == 2:
        norm("post_attn_norm", L)  # parallel two-norm models: the MLP's own norm of the layer input
    if model.is_moe:
        rows.add("moe_router", oc.GEMM, L, has_tokens, half, m=T, n=model.num_experts, k=H, **half_bits)
        rows.add(
            "moe_experts", oc.MOE, L, has_tokens, precision.compute,
            m=T, k=H, n=model.intermediate_size // tp, experts=model.num_experts, experts_local=model.num_experts,
            topk=model.experts_per_token, gated=float(model.gated_mlp), **quant_bits,
        )
    else:
        linear("gate_up_proj", T)
        rows.add("act", oc.ACT, L, has_tokens, half, m=T, n=model.intermediate_size // tp,
                 gated=float(model.gated_mlp), **half_bits)
        linear("down_proj", T)
    allreduce("mlp_allreduce", L)
    rows.add("mlp_residual_add", oc.ADD, L, has_tokens, half, m=T, n=H, **half_bits)
    norm("final_norm", 1)
    n_vocab, k_vocab = shapes["lm_head"]
    samples = S > 0
    rows.add("lm_head", oc.GEMM, 1, samples, half, m=S, n=n_vocab, k=k_vocab, **half_bits)
    if tp > 1:
        rows.add("logits_gather", oc.ALLGATHER, 1, samples, half, msg_bytes=S * model.vocab_size * 2.0,
                 world_size=tp_f, **half_bits)
    rows.add("sampling", oc.SAMPLING, 1, samples, half, m=S, n=model.vocab_size, **half_bits)
    return rows.frame()
