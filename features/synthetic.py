"""Synthetic kernel profiles with a known, documented ground-truth timing function.

Two uses: (1) checking that the learning pipeline recovers a function we know exactly (the function
below is built only from physical quantities a feature builder can compute — roofline times,
shapes, GPU spec numbers and wave-quantisation terms — and the noise is small and seeded), and
(2) covering catalogue GPUs that have no published kernel profiles.

Ground truth
------------
:func:`ground_truth_ms` gives the noise-free time of one kernel call, in milliseconds. With
``compute_ms``, ``memory_ms`` and ``link_bytes`` from :func:`predictor.roofline.roofline` (peak
FLOP/s of the row's compute dtype, HBM bandwidth) and the row's GPU spec:

Kernels (every op kind except the collectives)::

    tiles        = ceil(m/128) · ceil(n/128)                   gemm
                 = ceil(A/128) · ceil(n/128)                   moe, A = m·topk·experts_local/experts
                 = batch · heads · ceil(q_tokens/128)          attn_prefill
                 = batch · kv_heads                            attn_decode
                 = none (wave_eff = 1)                         embedding, norm, act, add, rope, sampling
    waves        = tiles / sm_count
    wave_eff     = waves / ceil(waves)                          (1 for a whole number of waves)
    compute_eff  = PEAK_EFF[op_kind] · wave_eff
    bw_eff       = 0.85 · bytes / (bytes + 2e6)                 bytes = device-memory bytes of the call
    time_ms      = max(compute_ms / compute_eff, memory_ms / bw_eff) + 0.004

``PEAK_EFF`` (:data:`PEAK_EFFICIENCY`): gemm 0.80, moe 0.60, attn_prefill 0.60, attn_decode 0.60,
embedding and the elementwise kinds 0.50. A term whose FLOPs (or bytes) are zero contributes 0.
The 0.004 ms is a 4 µs launch floor (:data:`LAUNCH_US`).

Collectives (allreduce, allgather)::

    latency_us   = link_latency_us · (1 + 0.5 · log2(world_size / 2))
    time_ms      = latency_us / 1000 + link_bytes / (0.8 · link_bandwidth) · 1000

Every efficiency is ≤ 1 and every latency is at least the roofline's, so the ground truth is never
below the roofline ``ideal_ms``.

Noise
-----
:func:`generate` multiplies the ground truth by ``exp(noise_sigma · z)``, ``z ~ N(0, 1)`` drawn from
a :class:`numpy.random.Generator` seeded with ``seed`` (lognormal, median 1; ``noise_sigma = 0``
gives exactly the ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.schema import TARGET, make_rows
from predictor import opcost as oc
from predictor.errors import InputError, unknown_name
from predictor.gpus import GPUSpec, get_gpu, gpu_names
from predictor.roofline import hardware_arrays, roofline

# --- ground-truth constants ------------------------------------------------------------------
TILE = 128  # rows/columns of one output tile (one thread block), elements
PEAK_EFFICIENCY: dict[str, float] = {
    oc.GEMM: 0.80,
    oc.MOE: 0.60,
    oc.ATTN_PREFILL: 0.60,
    oc.ATTN_DECODE: 0.60,
    oc.EMBEDDING: 0.50,
    **{kind: 0.50 for kind in oc.ELEMENTWISE_KINDS},
}
MAX_BW_EFFICIENCY = 0.85  # fraction of HBM bandwidth reached by very large transfers
BW_HALF_BYTES = 2e6  # bytes moved at which a kernel reaches half of MAX_BW_EFFICIENCY
LAUNCH_US = 4.0  # launch-latency floor of every kernel, microseconds
LINK_EFFICIENCY = 0.8  # fraction of the link bandwidth a collective reaches
LATENCY_PER_DOUBLING = 0.5  # extra link latencies per doubling of world size beyond 2

# --- sampling ranges -------------------------------------------------------------------------
# Per-GPU (tensor-parallel shard) GEMM widths: hidden sizes, fused QKV and MLP widths and their shards.
SHARD_WIDTHS = (512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 11008, 12288,
                13824, 14336, 16384, 18944, 22016, 28672)
MOE_HIDDEN = (2048, 4096, 5120, 7168)  # MoE k (model hidden size)
MOE_INTERMEDIATE = (512, 768, 1024, 1408, 2048, 4096, 7168, 14336)  # MoE n (expert width per GPU)
MOE_EXPERTS = (8, 64, 128)
MOE_TOPK = (1, 2, 8)
EXPERT_PARALLEL = (1, 2, 4, 8)  # experts_local = experts / this
EMBED_WIDTHS = (2048, 3072, 4096, 5120, 7168, 8192)
VOCAB_SIZES = (32000, 32768, 128256, 151936)  # sampling rows: n = vocabulary
HEADS = (8, 16, 32, 64)
GQA_GROUPS = (1, 2, 4, 8)  # kv_heads = heads / group
HEAD_DIMS = (64, 128)
WORLD_SIZES = (2, 4, 8)
MAX_M = 16384
MAX_Q = 8192
MAX_KV = 32768
MAX_PREFILL_TOKENS = 32768  # batch · q_tokens cap for prefill rows
MAX_BATCH = 256
MSG_BYTES = (4096.0, 512.0 * 2**20)  # collective message range, bytes
# (weight_bits, act_bits, compute) for weight-bearing kernels, with probabilities.
GEMM_PRECISIONS = ((16, 16, "fp16"), (16, 16, "bf16"), (8, 8, "fp8"), (4, 16, "fp16"))
GEMM_PRECISION_P = (0.35, 0.35, 0.15, 0.15)
KV8_FRACTION = 0.2  # attention rows with an 8-bit KV cache


# ============================================================================================
# Ground truth
# ============================================================================================

def kernel_tiles(df: pd.DataFrame) -> np.ndarray:
    """Output tiles (thread blocks) each row's kernel launches; 0 for kinds without a wave term.

    Parameters
    ----------
    df : DataFrame
        Canonical rows (``op_kind`` and shape columns; missing ones take their defaults).

    Returns
    -------
    ndarray of float
        Tiles per row (formulas in the module docstring).
    """
    df = oc.fill_shape_defaults(df)
    kind = df["op_kind"].to_numpy(dtype=object)
    col = {c: df[c].to_numpy(dtype=float) for c in
           ("m", "n", "batch", "q_tokens", "heads", "kv_heads", "experts", "experts_local", "topk")}
    safe_experts = np.where(col["experts"] > 0, col["experts"], 1.0)
    assignments = col["m"] * col["topk"] * col["experts_local"] / safe_experts
    n_tiles = np.ceil(col["n"] / TILE)
    return np.select(
        [kind == oc.GEMM, kind == oc.MOE, kind == oc.ATTN_PREFILL, kind == oc.ATTN_DECODE],
        [np.ceil(col["m"] / TILE) * n_tiles,
         np.ceil(assignments / TILE) * n_tiles,
         col["batch"] * col["heads"] * np.ceil(col["q_tokens"] / TILE),
         col["batch"] * col["kv_heads"]],
        0.0,
    )


def wave_efficiency(tiles: np.ndarray, sm_count: np.ndarray) -> np.ndarray:
    """Fraction of the last wave's SMs kept busy, averaged over the waves: ``waves / ceil(waves)``.

    Parameters
    ----------
    tiles : array_like
        Tiles (thread blocks) per kernel; ≤ 0 means "no wave term" and gives 1.
    sm_count : array_like
        SMs (or CUs) of each row's GPU.

    Returns
    -------
    ndarray of float
        Efficiency in (0, 1].
    """
    tiles = np.asarray(tiles, dtype=float)
    waves = tiles / np.asarray(sm_count, dtype=float)
    safe = np.where(waves > 0, waves, 1.0)
    return np.where(waves > 0, safe / np.ceil(safe), 1.0)


def bandwidth_efficiency(nbytes: np.ndarray) -> np.ndarray:
    """Fraction of HBM bandwidth a kernel moving ``nbytes`` bytes reaches: ``0.85 · b / (b + 2e6)``."""
    nbytes = np.asarray(nbytes, dtype=float)
    return MAX_BW_EFFICIENCY * nbytes / (nbytes + BW_HALF_BYTES)


def collective_latency_us(link_latency_us: np.ndarray, world_size: np.ndarray) -> np.ndarray:
    """Per-call latency of a collective, µs: ``link_latency_us · (1 + 0.5 · log2(world / 2))``."""
    world = np.maximum(np.asarray(world_size, dtype=float), 2.0)
    return np.asarray(link_latency_us, dtype=float) * (1.0 + LATENCY_PER_DOUBLING * np.log2(world / 2.0))


def _sm_counts(df: pd.DataFrame, gpu: GPUSpec | str | None) -> np.ndarray:
    if gpu is not None:
        return np.full(len(df), float(get_gpu(gpu).sm_count))
    cat = pd.Categorical(df["gpu"].to_numpy(dtype=object))
    sms = np.array([float(get_gpu(name).sm_count) for name in cat.categories])
    return sms[cat.codes] if len(sms) else np.zeros(len(df))


def ground_truth_ms(df: pd.DataFrame, gpu: GPUSpec | str | None = None) -> np.ndarray:
    """Noise-free synthetic "measured" time of each row's kernel call, milliseconds.

    The exact formula is in the module docstring: roofline compute and memory times, each divided
    by an efficiency (peak × wave quantisation; saturating bandwidth curve), combined with ``max``,
    plus a 4 µs launch floor; collectives pay a world-size-dependent latency plus link bytes at 80 %
    of the link bandwidth.

    Parameters
    ----------
    df : DataFrame
        Canonical rows: ``op_kind``, ``compute_dtype``, shape/precision columns, and ``gpu`` unless
        ``gpu`` is given.
    gpu : GPUSpec or str, optional
        The GPU for every row (overrides the ``gpu`` column).

    Returns
    -------
    ndarray of float
        Time per call in ms, aligned with ``df``'s rows.
    """
    if len(df) == 0:
        return np.zeros(0)
    roof = roofline(df, gpu)
    kind = roof["op_kind"].to_numpy(dtype=object)
    hw = hardware_arrays(gpu if gpu is not None else roof["gpu"].to_numpy(), roof["compute_dtype"].to_numpy())

    flops = roof["flops"].to_numpy(float)
    nbytes = roof["bytes"].to_numpy(float)
    peak_eff = np.select([kind == k for k in PEAK_EFFICIENCY], list(PEAK_EFFICIENCY.values()), 1.0)
    compute_eff = peak_eff * wave_efficiency(kernel_tiles(roof), _sm_counts(roof, gpu))
    bw_eff = bandwidth_efficiency(nbytes)
    with np.errstate(divide="ignore", invalid="ignore"):
        compute_term = np.where(flops > 0, roof["compute_ms"].to_numpy(float) / compute_eff, 0.0)
        memory_term = np.where(nbytes > 0, roof["memory_ms"].to_numpy(float) / bw_eff, 0.0)
    kernel_ms = np.maximum(compute_term, memory_term) + LAUNCH_US * 1e-3

    latency_ms = collective_latency_us(hw["link_latency_s"] * 1e6, roof["world_size"].to_numpy(float)) * 1e-3
    network_ms = latency_ms + roof["link_bytes"].to_numpy(float) / (LINK_EFFICIENCY * hw["link_bytes_per_s"]) * 1e3
    return np.where(np.isin(kind, oc.COLLECTIVE_KINDS), network_ms, kernel_ms)


# ============================================================================================
# Sampling
# ============================================================================================

def _log_uniform_int(rng: np.random.Generator, lo, hi, size: int) -> np.ndarray:
    """Integers in [lo, hi] with log-uniform density (``lo``/``hi`` scalars or arrays, ≥ 1)."""
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    x = np.exp(rng.uniform(np.log(lo), np.log(hi + 1.0), size))
    return np.clip(np.floor(x), lo, hi)


def _choice(rng: np.random.Generator, values: Sequence, size: int, p=None) -> np.ndarray:
    return np.asarray(values)[rng.choice(len(values), size=size, p=p)]


def _families(prefix: str, a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    """``prefix + fmt.format(a, b)`` per row, formatting each distinct pair once."""
    pairs = pd.MultiIndex.from_arrays([a.astype(np.int64), b.astype(np.int64)])
    codes, uniques = pairs.factorize()
    labels = np.array([prefix + fmt.format(x, y) for x, y in uniques], dtype=object)
    return labels[codes]


def _balanced(rng: np.random.Generator, values: Sequence, n: int) -> np.ndarray:
    """``n`` draws, each value equally often (±1), in random order: uniform, and every value present when n ≥ len."""
    idx = np.resize(np.arange(len(values)), n)
    return rng.permutation(idx)


def _sample_gemm(rng, n, fp8_ok):
    m = _log_uniform_int(rng, 1, MAX_M, n)
    nn = _choice(rng, SHARD_WIDTHS, n).astype(float)
    kk = _choice(rng, SHARD_WIDTHS, n).astype(float)
    cols = _sample_weight_precision(rng, n, fp8_ok)
    cols.update(m=m, n=nn, k=kk, shape_family=_families("synthetic-gemm-", nn, kk, "n{}k{}"))
    return cols


def _sample_weight_precision(rng, n, fp8_ok):
    """Weight/activation bits and compute dtype; fp8 (w8a8) becomes w8a16 on GPUs without fp8 cores."""
    pick = rng.choice(len(GEMM_PRECISIONS), size=n, p=GEMM_PRECISION_P)
    wb = np.array([p[0] for p in GEMM_PRECISIONS], dtype=float)[pick]
    ab = np.array([p[1] for p in GEMM_PRECISIONS], dtype=float)[pick]
    compute = np.array([p[2] for p in GEMM_PRECISIONS], dtype=object)[pick]
    no_fp8 = (compute == "fp8") & ~fp8_ok
    ab[no_fp8] = 16.0
    compute[no_fp8] = "fp16"
    return {"weight_bits": wb, "act_bits": ab, "compute_dtype": compute}


def _sample_attention(rng, n, kind):
    heads = _choice(rng, HEADS, n).astype(float)
    kv_heads = heads / _choice(rng, GQA_GROUPS, n)
    head_dim = _choice(rng, HEAD_DIMS, n).astype(float)
    if kind == oc.ATTN_PREFILL:
        q = _log_uniform_int(rng, 1, MAX_Q, n)
        batch = _log_uniform_int(rng, 1, np.clip(np.floor(MAX_PREFILL_TOKENS / q), 1, MAX_BATCH), n)
        context = np.where(rng.random(n) < 0.5, 0.0, _log_uniform_int(rng, 1, MAX_KV, n))
        kv = np.minimum(q + context, MAX_KV)
    else:
        q = np.ones(n)
        batch = _log_uniform_int(rng, 1, MAX_BATCH, n)
        kv = _log_uniform_int(rng, 16, MAX_KV, n)
    kv_bits = np.where(rng.random(n) < KV8_FRACTION, 8.0, 16.0)
    families = _families(f"synthetic-{kind}-", heads, kv_heads, "h{}kv{}")
    families = families + np.where(head_dim == 64, "d64", "d128").astype(object)
    return {"batch": batch, "q_tokens": q, "kv_len": kv, "heads": heads, "kv_heads": kv_heads,
            "head_dim": head_dim, "kv_bits": kv_bits, "compute_dtype": _choice(rng, ("fp16", "bf16"), n).astype(object),
            "shape_family": families}


def _sample_moe(rng, n, fp8_ok):
    experts = _choice(rng, MOE_EXPERTS, n).astype(float)
    nn = _choice(rng, MOE_INTERMEDIATE, n).astype(float)
    kk = _choice(rng, MOE_HIDDEN, n).astype(float)
    cols = _sample_weight_precision(rng, n, fp8_ok)
    cols.update(m=_log_uniform_int(rng, 1, MAX_M, n), n=nn, k=kk, experts=experts,
                experts_local=experts / _choice(rng, EXPERT_PARALLEL, n),
                topk=_choice(rng, MOE_TOPK, n).astype(float), gated=np.ones(n),
                shape_family=_families("synthetic-moe-", nn, kk, "n{}k{}"))
    return cols


def _sample_elementwise(rng, n, kind):
    if kind == oc.SAMPLING:
        m = _log_uniform_int(rng, 1, MAX_BATCH * 4, n)
        width = _choice(rng, VOCAB_SIZES, n).astype(float)
    elif kind == oc.EMBEDDING:
        m = _log_uniform_int(rng, 1, MAX_M, n)
        width = _choice(rng, EMBED_WIDTHS, n).astype(float)
    else:
        m = _log_uniform_int(rng, 1, MAX_M, n)
        width = _log_uniform_int(rng, 1024, 32768, n)
    gated = (rng.random(n) < 0.5).astype(float) if kind == oc.ACT else np.ones(n)
    return {"m": m, "n": width, "gated": gated, "compute_dtype": _choice(rng, ("fp16", "bf16"), n).astype(object),
            "shape_family": np.full(n, f"synthetic-{kind}", dtype=object)}


def _sample_collective(rng, n, kind):
    msg = np.round(np.exp(rng.uniform(np.log(MSG_BYTES[0]), np.log(MSG_BYTES[1]), n)))
    return {"msg_bytes": msg, "world_size": _choice(rng, WORLD_SIZES, n).astype(float),
            "compute_dtype": _choice(rng, ("fp16", "bf16"), n).astype(object),
            "shape_family": np.full(n, f"synthetic-{kind}", dtype=object)}


def generate(n_rows: int, gpus: Sequence[str] | None = None, seed: int = 0, noise_sigma: float = 0.02,
             op_kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Synthetic canonical kernel-profile rows timed by :func:`ground_truth_ms` plus lognormal noise.

    Op kinds and GPUs are each spread evenly over the rows (counts differ by at most one) in a
    random order, so every requested kind and GPU appears once ``n_rows`` is at least their number.
    Shapes are sampled over realistic per-GPU ranges (see the ``MAX_*`` and tuple constants of this
    module): GEMM ``m`` log-uniform in [1, 16384] and ``n``, ``k`` from :data:`SHARD_WIDTHS`;
    attention batch ≤ 256, prefill ``q_tokens`` ≤ 8192 (batch·q ≤ 32768), ``kv_len`` ≤ 32768;
    collectives 4 KiB–512 MiB over 2, 4 or 8 GPUs; elementwise ``m`` ≤ 16384, ``n`` in [1024, 32768]
    (sampling: ``m`` ≤ 1024 sequences, ``n`` from :data:`VOCAB_SIZES`); MoE experts 8/64/128, top-k
    1/2/8. GEMM and MoE precision: fp16 35 %, bf16 35 %, w8a8 on fp8 15 % (w8a16 on GPUs without fp8
    tensor cores), w4a16 15 %; attention uses an 8-bit KV cache in 20 % of rows.

    Parameters
    ----------
    n_rows : int
        Rows to generate (≥ 0).
    gpus : sequence of str, optional
        Catalogue GPU names or aliases; default every catalogue GPU.
    seed : int
        Seed of the :class:`numpy.random.Generator`; the same seed gives an identical frame.
    noise_sigma : float
        Standard deviation of the log of the multiplicative noise (0.02 ≈ 2 %; 0 = exact ground truth).
    op_kinds : sequence of str, optional
        Subset of :data:`predictor.opcost.OP_KINDS`; default the classic kinds (:data:`~predictor.opcost.LEGACY_OP_KINDS`).

    Returns
    -------
    DataFrame
        Canonical rows (:data:`features.schema.COLUMNS`), ``source`` = ``framework`` = "synthetic",
        ``model`` = "", ``op`` = ``op_kind``, ``measured_ms`` in milliseconds.

    Raises
    ------
    InputError
        Unknown GPU or op kind, negative ``n_rows`` or ``noise_sigma``.
    """
    if int(n_rows) < 0:
        raise InputError(f"n_rows: must be ≥ 0, got {n_rows}")
    if not (noise_sigma >= 0 and np.isfinite(noise_sigma)):
        raise InputError(f"noise_sigma: must be a finite number ≥ 0, got {noise_sigma}")
    n_rows = int(n_rows)
    kinds = list(dict.fromkeys(op_kinds)) if op_kinds is not None else list(oc.LEGACY_OP_KINDS)
    for kind in kinds:
        if kind not in oc.OP_KINDS:
            raise unknown_name("op_kinds", str(kind), oc.OP_KINDS)
    if not kinds:
        raise InputError("op_kinds: empty; allowed: " + ", ".join(oc.OP_KINDS))
    names = list(dict.fromkeys(get_gpu(g).name for g in gpus)) if gpus is not None else gpu_names()
    if not names:
        raise InputError("gpus: empty; allowed: " + ", ".join(gpu_names()))
    specs = [get_gpu(g) for g in names]

    rng = np.random.default_rng(seed)
    kind_idx = _balanced(rng, kinds, n_rows)
    gpu_idx = _balanced(rng, names, n_rows)
    fp8_ok = np.array([s.peak_tflops.fp8 is not None for s in specs])[gpu_idx]

    columns: dict[str, np.ndarray] = {
        "op_kind": np.asarray(kinds, dtype=object)[kind_idx],
        "gpu": np.asarray(names, dtype=object)[gpu_idx],
    }
    for i, kind in enumerate(kinds):
        sel = np.flatnonzero(kind_idx == i)
        if not len(sel):
            continue
        n = len(sel)
        if kind == oc.GEMM:
            cols = _sample_gemm(rng, n, fp8_ok[sel])
        elif kind == oc.MOE:
            cols = _sample_moe(rng, n, fp8_ok[sel])
        elif kind in oc.ATTENTION_KINDS:
            cols = _sample_attention(rng, n, kind)
        elif kind in oc.COLLECTIVE_KINDS:
            cols = _sample_collective(rng, n, kind)
        else:
            cols = _sample_elementwise(rng, n, kind)
        for name, values in cols.items():
            if name not in columns:
                if name in ("compute_dtype", "shape_family"):
                    columns[name] = np.full(n_rows, "", dtype=object)
                else:
                    columns[name] = np.full(n_rows, oc.SHAPE_DEFAULTS[name])
            columns[name][sel] = values

    columns.setdefault("compute_dtype", np.full(n_rows, "fp16", dtype=object))
    df = make_rows(n_rows, source="synthetic", framework="synthetic", model="", op=columns["op_kind"], **columns)
    truth = ground_truth_ms(df)
    noise = np.exp(noise_sigma * rng.standard_normal(n_rows)) if noise_sigma > 0 else 1.0
    df[TARGET] = truth * noise
    return df
