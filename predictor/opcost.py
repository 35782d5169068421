"""FLOPs and bytes of one kernel call, per op kind, from its shape (pure, vectorised).

Every op — whether produced by :mod:`predictor.ops` for a model's iteration or read from a
published kernel profile — is a row of *shape columns* (the canonical schema). This module turns
shape columns into work: ``flops``, ``bytes`` (device-memory traffic) and ``link_bytes``
(bytes each GPU sends over the interconnect, collectives only). One small function per op kind,
each documented with its formula; :func:`op_costs` dispatches a whole DataFrame by ``op_kind``.

Conventions: a multiply-add is 2 FLOPs; ``*_bits`` columns give element widths; attention heads,
GEMM ``n``/``k`` and MoE widths are the per-GPU (tensor-parallel shard) sizes.
"""

from __future__ import annotations

import numpy as np

from predictor.lazy import pandas as pd

GEMM = "gemm"
ATTN_PREFILL = "attn_prefill"
ATTN_DECODE = "attn_decode"
ALLREDUCE = "allreduce"
ALLGATHER = "allgather"
EMBEDDING = "embedding"
MOE = "moe"
NORM = "norm"
ACT = "act"
ADD = "add"
ROPE = "rope"
SAMPLING = "sampling"
ALLTOALL = "alltoall"
P2P = "p2p"
LINEAR_ATTN = "linear_attn"

ELEMENTWISE_KINDS = (NORM, ACT, ADD, ROPE, SAMPLING)
COLLECTIVE_KINDS = (ALLREDUCE, ALLGATHER, ALLTOALL, P2P)
ATTENTION_KINDS = (ATTN_PREFILL, ATTN_DECODE)
# Kinds added after the first shipped model are appended, so the integer codes of the older kinds
# (the residual model's ``op_kind_code`` categories) never change.
LEGACY_OP_KINDS = (GEMM, ATTN_PREFILL, ATTN_DECODE, MOE, EMBEDDING, *ELEMENTWISE_KINDS, ALLREDUCE, ALLGATHER)
OP_KINDS = (*LEGACY_OP_KINDS, ALLTOALL, P2P, LINEAR_ATTN)

# Shape and precision columns of the canonical op schema, with the value used when absent.
SHAPE_DEFAULTS: dict[str, float] = {
    "m": 0.0, "n": 0.0, "k": 0.0,
    "batch": 0.0, "q_tokens": 0.0, "kv_len": 0.0, "attn_pairs": np.nan, "score_elements": np.nan,
    "heads": 0.0, "kv_heads": 0.0, "head_dim": 0.0,
    "msg_bytes": 0.0, "world_size": 1.0,
    "experts": 0.0, "experts_local": 0.0, "topk": 0.0,
    "gated": 1.0, "naive_attention": 0.0,
    "weight_bits": 16.0, "act_bits": 16.0, "kv_bits": 16.0,
    # Added with MLA, sliding windows, linear attention and skewed MoE routing (0 = the classic case):
    "v_head_dim": 0.0,      # value / output head width when it differs from head_dim (MLA: 128 vs 192)
    "latent_kv": 0.0,       # 1: K and V share one cached latent of head_dim per token (MLA's compressed KV)
    "window": 0.0,          # sliding-window length in tokens (0: full attention)
    "routing_skew": 0.0,    # MoE routing imbalance: 0 balanced, else the power-law exponent of expert load
}

# Elementwise kernels: (elements read, elements written, FLOPs) per output element.
# norm: read x, write y (the per-channel weight is negligible); ~4 FLOPs (square, sum, scale, mul).
# act (gated, e.g. SiLU(gate)·up): read 2, write 1, ~5 FLOPs; ungated (GELU): read 1, write 1, ~8 FLOPs.
# add (residual): read 2, write 1. rope: read 1 (q or k), write 1, ~4 FLOPs (2 mul + add per pair + table).
# sampling: read the fp32 logits twice (softmax/top-p pass, sampling pass), write once; ~5 FLOPs.
_ELEMENTWISE = {
    NORM: (1.0, 1.0, 4.0),
    ADD: (2.0, 1.0, 1.0),
    ROPE: (1.0, 1.0, 4.0),
    SAMPLING: (2.0, 1.0, 5.0),
}
SAMPLING_BYTES_PER_ELEMENT = 4.0  # logits are fp32


def gemm_cost(m, n, k, weight_bits, act_bits):
    """GEMM ``[m×k] · [k×n]`` (activations × weights).

    FLOPs = 2·m·n·k. Bytes = weights k·n·wb + input m·k·ab + output m·n·ab (each read or written once,
    the ideal of a perfectly tiled kernel).
    """
    wb, ab = np.asarray(weight_bits) / 8, np.asarray(act_bits) / 8
    flops = 2.0 * m * n * k
    nbytes = k * n * wb + m * k * ab + m * n * ab
    return flops, nbytes


def attention_cost(q_total, kv_total, pairs, heads, kv_heads, head_dim, act_bits, kv_bits,
                   score_elements=0.0, naive=0.0, v_head_dim=0.0, latent_kv=0.0):
    """Attention over a batch: ``q_total`` query tokens, ``kv_total`` key tokens read, ``pairs`` query-key pairs.

    With d_qk = ``head_dim`` and d_v = ``v_head_dim`` (= d_qk when 0):
    FLOPs = 2·heads·pairs·(d_qk + d_v) (QKᵀ and P·V, 2 FLOPs per multiply-add each; 4·heads·d·pairs
    when the widths agree).
    Flash-style bytes: read Q and write O (q_total·heads·(d_qk + d_v), activation width), read the cached
    keys and values of ``kv_total`` tokens for ``kv_heads`` heads, and write the new tokens' entries into
    the cache, both at KV width. A token's cache entry is kv_heads·(d_qk + d_v) elements, or
    kv_heads·d_qk when ``latent_kv`` (MLA's absorbed decode: one compressed latent of
    kv_lora_rank + rope dims serves as both key and value). GQA reads ``kv_heads``, not ``heads``.
    Naive (``naive`` = 1) adds the score traffic: write S, read S, write P, read P —
    4·heads·score_elements elements of activation width.
    """
    ab, kvb = np.asarray(act_bits) / 8, np.asarray(kv_bits) / 8
    d_qk = np.asarray(head_dim, dtype=float)
    d_v = np.where(np.asarray(v_head_dim, dtype=float) > 0, v_head_dim, d_qk)
    entry = np.where(np.asarray(latent_kv, dtype=float) > 0, d_qk, d_qk + d_v) * kv_heads
    flops = 2.0 * heads * (d_qk + d_v) * pairs
    q_o = q_total * heads * (d_qk + d_v) * ab
    kv_read = kv_total * entry * kvb
    kv_write = q_total * entry * kvb
    scores = np.where(np.asarray(naive) > 0, 4.0 * heads * np.nan_to_num(score_elements) * ab, 0.0)
    return flops, q_o + kv_read + kv_write + scores


def windowed_prefill_pairs(q, context, window):
    """Causal query-key pairs of one prefill chunk of ``q`` new tokens after ``context`` cached ones when
    each query sees at most ``window`` keys (itself included; 0 = unbounded).

    Query i (1..q) sees min(context + i, window) keys. The first n₁ = clip(window − context, 0, q) queries
    are under the window: n₁·(context + n₁/2) pairs (the continuous form, as for full attention); the
    other q − n₁ see ``window`` each. Without a window this is q·(context + q/2).
    """
    q, c, w = (np.asarray(x, dtype=float) for x in (q, context, window))
    full = q * (c + q / 2.0)
    n1 = np.clip(w - c, 0.0, q)
    return np.where(w > 0, n1 * (c + n1 / 2.0) + (q - n1) * w, full)


def linear_attention_cost(seqs, tokens, heads, key_dim, value_dim, act_bits, chunk=64.0):
    """Gated delta-rule linear attention (Qwen3.5/Qwen3-Next GDN layers) over ``tokens`` new tokens of
    ``seqs`` sequences, ``heads`` value heads of key width ``key_dim`` and value width ``value_dim``.

    Each sequence carries a recurrent state of heads·key_dim·value_dim fp32 numbers, read once and
    written once per call whatever its context (linear attention's point: no KV cache grows).
    FLOPs per token and head: the state update and read-out, ~6·dk·dv, plus the chunked (WY) form's
    intra-chunk terms, ~4·chunk·(dk + dv) with chunks of ``chunk`` tokens (prefill); a decode token
    (one per sequence) pays only the recurrent 6·dk·dv.
    Bytes: q, k (dk each), v, output, gate (dv each) per token and head at activation width, plus the
    fp32 state read and written.
    """
    ab = np.asarray(act_bits, dtype=float) / 8
    seqs, tokens = np.asarray(seqs, dtype=float), np.asarray(tokens, dtype=float)
    per_seq = np.where(seqs > 0, tokens / np.maximum(seqs, 1.0), 0.0)
    intra = np.where(per_seq > 1.0, 4.0 * np.minimum(per_seq, chunk) * (key_dim + value_dim), 0.0)
    flops = tokens * heads * (6.0 * key_dim * value_dim + intra)
    state = seqs * heads * key_dim * value_dim * 4.0 * 2.0
    acts = tokens * heads * (2.0 * key_dim + 3.0 * value_dim) * ab
    return flops, acts + state


def elementwise_cost(kind, m, n, act_bits, gated=1.0):
    """Elementwise kernel over an ``m × n`` output (reads, writes and FLOPs per element: table above).

    The act kind reads two inputs when ``gated`` (SiLU(gate)·up, ~5 FLOPs) and one otherwise (GELU,
    ~8 FLOPs). Sampling moves fp32 logits; the rest move activations of ``act_bits``.
    """
    kind = np.asarray(kind, dtype=object)
    gated = np.asarray(gated, dtype=float) > 0
    conds = [kind == name for name in _ELEMENTWISE] + [kind == ACT]
    reads = np.select(conds, [r for r, _, _ in _ELEMENTWISE.values()] + [np.where(gated, 2.0, 1.0)], 1.0)
    writes = np.select(conds, [w for _, w, _ in _ELEMENTWISE.values()] + [1.0], 1.0)
    flops_per = np.select(conds, [f for _, _, f in _ELEMENTWISE.values()] + [np.where(gated, 5.0, 8.0)], 0.0)
    elem_bytes = np.where(kind == SAMPLING, SAMPLING_BYTES_PER_ELEMENT, np.asarray(act_bits, dtype=float) / 8)
    elements = np.asarray(m, dtype=float) * np.asarray(n, dtype=float)
    return elements * flops_per, elements * (reads + writes) * elem_bytes


def embedding_cost(m, n, act_bits):
    """Embedding lookup of ``m`` tokens of width ``n``: read m rows of the 16-bit table, write m×n activations."""
    ab = np.asarray(act_bits) / 8
    return np.zeros(np.shape(m)), m * n * (2.0 + ab)


def expected_experts_touched(tokens, experts, topk):
    """Expected distinct experts hit when ``tokens`` each pick ``topk`` of ``experts`` uniformly:
    E·(1 − (1 − k/E)^T)."""
    experts = np.asarray(experts, dtype=float)
    safe = np.where(experts > 0, experts, 1.0)
    frac = np.clip(np.asarray(topk, dtype=float) / safe, 0.0, 1.0)
    return np.where(experts > 0, experts * (1.0 - (1.0 - frac) ** np.asarray(tokens, dtype=float)), 0.0)


def moe_cost(m, k, n, experts, experts_local, topk, weight_bits, act_bits, gated=1.0):
    """Fused MoE expert FFN on one GPU.

    ``m`` tokens of width ``k`` (hidden) route to ``topk`` of ``experts``; this GPU holds
    ``experts_local`` experts of intermediate width ``n`` (tensor-parallel shard). Assignments on this
    GPU A = m·topk·experts_local/experts. FLOPs = 2·A·(n_in+1)·k·n with n_in = 2 for gated MLPs.
    Weight bytes = expected local experts touched × (n_in+1)·k·n·wb. Activation bytes follow the
    fused kernel's passes: gather inputs A·k, gate/up output written and read back 2·A·n_in·n,
    activation output written and read 2·A·n, down output written and read for the combine 3·A·k
    (gather included above) plus the combined m·k write.
    """
    wb, ab = np.asarray(weight_bits) / 8, np.asarray(act_bits) / 8
    n_in = np.where(np.asarray(gated, dtype=float) > 0, 2.0, 1.0)
    experts = np.asarray(experts, dtype=float)
    safe = np.where(experts > 0, experts, 1.0)
    assign = m * topk * np.asarray(experts_local, dtype=float) / safe
    touched = expected_experts_touched(m, experts, topk) * np.asarray(experts_local, dtype=float) / safe
    flops = 2.0 * assign * (n_in + 1.0) * k * n
    weights = touched * (n_in + 1.0) * k * n * wb
    acts = ab * (3.0 * assign * k + 2.0 * assign * n * (n_in + 1.0) + m * k)
    return flops, weights + acts


def allreduce_link_bytes(msg_bytes, world_size):
    """Ring all-reduce: each GPU sends 2·(w−1)/w · message bytes over its link."""
    w = np.asarray(world_size, dtype=float)
    return np.where(w > 1, 2.0 * (w - 1.0) / np.maximum(w, 1.0) * msg_bytes, 0.0)


def allgather_link_bytes(msg_bytes, world_size):
    """Ring all-gather of a ``msg_bytes`` result: each GPU sends (w−1)/w · message bytes."""
    w = np.asarray(world_size, dtype=float)
    return np.where(w > 1, (w - 1.0) / np.maximum(w, 1.0) * msg_bytes, 0.0)


def alltoall_link_bytes(msg_bytes, world_size):
    """All-to-all of a ``msg_bytes`` send buffer per GPU (MoE dispatch or combine): each GPU sends the
    (w−1)/w of it addressed to the other ranks."""
    return allgather_link_bytes(msg_bytes, world_size)


def p2p_link_bytes(msg_bytes, world_size):
    """Point-to-point send of ``msg_bytes`` to the next pipeline stage (``world_size`` ≥ 2 marks a real send)."""
    return np.where(np.asarray(world_size, dtype=float) > 1, np.asarray(msg_bytes, dtype=float), 0.0)


def fill_shape_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with every shape/precision column present and NaNs replaced by the defaults.

    ``attn_pairs`` and ``score_elements`` stay NaN where absent: NaN there means "derive from shape".
    """
    fills = {c: v for c, v in SHAPE_DEFAULTS.items() if not np.isnan(v)}
    missing = {c: v for c, v in SHAPE_DEFAULTS.items() if c not in df.columns}
    if missing:
        df = df.assign(**missing)
    present = [c for c in fills if c not in missing]
    if present and df[present].isna().to_numpy().any():
        df = df.fillna({c: fills[c] for c in present})
    return df


def attention_pairs(df: pd.DataFrame, kind: np.ndarray | None = None) -> np.ndarray:
    """Query-key pairs of attention rows: ``attn_pairs`` when given, else from (batch, q_tokens, kv_len).

    Prefill (causal): batch·q·(kv_len − q/2). Decode: batch·kv_len (one query sees every cached key).
    A ``window`` > 0 caps the keys each query sees (:func:`windowed_prefill_pairs`; decode: min(kv_len, window)).
    """
    q = df["q_tokens"].to_numpy(float)
    kv = df["kv_len"].to_numpy(float)
    b = df["batch"].to_numpy(float)
    w = df["window"].to_numpy(float) if "window" in df.columns else np.zeros(len(df))
    kind = kind_array(df) if kind is None else kind
    decode_keys = np.where(w > 0, np.minimum(kv, np.where(w > 0, w, 1.0)), kv)
    derived = np.where(kind == ATTN_DECODE, b * decode_keys, b * windowed_prefill_pairs(q, kv - q, w))
    given = df["attn_pairs"].to_numpy(float)
    return np.where(np.isnan(given), derived, given)


def kind_array(df: pd.DataFrame) -> np.ndarray:
    """The ``op_kind`` column as a NumPy object array (converted once; string columns are slow to convert)."""
    return df["op_kind"].to_numpy(dtype=object)


def op_costs(df: pd.DataFrame, kind: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-row ``flops``, ``bytes`` and ``link_bytes`` for a canonical op table (vectorised by kind).

    Parameters
    ----------
    df : DataFrame
        Needs ``op_kind`` and the shape/precision columns of its kinds (missing ones default).

    kind : ndarray, optional
        ``op_kind`` as an object array when the caller already has it.

    Returns
    -------
    dict
        Arrays ``flops``, ``bytes``, ``link_bytes`` aligned with ``df``'s rows.
    """
    df = fill_shape_defaults(df)
    kind = kind_array(df) if kind is None else kind
    col = {c: df[c].to_numpy(dtype=float) for c in SHAPE_DEFAULTS}
    flops = np.zeros(len(df))
    nbytes = np.zeros(len(df))
    link = np.zeros(len(df))

    sel = kind == GEMM
    if sel.any():
        f, b = gemm_cost(col["m"][sel], col["n"][sel], col["k"][sel], col["weight_bits"][sel], col["act_bits"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = (kind == ATTN_PREFILL) | (kind == ATTN_DECODE)
    if sel.any():
        pairs = attention_pairs(df, kind)[sel]
        decode = kind[sel] == ATTN_DECODE
        q_sel = np.where(decode, 1.0, col["q_tokens"][sel])
        q_total = col["batch"][sel] * q_sel
        w = col["window"][sel]
        # keys read per sequence: a window bounds the cached ones (plus the chunk's own tokens in prefill)
        keys = np.where(w > 0, np.minimum(col["kv_len"][sel], np.where(decode, w, w + q_sel)), col["kv_len"][sel])
        kv_total = col["batch"][sel] * keys
        score = np.where(np.isnan(col["score_elements"][sel]), pairs, col["score_elements"][sel])
        f, b = attention_cost(q_total, kv_total, pairs, col["heads"][sel], col["kv_heads"][sel], col["head_dim"][sel],
                              col["act_bits"][sel], col["kv_bits"][sel], score, col["naive_attention"][sel],
                              col["v_head_dim"][sel], col["latent_kv"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = kind == LINEAR_ATTN
    if sel.any():
        tokens = col["batch"][sel] * np.maximum(col["q_tokens"][sel], 1.0)
        f, b = linear_attention_cost(col["batch"][sel], tokens, col["heads"][sel], col["head_dim"][sel],
                                     np.where(col["v_head_dim"][sel] > 0, col["v_head_dim"][sel], col["head_dim"][sel]),
                                     col["act_bits"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = np.isin(kind, ELEMENTWISE_KINDS)
    if sel.any():
        f, b = elementwise_cost(kind[sel], col["m"][sel], col["n"][sel], col["act_bits"][sel], col["gated"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = kind == EMBEDDING
    if sel.any():
        f, b = embedding_cost(col["m"][sel], col["n"][sel], col["act_bits"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = kind == MOE
    if sel.any():
        f, b = moe_cost(col["m"][sel], col["k"][sel], col["n"][sel], col["experts"][sel], col["experts_local"][sel],
                        col["topk"][sel], col["weight_bits"][sel], col["act_bits"][sel], col["gated"][sel])
        flops[sel], nbytes[sel] = f, b

    sel = kind == ALLREDUCE
    if sel.any():
        link[sel] = allreduce_link_bytes(col["msg_bytes"][sel], col["world_size"][sel])
    sel = kind == ALLGATHER
    if sel.any():
        link[sel] = allgather_link_bytes(col["msg_bytes"][sel], col["world_size"][sel])
    sel = kind == ALLTOALL
    if sel.any():
        link[sel] = alltoall_link_bytes(col["msg_bytes"][sel], col["world_size"][sel])
    sel = kind == P2P
    if sel.any():
        link[sel] = p2p_link_bytes(col["msg_bytes"][sel], col["world_size"][sel])

    unknown = ~np.isin(kind, OP_KINDS)
    if unknown.any():
        from predictor.errors import InputError

        bad = sorted({str(k) for k in kind[unknown]})
        raise InputError(f"op_kind: unknown value(s) {bad}; allowed: {', '.join(OP_KINDS)}")
    return {"flops": flops, "bytes": nbytes, "link_bytes": link}
