"""Analyses behind two technique sections of ``docs/techniques.md``: roofline headroom and attention kernels.

* :func:`roofline_headroom` — the compute bound on throughput, ``peak FLOP/s / (2 × parameters)`` tokens per
  second per GPU (every token through the model costs two FLOPs per active parameter: a multiply and an add),
  beside the throughput the simulator reaches for the same model and GPU.
* :func:`attention_io` — the attention IO model of :func:`predictor.ops.build_ops`: prefill attention time of
  one sequence vs its length with flash-style attention (no N² score traffic) and naive attention (the score
  matrix written and read back: 4 · heads · N² elements).
* :func:`attention_efficiency` — measured / roofline of the published attention kernels (the canonical kernel
  table), median by GPU, framework version and phase.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor.batch import from_lists
from predictor.gpus import get_gpu
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.precision import parse_dtype
from predictor.roofline import roofline


def compute_bound_tokens_per_s(model, gpu, dtype: str = "fp16") -> float:
    """Compute-bound throughput of one GPU (tokens/s): peak FLOP/s of the compute dtype / (2 × active parameters).

    Independent of tensor parallelism: ``tp`` GPUs split a token's 2P FLOPs and run ``tp`` times the peak.
    Attention FLOPs (which grow with context) are left out, so this is an upper bound.
    """
    spec, gpu_spec, precision = get_model(model), get_gpu(gpu), parse_dtype(dtype)
    return gpu_spec.peak_flops(precision.compute) / (2.0 * spec.active_param_count())


def roofline_headroom(predictor, cases, workload, config=None, prefill_chunks: int = 8,
                      prefill_chunk_tokens: int = 1024) -> pd.DataFrame:
    """Theoretical (compute-bound) vs simulated throughput per GPU.

    Parameters
    ----------
    predictor : predictor.Predictor
    cases : iterable of (model, gpu, tp, dtype)
    workload : scheduler.workload.Workload
        Served by one instance of each case (offline workloads measure capacity).
    config : EngineConfig, optional

    Returns
    -------
    DataFrame
        Per case: ``bound_tokens_per_s_per_gpu`` (prefill + decode tokens), ``simulated_tokens_per_s_per_gpu``
        (prompt + output tokens of finished requests over the makespan, per GPU), ``simulated_output_tokens_per_s_per_gpu``,
        ``fraction_of_bound`` (simulated / bound) and ``gap`` (bound / simulated), the mean batch, and
        ``prefill_fraction_of_bound``: tokens/s of one prefill-only iteration of ``prefill_chunks`` prompts of
        ``prefill_chunk_tokens`` tokens, over the bound.
    """
    from scheduler.engine import EngineConfig, Simulator

    rows = []
    for model, gpu, tp, dtype in cases:
        sim = Simulator(predictor, model, gpu, tp, dtype, config or EngineConfig())
        result = sim.run(workload, record_iterations=False)
        s = result.summary()
        done = result.columns["status_code"] == 2
        tokens = float((result.columns["prompt_tokens"][done] + result.columns["output_tokens"][done]).sum())
        simulated = tokens / s["makespan_s"] / tp
        bound = compute_bound_tokens_per_s(model, gpu, dtype)
        n_pre = prefill_chunks * prefill_chunk_tokens
        prefill_ms = sim.bound.iteration_ms(prefill_chunks, n_pre, n_pre, prefill_chunks, 0, 0)
        rows.append({"model": model, "gpu": gpu, "tp": tp, "dtype": dtype,
                     "bound_tokens_per_s_per_gpu": bound, "simulated_tokens_per_s_per_gpu": simulated,
                     "simulated_output_tokens_per_s_per_gpu": s["output_tokens_per_s"] / tp,
                     "fraction_of_bound": simulated / bound, "gap": bound / simulated,
                     "batch_mean": s["batch_size"]["mean"],
                     "prefill_fraction_of_bound": n_pre / (prefill_ms / 1e3) / tp / bound})
    return pd.DataFrame(rows)


def attention_io(model, gpu, lengths, tp: int = 1, dtype: str = "fp16") -> pd.DataFrame:
    """Roofline prefill attention time (all layers, ms) of one sequence of each length, flash vs naive.

    Returns
    -------
    DataFrame
        Per length: ``flash_ms``, ``naive_ms``, their bytes (GB), the bound of each and ``naive_over_flash``.
    """
    spec, gpu_spec, precision = get_model(model), get_gpu(gpu), parse_dtype(dtype)
    rows = []
    for n in lengths:
        batch = from_lists([(int(n), 0)])
        out = {"tokens": int(n)}
        for kind in ("flash", "naive"):
            ops = build_ops(spec, tp, precision, batch, attention=kind, only={"attn_prefill"})
            r = roofline(ops, gpu_spec)
            out[f"{kind}_ms"] = float((r["count"] * r["ideal_ms"]).sum())
            out[f"{kind}_gb"] = float((r["count"] * r["bytes"]).sum() / 1e9)
            out[f"{kind}_bound"] = str(r["bound"].iloc[0])
        out["naive_over_flash"] = out["naive_ms"] / out["flash_ms"]
        rows.append(out)
    return pd.DataFrame(rows)


def attention_efficiency(kernels: pd.DataFrame | None = None, min_prefill_tokens: int = 2048) -> pd.DataFrame:
    """Measured attention kernels against their roofline, by GPU, framework version and phase.

    Parameters
    ----------
    kernels : DataFrame, optional
        Canonical kernel rows (default: the shipped tables, :func:`features.canonical.load_kernels`).
    min_prefill_tokens : int
        Prefill rows with at least this many query tokens per sequence form the "large prefill" column
        (long enough to be compute-bound, where the FlashAttention papers report their FLOP/s).

    Returns
    -------
    DataFrame
        Per (gpu, framework, kv_bits): ``prefill_median`` and ``decode_median`` (roofline / measured: 1 means
        the kernel runs at the roofline), ``large_prefill_tflops`` (median achieved TFLOP/s of the large
        prefills) and ``large_prefill_peak_fraction`` (of the GPU's dense 16-bit peak; ``…_p90``: its 90th
        percentile, the best-shaped kernels), and row counts.
    """
    if kernels is None:
        from features.canonical import load_kernels

        kernels = load_kernels()
    att = kernels[kernels["op_kind"].isin(["attn_prefill", "attn_decode"])].reset_index(drop=True)
    r = roofline(att)
    att = att.assign(efficiency=r["ideal_ms"].to_numpy() / att["measured_ms"].to_numpy(),
                     tflops=r["flops"].to_numpy() / (att["measured_ms"].to_numpy() * 1e-3) / 1e12,
                     peak_tflops=[get_gpu(g).peak_flops(d) / 1e12 for g, d in zip(att["gpu"], att["compute_dtype"],
                                                                                  strict=True)])
    rows = []
    for (gpu, framework, kv_bits), grp in att.groupby(["gpu", "framework", "kv_bits"], observed=True):
        pre = grp[grp["op_kind"] == "attn_prefill"]
        dec = grp[grp["op_kind"] == "attn_decode"]
        large = pre[pre["q_tokens"] >= min_prefill_tokens]
        rows.append({"gpu": gpu, "framework": framework, "kv_bits": int(kv_bits),
                     "prefill_median": float(pre["efficiency"].median()) if len(pre) else np.nan,
                     "decode_median": float(dec["efficiency"].median()) if len(dec) else np.nan,
                     "large_prefill_tflops": float(large["tflops"].median()) if len(large) else np.nan,
                     "large_prefill_peak_fraction": float((large["tflops"] / large["peak_tflops"]).median())
                     if len(large) else np.nan,
                     "large_prefill_peak_fraction_p90": float((large["tflops"] / large["peak_tflops"]).quantile(0.9))
                     if len(large) else np.nan,
                     "prefill_rows": len(pre), "decode_rows": len(dec)})
    return pd.DataFrame(rows)
