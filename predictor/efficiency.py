"""Efficiency metrics of predicted iterations: attained FLOP/s and bytes/s, MFU, MBU, roofline distance.

Pure functions over the work arrays of :meth:`predictor.tables.IterationTables.work` (per op group: predicted
and roofline time in ms, FLOPs and HBM bytes, all per GPU of a tensor-parallel group).

Definitions (per GPU; a TP group's GPUs each do 1/tp of the sharded work in the same time):

* ``attained_tflops`` = FLOPs / wall time; ``attained_gbps`` = HBM bytes / wall time (10⁹ bytes/s).
* ``mfu`` (model FLOPs utilisation) = attained FLOP/s / the GPU's dense peak for the compute dtype.
  The FLOPs are those of the model's ops (GEMMs 2·m·n·k, attention 4·heads·dim per query-key pair,
  element-wise ops), so no recomputation is counted.
* ``mbu`` (memory-bandwidth utilisation) = attained bytes/s / the GPU's HBM bandwidth. Bytes are the
  roofline's HBM traffic (weights, activations, KV cache reads and writes).
* ``roofline_distance`` = predicted wall time / roofline time (Σ over ops of max(compute, memory) or
  network time); ≥ 1 when the predictor is slower than ideal. ``kernel_distance`` excludes the CPU
  overhead. Wall time = kernel time + the per-iteration CPU overhead of the predictor.

Phases. In a mixed iteration (prefill chunks and decodes batched together, as with chunked prefill) the
token-proportional work of the linear layers, norms, activations, embeddings and collectives is split
between the phases by their share of the iteration's tokens; sampling by the share of sampled tokens;
attention belongs to its phase. The CPU overhead is split by the share of sequences.
"""

from __future__ import annotations

import numpy as np

from predictor.batch import BatchShape

PHASES = ("prefill", "decode")
FIELDS = ("time_ms", "kernel_ms", "roofline_ms", "flops", "bytes", "compute_ms", "memory_ms", "network_ms")
BOTTLENECKS = ("compute", "memory", "network", "overhead")


def aggregate_batch(prefill_chunks, prefill_new_tokens, prefill_kv_tokens, prefill_samples, decode_seqs,
                    decode_context_tokens) -> BatchShape:
    """A :class:`BatchShape` from the simulator's per-iteration aggregates (arrays or scalars).

    Chunks within an iteration are taken as equal (mean new tokens, mean cached context), the same
    approximation :meth:`predictor.predictor.BoundPredictor.iteration_ms` makes.
    """
    n = np.atleast_1d(np.asarray(prefill_chunks, float))
    new = np.atleast_1d(np.asarray(prefill_new_tokens, float))
    kv = np.atleast_1d(np.asarray(prefill_kv_tokens, float))
    q = np.where(n > 0, new / np.maximum(n, 1.0), 0.0)
    ctx = np.maximum(np.where(n > 0, kv / np.maximum(n, 1.0) - q, 0.0), 0.0)
    dseqs = np.atleast_1d(np.asarray(decode_seqs, float))
    return BatchShape(prefill_seqs=n, prefill_tokens=new, prefill_kv_tokens=kv,
                      prefill_attention_pairs=n * q * (ctx + q / 2.0), prefill_score_elements=n * q * (ctx + q),
                      decode_seqs=dseqs, decode_context_tokens=np.atleast_1d(np.asarray(decode_context_tokens, float)),
                      sample_tokens=np.atleast_1d(np.asarray(prefill_samples, float)) + dseqs)


def phase_work(groups: dict, batch: BatchShape, overhead_ms, peak_flops: float, hbm_bytes_per_s: float) -> dict:
    """Split per-group work between prefill and decode, per iteration.

    Parameters
    ----------
    groups : dict
        :meth:`IterationTables.work` output: ``{group: {predicted_ms, roofline_ms, flops, bytes}}`` arrays.
    batch : BatchShape
        The iterations the work belongs to.
    overhead_ms : array or float
        CPU overhead of each iteration (ms).
    peak_flops, hbm_bytes_per_s : float
        The GPU's dense peak for the compute dtype (FLOP/s) and HBM bandwidth (bytes/s).

    Returns
    -------
    dict
        ``{phase: {group: {field: array}}}`` with :data:`FIELDS` per group (``time_ms`` = kernel time plus its
        share of the overhead; the overhead sits in a pseudo-group ``overhead``).
    """
    tokens = batch.tokens
    prefill_share = np.where(tokens > 0, batch.prefill_tokens / np.where(tokens > 0, tokens, 1.0), 0.0)
    samples = batch.sample_tokens
    prefill_samples = np.maximum(samples - batch.decode_seqs, 0.0)
    sample_share = np.where(samples > 0, prefill_samples / np.where(samples > 0, samples, 1.0), 0.0)
    seqs = batch.prefill_seqs + batch.decode_seqs
    seq_share = np.where(seqs > 0, batch.prefill_seqs / np.where(seqs > 0, seqs, 1.0), 0.0)
    overhead_ms = np.broadcast_to(np.asarray(overhead_ms, float), tokens.shape)
    out: dict = {phase: {} for phase in PHASES}
    for group, w in groups.items():
        if group == "attn_prefill":
            shares = {"prefill": 1.0, "decode": 0.0}
        elif group == "attn_decode":
            shares = {"prefill": 0.0, "decode": 1.0}
        elif group == "sampling":
            shares = {"prefill": sample_share, "decode": 1.0 - sample_share}
        else:
            shares = {"prefill": prefill_share, "decode": 1.0 - prefill_share}
        collective = group == "collective"
        for phase, share in shares.items():
            flops, nbytes = w["flops"] * share, w["bytes"] * share
            roof = w["roofline_ms"] * share
            out[phase][group] = {
                "time_ms": w["predicted_ms"] * share, "kernel_ms": w["predicted_ms"] * share, "roofline_ms": roof,
                "flops": flops, "bytes": nbytes,
                "compute_ms": np.zeros_like(roof) if collective else flops / peak_flops * 1e3,
                "memory_ms": np.zeros_like(roof) if collective else nbytes / hbm_bytes_per_s * 1e3,
                "network_ms": roof if collective else np.zeros_like(roof),
            }
    for phase, share in (("prefill", seq_share), ("decode", 1.0 - seq_share)):
        zero = np.zeros_like(tokens, dtype=float)
        out[phase]["overhead"] = {f: zero for f in FIELDS} | {"time_ms": overhead_ms * share}
    return out


def sum_work(work: dict, weights=None) -> dict:
    """Collapse per-iteration arrays to totals: ``{phase: {group: {field: float}}}`` (optionally weighted)."""
    return {phase: {group: {f: float(np.sum(v if weights is None else v * weights)) for f, v in fields.items()}
                    for group, fields in groups.items()} for phase, groups in work.items()}


def add_totals(a: dict | None, b: dict) -> dict:
    """Element-wise sum of two :func:`sum_work` results."""
    if a is None:
        return b
    return {phase: {group: {f: a.get(phase, {}).get(group, {}).get(f, 0.0) + v for f, v in fields.items()}
                    for group, fields in groups.items()} for phase, groups in b.items()}


def metrics(totals: dict, peak_flops: float, hbm_bytes_per_s: float) -> dict:
    """Metrics of one bucket of totals (FIELDS → float): attained rates, MFU, MBU, distances, bottleneck.

    The bottleneck is the largest of: compute time at peak (Σ FLOPs / peak), memory time at full bandwidth
    (Σ bytes / bandwidth), the collectives' network time and the CPU overhead, each also given as a share of
    the wall time (``*_share``; they can add up to more than 1 because an op is bound by one resource only).
    """
    t_ms = totals.get("time_ms", 0.0)
    t_s = t_ms / 1e3
    out = {"time_ms": t_ms, "flops": totals.get("flops", 0.0), "bytes": totals.get("bytes", 0.0),
           "roofline_ms": totals.get("roofline_ms", 0.0), "kernel_ms": totals.get("kernel_ms", 0.0)}
    if t_s <= 0:
        return out | {"attained_tflops": 0.0, "attained_gbps": 0.0, "mfu": 0.0, "mbu": 0.0,
                      "roofline_distance": float("nan"), "kernel_distance": float("nan"),
                      **{f"{b}_share": 0.0 for b in BOTTLENECKS}, "bottleneck": "none"}
    overhead_ms = max(t_ms - out["kernel_ms"], 0.0)
    shares = {"compute": totals.get("compute_ms", 0.0) / t_ms, "memory": totals.get("memory_ms", 0.0) / t_ms,
              "network": totals.get("network_ms", 0.0) / t_ms, "overhead": overhead_ms / t_ms}
    roof = out["roofline_ms"]
    return out | {
        "attained_tflops": out["flops"] / t_s / 1e12,
        "attained_gbps": out["bytes"] / t_s / 1e9,
        "mfu": out["flops"] / t_s / peak_flops,
        "mbu": out["bytes"] / t_s / hbm_bytes_per_s,
        "roofline_distance": t_ms / roof if roof > 0 else float("nan"),
        "kernel_distance": out["kernel_ms"] / roof if roof > 0 else float("nan"),
        **{f"{b}_share": v for b, v in shares.items()},
        "bottleneck": max(shares, key=shares.get),
    }


def report(totals: dict, peak_flops: float, hbm_bytes_per_s: float) -> dict:
    """Metrics overall, per phase and per (phase, op group) from :func:`sum_work` totals.

    Returns ``{"overall": m, "prefill": m, "decode": m, "groups": {phase: {group: m}}}`` where each ``m`` is a
    :func:`metrics` dict; each phase's also has ``time_by_group``, the fraction of its predicted wall time
    spent in each op group and in CPU overhead (``overhead``). Phases with no time are left out.
    """
    def bucket(items) -> dict:
        acc: dict = {}
        for fields in items:
            for f, v in fields.items():
                acc[f] = acc.get(f, 0.0) + v
        return acc

    out: dict = {"overall": metrics(bucket(f for g in totals.values() for f in g.values()), peak_flops,
                                    hbm_bytes_per_s), "groups": {}}
    for phase, groups in totals.items():
        phase_totals = bucket(groups.values())
        if phase_totals.get("time_ms", 0.0) <= 0:
            continue
        out[phase] = metrics(phase_totals, peak_flops, hbm_bytes_per_s)
        # where the phase's predicted wall time goes, by op group (and CPU overhead): fractions adding up to 1
        total_ms = phase_totals["time_ms"]
        out[phase]["time_by_group"] = {g: f.get("time_ms", 0.0) / total_ms for g, f in groups.items()
                                       if f.get("time_ms", 0.0) > 0}
        out["groups"][phase] = {g: metrics(f, peak_flops, hbm_bytes_per_s) for g, f in groups.items()
                                if g != "overhead" and f.get("time_ms", 0.0) > 0}
    return out
