"""Op builders of one decoder block kind each: attention (GQA full / sliding / chunked, MLA, gated
delta-net linear attention) and MLP (dense, MoE with shared experts and expert parallelism).

:func:`predictor.ops.build_ops` calls them with an :class:`OpContext` (the model, its
:class:`~predictor.parallel.ParallelConfig`, the precision, the batch and the row accumulator). A new
model family is data (:mod:`predictor.model_families`) plus, at most, one more builder here.

Phase naming contract (used by :mod:`predictor.tables`): an op whose shapes depend on the prefill
chunks' context (attention, MLA's decompression of cached latents) ends in ``_prefill``; one that depends
on decode contexts or runs on decode tokens only ends in ``_decode``. Everything else depends only on
the iteration's token count (or, for sampling ops, its sampled tokens).

Per-GPU shapes: attention heads split ``tp`` ways; with attention data parallelism each replica sees
1/``dp_attention`` of the batch (:attr:`OpContext.local`), while the MoE experts see every token of the
stage (:attr:`OpContext.batch`), ``experts/ep`` experts per GPU, each expert's width split ``moe_tp`` ways.
Layer ops run ``layers/pp`` times: one pipeline stage (embedding and lm_head are counted on it too, an
upper bound for the slowest stage).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from predictor import opcost as oc
from predictor.batch import BatchShape
from predictor.model_spec import ModelSpec
from predictor.parallel import ParallelConfig
from predictor.precision import Precision


@dataclass
class OpContext:
    """Everything an op builder needs (see the module docstring)."""

    model: ModelSpec
    par: ParallelConfig
    precision: Precision
    batch: BatchShape          # the whole stage's iterations
    local: BatchShape          # one attention-DP replica's share
    rows: object               # predictor.ops._Rows
    naive: float               # 1.0 for materialised (naive) attention
    half: str                  # 16-bit compute dtype

    # Only attention reads the KV cache: every other op carries kv_bits 16, the value all its measurements were
    # taken with (a GEMM, norm or collective does not change with the cache's dtype; the residual model must not
    # read a KV dtype into them). Attention rows take the precision's kv_bits (_attention_rows).
    @property
    def half_bits(self) -> dict:
        return {"weight_bits": 16.0, "act_bits": 16.0, "kv_bits": 16.0}

    @property
    def quant_bits(self) -> dict:
        p = self.precision
        return {"weight_bits": p.weight_bits, "act_bits": p.act_bits, "kv_bits": 16.0}

    def per_stage(self, layers: int) -> float:
        """Calls per iteration of an op present in ``layers`` layers: those of one pipeline stage."""
        return layers / self.par.pp

    def gemm(self, op: str, layers: int, m, n: float, k: float, quantised: bool = True) -> None:
        bits = self.quant_bits if quantised else self.half_bits
        dtype = self.precision.compute if quantised else self.half
        m = np.asarray(m, dtype=float)
        self.rows.add(op, oc.GEMM, self.per_stage(layers), m > 0, dtype, m=m, n=n, k=k, **bits)

    def elementwise(self, op: str, kind: str, layers: int, m, n: float, **cols) -> None:
        m = np.asarray(m, dtype=float)
        self.rows.add(op, kind, self.per_stage(layers), m > 0, self.half, m=m, n=n, **cols, **self.half_bits)

    def allreduce(self, op: str, layers: float, tokens, world: int) -> None:
        if world > 1:
            tokens = np.asarray(tokens, dtype=float)
            self.rows.add(op, oc.ALLREDUCE, layers, tokens > 0, self.half,
                          msg_bytes=tokens * self.model.hidden_size * 2.0, world_size=float(world), **self.half_bits)


# --- attention --------------------------------------------------------------------------------
def _chunk_means(b: BatchShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefill chunks, mean new tokens and mean cached context per chunk."""
    seqs = b.prefill_seqs
    safe = np.maximum(seqs, 1.0)
    q = np.where(seqs > 0, b.prefill_tokens / safe, 0.0)
    ctx = np.maximum(np.where(seqs > 0, b.prefill_kv_tokens / safe - q, 0.0), 0.0)
    return seqs, q, ctx


def _attention_rows(ctx: OpContext, prefix: str, layers: int, window: float, shape: dict,
                    decode_shape: dict | None = None) -> None:
    """Prefill and decode attention rows of ``layers`` layers; ``window`` > 0 caps the keys each query sees;
    ``decode_shape`` (default ``shape``) gives the decode kernel's own head shape (MLA's absorbed form)."""
    b, rows = ctx.local, ctx.rows
    count = ctx.per_stage(layers)
    seqs, q, c = _chunk_means(b)
    if window > 0:
        pairs = seqs * oc.windowed_prefill_pairs(q, c, window)
        score = seqs * q * np.minimum(c + q, window + q)
    else:
        pairs, score = b.prefill_attention_pairs, b.prefill_score_elements
    common = {"window": window, "naive_attention": ctx.naive, **ctx.half_bits, "kv_bits": ctx.precision.kv_bits}
    rows.add(f"{prefix}_prefill", oc.ATTN_PREFILL, count, b.prefill_tokens > 0, ctx.half,
             batch=seqs, q_tokens=q, kv_len=q + c, attn_pairs=pairs, score_elements=score, **shape, **common)
    dseqs = b.decode_seqs
    kv = b.decode_kv_tokens / np.maximum(dseqs, 1.0)
    dpairs = dseqs * np.minimum(kv, window) if window > 0 else b.decode_kv_tokens
    rows.add(f"{prefix}_decode", oc.ATTN_DECODE, count, dseqs > 0, ctx.half,
             batch=dseqs, q_tokens=1.0, kv_len=kv, attn_pairs=dpairs, score_elements=dpairs,
             **(decode_shape or shape), **common)


def gqa_attention(ctx: OpContext, counts: dict[str, int]) -> None:
    """Grouped-query attention layers of kinds ``full``, ``sliding``, ``chunked`` and ``sparse`` (one shared set
    of projections; per-kind attention rows whose window bounds the keys). Block-sparse layers (MiniMax-M3)
    attend to the indexer's kept tokens after it scores every cached key (:func:`_sparse_indexer`). Full layers
    with a shape of their own (:attr:`~predictor.model_spec.ModelSpec.global_attention`, Gemma-4) get their own
    projections (``global_*``)."""
    if ctx.model.global_attention is not None and counts.get("full"):
        _gqa_group(ctx, {"full": counts["full"]}, "global_")
        counts = {kind: n for kind, n in counts.items() if kind != "full"}
    if counts:
        _gqa_group(ctx, counts, "")


def _gqa_group(ctx: OpContext, counts: dict[str, int], prefix: str) -> None:
    """Projections (op names prefixed ``prefix``) and attention rows of GQA layers that share one shape."""
    m, tp = ctx.model, ctx.par.tp
    layers = sum(counts.values())
    T = ctx.local.tokens
    kind = next(iter(counts))
    hd, vd, kv_heads, tensors = m.gqa_shape(kind)
    heads, kv = m.num_heads // tp, max(1, kv_heads // tp)
    q_width = heads * hd + (heads * vd if m.attn_output_gate else 0)
    ctx.gemm(f"{prefix}qkv_proj", layers, T, q_width + m.kv_elems_per_token(tp, kind), m.hidden_size)
    if m.qk_norm:
        ctx.elementwise(f"{prefix}qk_norm", oc.NORM, layers, T, (heads + kv) * hd)
    if m.rotary_fraction > 0:
        ctx.elementwise(f"{prefix}rope", oc.ROPE, layers, T, (heads + kv) * hd * m.rotary_fraction)
    shape = {"heads": heads, "kv_heads": kv, "head_dim": hd}
    if tensors == 1:  # the values are the keys: one cached tensor read for both (as MLA's shared latent)
        shape |= {"v_head_dim": float(hd), "latent_kv": 1.0}
    elif vd != hd:
        shape["v_head_dim"] = float(vd)
    windows = {"full": 0.0, "sliding": float(m.sliding_window), "chunked": float(m.sliding_window),
               "sparse": float(m.sparse_index.topk) if m.sparse_index is not None else 0.0}
    for kind, rows in (("full", "attn"), ("sliding", "sliding_attn"), ("chunked", "chunked_attn"),
                       ("sparse", "sparse_attn")):
        if counts.get(kind):
            if kind == "sparse":
                _sparse_indexer(ctx, "sparse_index", counts[kind], m.hidden_size, m.sparse_index)
            _attention_rows(ctx, rows, counts[kind], windows[kind], shape)
    if m.attn_output_gate:
        ctx.elementwise(f"{prefix}attn_gate", oc.ACT, layers, T, heads * vd, gated=1.0)
    ctx.gemm(f"{prefix}o_proj", layers, T, m.hidden_size, heads * vd)


def _sparse_indexer(ctx: OpContext, prefix: str, layers: int, q_input: int, sparse) -> None:
    """The sparse-attention indexer ``sparse`` (a :class:`~predictor.model_parts.SparseIndexSpec`): its query
    (from a ``q_input``-wide activation) and key projections, then scores of every cached key (an MQA over the
    indexer's one key head, one output per query and key; ``ctx.local`` gives the keys)."""
    m, T = ctx.model, ctx.local.tokens
    ctx.gemm(f"{prefix}_q_proj", layers, T, sparse.heads * sparse.head_dim, q_input)
    ctx.gemm(f"{prefix}_k_proj", layers, T, sparse.head_dim + sparse.heads, m.hidden_size)
    _attention_rows(ctx, prefix, layers, 0.0, {"heads": sparse.heads, "kv_heads": 1, "head_dim": sparse.head_dim,
                                                "v_head_dim": 1.0, "latent_kv": 1.0})


def mla_attention(ctx: OpContext, layers: int) -> None:
    """Multi-head latent attention: decompressed (MHA over qk_nope+rope / v dims) for prefill; absorbed
    for decode (queries mapped into the latent space, MQA over the cached latent, values mapped back).
    With DeepSeek sparse attention the indexer scores every cached key and attention keeps ``topk``."""
    m, tp = ctx.model, ctx.par.tp
    mla, sparse = m.mla, m.sparse_index
    T, b = ctx.local.tokens, ctx.local
    heads = m.num_heads // tp
    ctx.gemm("mla_qkv_a_proj", layers, T, mla.q_lora_rank + mla.latent_dim, m.hidden_size)
    ctx.elementwise("mla_latent_norm", oc.NORM, layers, T, mla.q_lora_rank + mla.kv_lora_rank)
    if mla.q_lora_rank:
        ctx.gemm("mla_q_b_proj", layers, T, heads * mla.qk_head_dim, mla.q_lora_rank)
    else:
        ctx.gemm("mla_q_proj", layers, T, heads * mla.qk_head_dim, m.hidden_size)
    if m.rotary_fraction > 0:  # Kimi-K3's MLA layers use no positional encoding
        ctx.elementwise("rope", oc.ROPE, layers, T, (heads + 1) * mla.qk_rope_head_dim)
    window = float(sparse.topk) if sparse is not None else 0.0
    if sparse is not None:
        _sparse_indexer(ctx, "dsa_index", layers, mla.q_lora_rank or m.hidden_size, sparse)
    # prefill: decompress every key of each chunk (cached context included) through kv_b_proj
    ctx.gemm("mla_kv_b_proj_prefill", layers, b.prefill_kv_tokens, heads * (mla.qk_nope_head_dim + mla.v_head_dim),
             mla.kv_lora_rank)
    # decode: W_UK absorbed into the query, W_UV applied to the latent output (per-head BMMs, 16-bit)
    ctx.gemm("mla_absorb_q_decode", layers, b.decode_seqs, heads * mla.kv_lora_rank, mla.qk_nope_head_dim,
             quantised=False)
    prefill_shape = {"heads": heads, "kv_heads": heads, "head_dim": mla.qk_head_dim, "v_head_dim": mla.v_head_dim}
    decode_shape = {"heads": heads, "kv_heads": 1, "head_dim": mla.latent_dim, "v_head_dim": mla.kv_lora_rank,
                    "latent_kv": 1.0}
    _attention_rows(ctx, "mla_attn", layers, window, prefill_shape, decode_shape)
    ctx.gemm("mla_absorb_v_decode", layers, b.decode_seqs, heads * mla.v_head_dim, mla.kv_lora_rank, quantised=False)
    if m.attn_output_gate:  # Kimi-K3: a sigmoid gate on each head's output
        ctx.gemm("mla_gate_proj", layers, T, heads * mla.v_head_dim, m.hidden_size)
        ctx.elementwise("attn_gate", oc.ACT, layers, T, heads * mla.v_head_dim, gated=1.0)
    ctx.gemm("o_proj", layers, T, m.hidden_size, heads * mla.v_head_dim)


def compressed_attention(ctx: OpContext, counts: dict[str, int]) -> None:
    """DeepSeek-V4 layers (kinds ``window``, ``csa``, ``hca``;
    :class:`~predictor.model_parts.CompressedAttentionSpec`): query latent and heads, the one shared key/value head
    (MQA over it, keys and values read once), every layer's window of recent tokens, and the compressed entries: a
    csa layer's indexer scores all of them and its queries keep the indexer's top ``topk``; an hca layer's queries
    attend all. Compressed attention is costed on the batch with its contexts divided by the ratio (the
    compressors' own small GEMMs are not costed). The grouped low-rank output is one GEMM of the same FLOPs and
    weights. The ``hc_mult`` residual streams add one elementwise mix of ``hc_mult`` × hidden per sublayer."""
    m, tp = ctx.model, ctx.par.tp
    ca = m.compressed_attention
    layers = sum(counts.values())
    T = ctx.local.tokens
    heads = m.num_heads // tp
    ctx.gemm("v4_q_a_proj", layers, T, ca.q_lora_rank, m.hidden_size)
    ctx.elementwise("v4_latent_norm", oc.NORM, layers, T, ca.q_lora_rank + ca.head_dim)
    ctx.gemm("v4_q_b_proj", layers, T, heads * ca.head_dim, ca.q_lora_rank)
    ctx.gemm("v4_kv_proj", layers, T, ca.head_dim, m.hidden_size)
    ctx.elementwise("rope", oc.ROPE, layers, T, (heads + 1) * ca.rope_dim)
    shape = {"heads": heads, "kv_heads": 1, "head_dim": ca.head_dim, "v_head_dim": ca.head_dim, "latent_kv": 1.0}
    _attention_rows(ctx, "v4_window_attn", layers, float(ca.window), shape)
    for kind in ("csa", "hca"):
        if not counts.get(kind):
            continue
        r = ca.ratio(kind)
        b = ctx.local
        compressed = replace(b, prefill_kv_tokens=b.prefill_kv_tokens / r,
                             prefill_attention_pairs=b.prefill_attention_pairs / r,
                             prefill_score_elements=b.prefill_score_elements / r,
                             decode_context_tokens=b.decode_context_tokens / r)
        view = replace(ctx, local=compressed)
        if kind == "csa":
            _sparse_indexer(view, "v4_index", counts[kind], ca.q_lora_rank, ca.indexer)
        _attention_rows(view, f"v4_{kind}_attn", counts[kind], float(ca.indexer.topk) if kind == "csa" else 0.0,
                        shape)
    groups = max(ca.o_groups // tp, 1)
    ctx.gemm("v4_o_a_proj", layers, T, groups * ca.o_lora_rank, heads * ca.head_dim / groups)
    ctx.gemm("v4_o_b_proj", layers, T, m.hidden_size, groups * ca.o_lora_rank)
    if ca.hc_mult > 1:
        ctx.elementwise("hc_mix", oc.ADD, 2 * layers, T, ca.hc_mult * m.hidden_size)


def linear_attention(ctx: OpContext, layers: int) -> None:
    """Gated delta-net layers (Qwen3.5 / Qwen3-Next) or Mamba-2 mixers (Nemotron-H): projections, causal
    convolution, the recurrent kernel (chunked over prefill tokens, one step per decode token) and the gated
    output norm. Mamba-2's scan is costed as the delta rule over the same state (heads × d_state × head_dim):
    the same state traffic, somewhat more FLOPs than the scan does (which only compute-bound prefill feels)."""
    m, tp = ctx.model, ctx.par.tp
    la = m.linear_attention
    T, b = ctx.local.tokens, ctx.local
    ctx.gemm(f"{la.op_prefix}_in_proj", layers, T, la.in_proj_width / tp, m.hidden_size)
    ctx.elementwise(f"{la.op_prefix}_conv", oc.NORM, layers, T, la.conv_dim / tp)
    heads = max(la.num_value_heads // tp, 1)
    shape = {"heads": heads, "head_dim": la.key_head_dim, "v_head_dim": la.value_head_dim}
    seqs, q, _ = _chunk_means(b)
    ctx.rows.add("linear_attn_prefill", oc.LINEAR_ATTN, ctx.per_stage(layers), b.prefill_tokens > 0, ctx.half,
                 batch=seqs, q_tokens=q, **shape, **ctx.half_bits)
    ctx.rows.add("linear_attn_decode", oc.LINEAR_ATTN, ctx.per_stage(layers), b.decode_seqs > 0, ctx.half,
                 batch=b.decode_seqs, q_tokens=1.0, **shape, **ctx.half_bits)
    ctx.elementwise(f"{la.op_prefix}_gated_norm", oc.ACT, layers, T, la.value_dim / tp, gated=1.0)
    ctx.gemm(f"{la.op_prefix}_out_proj", layers, T, m.hidden_size, la.value_dim / tp)


# --- MLP ----------------------------------------------------------------------------------------
def dense_mlp(ctx: OpContext, layers: int, width: int, prefix: str = "") -> None:
    """A dense (gated) MLP of ``width`` split ``tp`` ways, on the replica's tokens."""
    m, tp = ctx.model, ctx.par.tp
    T = ctx.local.tokens
    n_in = 2 if m.gated_mlp else 1
    ctx.gemm(f"{prefix}gate_up_proj", layers, T, n_in * (width // tp), m.hidden_size)
    ctx.elementwise(f"{prefix}act", oc.ACT, layers, T, width // tp, gated=float(m.gated_mlp))
    ctx.gemm(f"{prefix}down_proj", layers, T, m.hidden_size, width // tp)


def moe_mlp(ctx: OpContext, layers: int) -> None:
    """Router, shared experts, and the routed experts of ``layers`` MoE layers.

    Attention-DP stages dispatch each replica's tokens to the experts' ranks and combine the results
    with all-to-alls (``moe_dispatch`` / ``moe_combine``, send buffer = local tokens × top-k × hidden at
    16 bits); otherwise every rank holds every token after attention and the experts' partial sums are
    combined by the layer's all-reduce (:func:`mlp_allreduces`).
    """
    m, par = ctx.model, ctx.par
    T_local, T_all = ctx.local.tokens, ctx.batch.tokens
    ctx.gemm("moe_router", layers, T_local, m.num_experts, m.hidden_size, quantised=False)
    if m.shared_expert_intermediate_size:
        dense_mlp(ctx, layers, m.shared_expert_intermediate_size, prefix="shared_")
    width = m.expert_input_size
    if m.moe_latent_size:  # Nemotron-3's latent MoE: tokens go to the experts (and back) at the latent width
        ctx.gemm("moe_latent_down_proj", layers, T_local, width, m.hidden_size)
    a2a = par.dp_attention > 1 and par.stage_gpus > 1
    msg = T_local * m.experts_per_token * width * 2.0
    if a2a:
        ctx.rows.add("moe_dispatch", oc.ALLTOALL, ctx.per_stage(layers), T_local > 0, ctx.half, msg_bytes=msg,
                     world_size=float(par.stage_gpus), **ctx.half_bits)
    tokens = T_all if par.dp_attention > 1 else T_local
    ctx.rows.add(
        "moe_experts", oc.MOE, ctx.per_stage(layers), tokens > 0, ctx.precision.compute,
        m=tokens, k=width, n=m.expert_intermediate_size // par.moe_tp, experts=m.num_experts,
        experts_local=m.num_experts // par.ep, topk=m.experts_per_token, gated=float(m.gated_mlp), **ctx.quant_bits,
    )
    if a2a:
        ctx.rows.add("moe_combine", oc.ALLTOALL, ctx.per_stage(layers), T_local > 0, ctx.half, msg_bytes=msg,
                     world_size=float(par.stage_gpus), **ctx.half_bits)
    if m.moe_latent_size:
        ctx.gemm("moe_latent_up_proj", layers, T_local, m.hidden_size, width)


def mlp_allreduces(ctx: OpContext) -> None:
    """All-reduce after the MLP: dense layers over the TP group; MoE layers over the whole stage when every
    rank holds every token (no attention DP), else over the TP group for the shared experts' partial sums."""
    m, par = ctx.model, ctx.par
    T = ctx.local.tokens
    dense, moe = m.dense_layer_count, m.moe_layer_count
    if not m.is_moe or par.dp_attention == 1 and par.stage_gpus == par.tp:
        ctx.allreduce("mlp_allreduce", ctx.per_stage(m.mlp_layer_count), T, par.tp)
        return
    if dense:
        ctx.allreduce("mlp_allreduce", ctx.per_stage(dense), T, par.tp)
    world = par.stage_gpus if par.dp_attention == 1 else (par.tp if m.shared_expert_intermediate_size else 1)
    ctx.allreduce("moe_allreduce", ctx.per_stage(moe), T, world)
