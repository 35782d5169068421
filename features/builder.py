"""Feature builder: canonical op rows → feature matrix (the same code for training and prediction).

Input is any table of canonical op rows — published profiles, synthetic rows, or the ops that
:func:`predictor.ops.build_ops` lists for an iteration. Every feature is physical, never an identity
that cannot generalise (no GPU or model names):

* roofline terms from :mod:`predictor.roofline`: log ideal / compute / memory / network time,
  log FLOPs, bytes and link bytes, log arithmetic intensity and its ratio to the GPU's ridge point,
  the compute share of the roofline;
* log shapes: m, n, k, batch, query tokens, KV length, attention pairs, heads, KV heads, head dim,
  GQA group size, message bytes, world size, local experts, top-k, gated;
* today's kernels: log value-head width (MLA 512/128, gated delta-net), ``latent_kv`` (MLA's shared
  compressed K/V), log sliding window, ``routing_skew`` (MoE power-law exponent, 0 balanced) and the
  expected experts touched per local expert under uniform routing (how much of the weights a call reads);
* GPU spec numbers: peak TFLOP/s for the row's dtype, HBM GB/s, SMs, L2 MB, link GB/s and latency,
  memory GiB;
* precision bits (weights, activations, KV) and the TP shard divisor;
* op kind as an integer category (:data:`predictor.opcost.OP_KINDS` order);
* tiling and wave quantisation: 128×128 output tiles (GEMM), attention work blocks, MoE tiles or
  elementwise blocks per SM, linear-attention (sequence, value head) state blocks, waves = tiles / SMs, wave efficiency = waves / ceil(waves), and the
  working set relative to L2.

:data:`ROOFLINE_FEATURES` lists the columns an "ML-only" baseline must drop.

:data:`MODEL_FEATURES` is what the hybrid residual model uses: every feature except the raw
spec-sheet numbers of compute and memory (peak, bandwidth, SMs, L2, memory size). With a handful of
GPUs in the published data (five when it was measured, nine NVIDIA ones now) those numbers act as GPU
identities that trees split on and cannot extrapolate from
(``benchmarks/experiments/gpu_generalisation.py`` measures it: leave-one-GPU-out MdAPE 23% with them, 20%
without, no change leaving models out); the GPU still enters through normalised terms —
compute and memory time, intensity over the ridge point, waves per SM, working set over L2 — and the
link bandwidth and latency, which collectives need.
"""

from __future__ import annotations

import numpy as np

from predictor import opcost as oc
from predictor.gpus import GPUSpec, get_gpu
from predictor.lazy import pandas as pd
from predictor.roofline import hardware_arrays, roofline_arrays

GEMM_TILE = 128.0
ATTN_TILE = 128.0
ELEMENTWISE_BLOCK = 2048.0  # elements one SM handles per wave in a memory-bound elementwise kernel

ROOFLINE_FEATURES = (
    "log_ideal_ms", "log_compute_ms", "log_memory_ms", "log_network_ms", "log_flops", "log_bytes",
    "log_link_bytes", "log_intensity", "log_intensity_over_ridge", "compute_share",
)
SHAPE_FEATURES = (
    "log_m", "log_n", "log_k", "log_batch", "log_q_tokens", "log_kv_len", "log_attn_pairs", "log_heads",
    "log_kv_heads", "log_head_dim", "log_gqa_group", "log_msg_bytes", "log_world_size", "log_experts_local",
    "log_topk", "gated", "log_v_head_dim", "latent_kv", "log_window", "routing_skew", "experts_touched_share",
)
HARDWARE_FEATURES = (
    "peak_tflops", "hbm_gbps", "sm_count", "l2_mb", "link_gbps", "link_latency_us", "memory_gib",
)
PRECISION_FEATURES = ("weight_bits", "act_bits", "kv_bits", "tp", "op_kind_code")
TILING_FEATURES = ("log_tiles", "waves", "wave_efficiency", "log_working_set_over_l2")
FEATURE_NAMES = (*ROOFLINE_FEATURES, *SHAPE_FEATURES, *HARDWARE_FEATURES, *PRECISION_FEATURES, *TILING_FEATURES)
CATEGORICAL_FEATURES = ("op_kind_code",)
MODEL_FEATURES = tuple(f for f in FEATURE_NAMES
                       if f not in HARDWARE_FEATURES or f in ("link_gbps", "link_latency_us"))
OP_KIND_CODES = {kind: i for i, kind in enumerate(oc.OP_KINDS)}


def _log(x) -> np.ndarray:
    return np.log10(np.maximum(np.asarray(x, dtype=float), 0.0) + 1e-12)


def _log1p2(x) -> np.ndarray:
    return np.log2(1.0 + np.maximum(np.asarray(x, dtype=float), 0.0))


def tiling_terms(df: pd.DataFrame, kind: np.ndarray, sm_count: np.ndarray) -> dict[str, np.ndarray]:
    """Work tiles per kernel, waves over the SMs, wave efficiency, and log2 working set / L2 placeholder.

    GEMM: ceil(m/128)·ceil(n/128) output tiles. Prefill attention: batch·heads·ceil(q/128) query
    blocks; decode: batch·kv_heads (one block per sequence and KV head). MoE: ceil(assignments/128)
    ·ceil(n/128) with assignments = m·topk·local/experts. Elementwise and embedding: blocks of 2048
    elements. Collectives: 0 tiles (wave terms 0).
    """
    m, n = df["m"].to_numpy(float), df["n"].to_numpy(float)
    batch, q = df["batch"].to_numpy(float), df["q_tokens"].to_numpy(float)
    heads, kv_heads = df["heads"].to_numpy(float), df["kv_heads"].to_numpy(float)
    experts = np.maximum(df["experts"].to_numpy(float), 1.0)
    assign = m * df["topk"].to_numpy(float) * df["experts_local"].to_numpy(float) / experts
    elementwise = np.isin(kind, (*oc.ELEMENTWISE_KINDS, oc.EMBEDDING))
    tiles = np.select(
        [kind == oc.GEMM, kind == oc.ATTN_PREFILL, kind == oc.ATTN_DECODE, kind == oc.MOE, elementwise,
         kind == oc.LINEAR_ATTN],
        [np.ceil(m / GEMM_TILE) * np.ceil(n / GEMM_TILE), batch * heads * np.ceil(q / ATTN_TILE),
         batch * kv_heads, np.ceil(assign / GEMM_TILE) * np.ceil(n / GEMM_TILE), np.ceil(m * n / ELEMENTWISE_BLOCK),
         batch * heads],
        0.0,
    )
    waves = tiles / sm_count
    wave_eff = np.where(tiles > 0, waves / np.maximum(np.ceil(waves), 1.0), 0.0)
    return {"log_tiles": _log1p2(tiles), "waves": waves, "wave_efficiency": wave_eff}


def today_terms(df: pd.DataFrame, kind: np.ndarray) -> dict[str, np.ndarray]:
    """Shape terms of today's kernels (0 where a term does not apply).

    ``log_v_head_dim``: log2(1 + value head width), 0 when it equals ``head_dim`` (column 0).
    ``latent_kv``: 1 for MLA's absorbed decode. ``log_window``: log2(1 + window tokens), 0 = full attention.
    ``routing_skew``: MoE power-law exponent (0 balanced). ``experts_touched_share``: expected distinct
    experts hit under uniform routing over ``experts`` (:func:`predictor.opcost.expected_experts_touched`),
    a share in [0, 1]; it tells a decode-sized MoE call (few experts' weights read) from a prefill one.
    """
    experts = df["experts"].to_numpy(float)
    touched = oc.expected_experts_touched(df["m"].to_numpy(float), experts, df["topk"].to_numpy(float))
    share = np.where((kind == oc.MOE) & (experts > 0), touched / np.maximum(experts, 1.0), 0.0)
    return {"log_v_head_dim": _log1p2(df["v_head_dim"]), "latent_kv": df["latent_kv"].to_numpy(float),
            "log_window": _log1p2(df["window"]), "routing_skew": df["routing_skew"].to_numpy(float),
            "experts_touched_share": share}


def build_features(df: pd.DataFrame, gpu: GPUSpec | str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature matrix and roofline time for canonical op rows.

    Parameters
    ----------
    df : DataFrame
        Canonical op rows: ``op_kind``, ``compute_dtype``, shape and precision columns (absent ones take
        their defaults), ``tp`` (default 1) and ``gpu`` unless ``gpu`` is given.
    gpu : GPUSpec or str, optional
        The GPU of every row (prediction time); otherwise each row's ``gpu`` column.

    Returns
    -------
    (DataFrame, ndarray)
        ``X`` with columns :data:`FEATURE_NAMES` (float32) and the roofline ideal time per row (ms).
    """
    rows = oc.fill_shape_defaults(df)
    n_rows = len(rows)
    names = None if gpu is not None else rows["gpu"].to_numpy(dtype=object)
    hw = hardware_arrays(get_gpu(gpu) if gpu is not None else names, rows["compute_dtype"].to_numpy())
    kind = oc.kind_array(rows)
    r = roofline_arrays(rows, gpu, hw=hw)
    ideal = r["ideal_ms"]
    compute_ms, memory_ms = r["compute_ms"], r["memory_ms"]
    flops, nbytes = r["flops"], r["bytes"]
    intensity = r["intensity"]
    peak = hw["peak_flops"]
    ridge = peak / hw["hbm_bytes_per_s"]
    heads, kv_heads = rows["heads"].to_numpy(float), rows["kv_heads"].to_numpy(float)
    weight_bytes = np.where(kind == oc.GEMM, rows["k"].to_numpy(float) * rows["n"].to_numpy(float)
                            * rows["weight_bits"].to_numpy(float) / 8, nbytes)
    tp = rows["tp"].to_numpy(float) if "tp" in rows.columns else np.ones(n_rows)
    codes = pd.Categorical(kind, categories=oc.OP_KINDS).codes.astype(float)
    feats = {
        "log_ideal_ms": _log(ideal),
        "log_compute_ms": _log(compute_ms),
        "log_memory_ms": _log(memory_ms),
        "log_network_ms": _log(r["network_ms"]),
        "log_flops": _log(flops),
        "log_bytes": _log(nbytes),
        "log_link_bytes": _log(r["link_bytes"]),
        "log_intensity": _log(intensity),
        "log_intensity_over_ridge": _log(intensity) - _log(ridge),
        "compute_share": compute_ms / np.maximum(compute_ms + memory_ms, 1e-12),
        "log_m": _log1p2(rows["m"]), "log_n": _log1p2(rows["n"]), "log_k": _log1p2(rows["k"]),
        "log_batch": _log1p2(rows["batch"]), "log_q_tokens": _log1p2(rows["q_tokens"]),
        "log_kv_len": _log1p2(rows["kv_len"]),
        "log_attn_pairs": _log1p2(np.where(np.isin(kind, oc.ATTENTION_KINDS), oc.attention_pairs(rows, kind), 0.0)),
        "log_heads": _log1p2(heads), "log_kv_heads": _log1p2(kv_heads), "log_head_dim": _log1p2(rows["head_dim"]),
        "log_gqa_group": _log1p2(np.where(kv_heads > 0, heads / np.maximum(kv_heads, 1e-9), 0.0)),
        "log_msg_bytes": _log1p2(rows["msg_bytes"]), "log_world_size": _log1p2(rows["world_size"]),
        "log_experts_local": _log1p2(rows["experts_local"]), "log_topk": _log1p2(rows["topk"]),
        "gated": rows["gated"].to_numpy(float),
        **today_terms(rows, kind),
        "peak_tflops": peak / 1e12,
        "hbm_gbps": hw["hbm_bandwidth_gbps"],
        "sm_count": hw["sm_count"],
        "l2_mb": hw["l2_mb"],
        "link_gbps": hw["link_bandwidth_gbps"],
        "link_latency_us": hw["link_latency_us"],
        "memory_gib": hw["memory_gib"],
        "weight_bits": rows["weight_bits"].to_numpy(float),
        "act_bits": rows["act_bits"].to_numpy(float),
        "kv_bits": rows["kv_bits"].to_numpy(float),
        "tp": tp,
        "op_kind_code": codes,
        **tiling_terms(rows, kind, hw["sm_count"]),
        "log_working_set_over_l2": _log1p2(weight_bytes) - _log1p2(hw["l2_mb"] * 1e6),
    }
    X = pd.DataFrame({name: np.asarray(feats[name], dtype=np.float32) for name in FEATURE_NAMES}, index=df.index)
    return X, ideal
