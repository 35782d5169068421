"""High-level roofline of whole iterations: what ``inference-sim roofline`` prints.

:func:`iteration_roofline` answers "what is the ideal time of this iteration, op by op?";
:func:`roofline_report` bundles a prefill iteration, a decode step and the memory plan into one
JSON-able dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from predictor import opcost as oc
from predictor.batch import BatchShape, decode_batch, from_lists, prefill_batch
from predictor.errors import InputError
from predictor.gpus import GPUSpec, get_gpu
from predictor.memory import plan_memory
from predictor.model_spec import ModelSpec
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.parallel import ParallelConfig, as_parallel
from predictor.precision import Precision, parse_dtype
from predictor.roofline import iteration_totals, roofline

ATTENTION_CHOICES = ("flash", "naive")

_SHAPE_FIELDS = {
    oc.GEMM: ("m", "n", "k"),
    oc.ATTN_PREFILL: ("batch", "q_tokens", "kv_len", "heads", "kv_heads", "head_dim"),
    oc.ATTN_DECODE: ("batch", "kv_len", "heads", "kv_heads", "head_dim"),
    oc.ALLREDUCE: ("msg_bytes", "world_size"),
    oc.ALLGATHER: ("msg_bytes", "world_size"),
    oc.MOE: ("m", "k", "n", "experts", "topk"),
}


def _check_attention(attention: str) -> None:
    if attention not in ATTENTION_CHOICES:
        raise InputError(f"--attention: unknown value {attention!r}; allowed: {', '.join(ATTENTION_CHOICES)}")


def batch_roofline(
    model: ModelSpec | str,
    gpu: GPUSpec | str,
    batch: BatchShape,
    *,
    tp: int | ParallelConfig = 1,
    dtype: str | Precision = "fp16",
    attention: str = "flash",
) -> pd.DataFrame:
    """Roofline op rows (with ``total_ms`` = count · ideal_ms) for every iteration in ``batch``."""
    _check_attention(attention)
    model, gpu, precision = get_model(model), get_gpu(gpu), parse_dtype(dtype)
    ops = roofline(build_ops(model, tp, precision, batch, attention=attention), gpu)
    ops["total_ms"] = ops["count"] * ops["ideal_ms"]
    return ops


def iteration_roofline(
    model: ModelSpec | str,
    gpu: GPUSpec | str,
    *,
    tp: int | ParallelConfig = 1,
    dtype: str | Precision = "fp16",
    prefill: Iterable[tuple[int, int]] = (),
    decode: Iterable[int] = (),
    attention: str = "flash",
) -> tuple[pd.DataFrame, float]:
    """Ideal time of one iteration, op by op.

    Parameters
    ----------
    model, gpu : name or spec
    tp : int
        Tensor-parallel degree.
    dtype : str
        Precision preset or ``w<bits>a<bits>[kv<bits>]``.
    prefill : iterable of (new_tokens, context_len)
    decode : iterable of int
        Cached context length of each decoding sequence.

    Returns
    -------
    (DataFrame, float)
        Per-op rows and the iteration's ideal time in ms.

    Examples
    --------
    >>> ops, total_ms = iteration_roofline("llama-2-7b", "a100-80gb", decode=[1024])
    >>> round(total_ms, 2)
    6.75
    """
    batch = from_lists(prefill, decode)
    if batch.tokens[0] == 0:
        raise InputError("batch: empty iteration; give at least one prefill chunk or decode sequence")
    ops = batch_roofline(model, gpu, batch, tp=tp, dtype=dtype, attention=attention)
    return ops, float(iteration_totals(ops, 1)[0])


def roofline_grid(
    models: Iterable[str | ModelSpec],
    gpus: Iterable[str | GPUSpec],
    batch: BatchShape,
    *,
    tp: int | ParallelConfig = 1,
    dtype: str | Precision = "fp16",
) -> pd.DataFrame:
    """Ideal iteration times for every model × GPU × iteration of ``batch`` in one vectorised pass.

    Ops are built once per model (they do not depend on the GPU), repeated for every GPU, and the
    roofline is evaluated over the whole table at once.

    Returns
    -------
    DataFrame
        Columns ``model``, ``gpu``, ``iteration`` and ``ideal_ms`` (one row per combination).
    """
    precision = parse_dtype(dtype)
    gpu_specs = [get_gpu(g) for g in gpus]
    tables, keys = [], []
    for model in models:
        spec = get_model(model)
        ops = build_ops(spec, tp, precision, batch)
        n_ops = len(ops)
        rep = ops.loc[np.tile(np.arange(n_ops), len(gpu_specs))].reset_index(drop=True)
        rep["gpu"] = np.repeat([g.name for g in gpu_specs], n_ops)
        rep["model"] = spec.name
        tables.append(rep)
        keys.append(spec.name)
    table = pd.concat(tables, ignore_index=True)
    table["gpu"] = table["gpu"].astype("category")
    table = roofline(table, None) if len(gpu_specs) > 1 else roofline(table, gpu_specs[0])
    table["total_ms"] = table["count"] * table["ideal_ms"]
    return table.groupby(["model", "gpu", "iteration"], observed=True, as_index=False)["total_ms"].sum().rename(
        columns={"total_ms": "ideal_ms"})


def ops_records(ops: pd.DataFrame) -> list[dict]:
    """JSON-able per-op records: name, kind, count, shape, work, times (ms) and bound."""
    records = []
    for row in ops.itertuples(index=False):
        shape = {f: float(getattr(row, f)) for f in _SHAPE_FIELDS.get(row.op_kind, ("m", "n"))}
        records.append({
            "op": row.op, "op_kind": row.op_kind, "count": int(row.count), "shape": shape,
            "flops": float(row.flops), "bytes": float(row.bytes), "link_bytes": float(row.link_bytes),
            "intensity": float(row.intensity), "bound": row.bound,
            "compute_ms": float(row.compute_ms), "memory_ms": float(row.memory_ms), "network_ms": float(row.network_ms),
            "ideal_ms": float(row.ideal_ms), "total_ms": float(row.total_ms),
        })
    return records


def roofline_report(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    *,
    tp: int | ParallelConfig = 1,
    dtype: str = "fp16",
    batch_size: int = 1,
    input_len: int = 512,
    decode_context: int | None = None,
    attention: str = "flash",
    gpu_memory_utilization: float = 0.9,
    kv_bits: int | None = None,
    gpu_file: str | Path | None = None,
) -> dict:
    """Prefill iteration, decode step and memory plan for a static batch (the ``roofline`` command).

    The prefill iteration processes ``batch_size`` prompts of ``input_len`` tokens; the decode step
    has ``batch_size`` sequences with ``decode_context`` cached tokens each (default ``input_len``).
    ``tp`` is the TP degree or a :class:`~predictor.parallel.ParallelConfig`; op times are one GPU's (with
    ``pp`` > 1: one stage's layers over the whole batch, without micro-batching).
    The report's ``model_spec`` gives total and active (per token) parameter counts and the layer kinds.

    Raises
    ------
    InputError
        Bad names or sizes; :class:`~predictor.errors.ModelDoesNotFitError` when the weights do not fit.
    """
    for field, value in (("--batch-size", batch_size), ("--input-len", input_len)):
        if not isinstance(value, int) or value <= 0:
            raise InputError(f"{field}: must be a positive integer, got {value!r}")
    decode_context = input_len if decode_context is None else decode_context
    if not isinstance(decode_context, int) or decode_context < 0:
        raise InputError(f"--decode-context: must be an integer >= 0, got {decode_context!r}")
    model = get_model(model)
    gpu = get_gpu(gpu, gpu_file)
    precision = parse_dtype(dtype, kv_bits)
    par = as_parallel(tp)
    model.check_parallel(par)
    # the batch's own sequences hold per-sequence state (windows, recurrent states) and logits, not an engine's 256
    memory = plan_memory(model, gpu, par, precision, gpu_memory_utilization=gpu_memory_utilization,
                         max_num_seqs=batch_size, sequence_tokens=max(input_len, decode_context) + 1)
    batch = BatchShape.concat([prefill_batch(batch_size, input_len), decode_batch(batch_size, decode_context)])
    ops = batch_roofline(model, gpu, batch, tp=par, dtype=precision, attention=attention)
    totals = iteration_totals(ops, 2)
    needed_tokens = batch_size * (max(input_len, decode_context) + 1)
    report = {
        "model": model.name, "gpu": gpu.name, "tp": par.tp, "parallel": par.to_dict(), "gpus": par.gpus,
        "dtype": precision.label, "attention": attention,
        "model_spec": model_summary(model),
        "batch_size": batch_size, "input_len": input_len, "decode_context": decode_context,
        "prefill": {"total_ms": float(totals[0]), "ops": ops_records(ops[ops["iteration"] == 0])},
        "decode": {"total_ms": float(totals[1]), "ops": ops_records(ops[ops["iteration"] == 1])},
        "memory": {
            "weights_bytes": memory.weights_bytes,
            "kv_bytes_per_token": memory.kv_bytes_per_token,
            "max_tokens": memory.max_tokens,
            "kv_cache_bytes": memory.kv_cache_bytes,
            "activation_bytes": memory.activation_bytes,
            "overhead_bytes": memory.overhead_bytes,
            "usable_bytes": memory.usable_bytes,
            "per_sequence_bytes": memory.per_sequence_bytes,
            "replicas": memory.replicas,
            "max_sequences_at_context": memory.max_sequences(max(input_len, decode_context) + 1),
            "batch_fits": bool(needed_tokens <= memory.max_tokens),
        },
        "gpu_spec": {
            "peak_tflops": gpu.peak_flops(precision.compute) / 1e12,
            "hbm_bandwidth_gbps": gpu.hbm_bandwidth_gbps,
            "ridge_flops_per_byte": gpu.ridge_point(precision.compute),
        },
    }
    peak, bw = gpu.peak_flops(precision.compute), gpu.hbm_bandwidth_bytes_per_s
    for phase in ("prefill", "decode"):
        report[phase]["efficiency"] = ideal_efficiency(report[phase]["ops"], peak, bw)
    return report


def model_summary(model: ModelSpec) -> dict:
    """Parameter counts (total, and active per token) and the architecture's kinds of layers."""
    out = {"family": model.family, "params_total": model.param_count(), "params_active": model.active_param_count(),
           "num_layers": model.num_layers, "attention_layers": model.attention_layer_counts(),
           "moe_layers": model.moe_layer_count, "max_position_embeddings": model.max_position_embeddings}
    if model.is_moe:
        out["experts"] = {"routed": model.num_experts, "per_token": model.experts_per_token,
                          "expert_width": model.expert_intermediate_size,
                          "shared_width": model.shared_expert_intermediate_size}
    return out


def ideal_efficiency(records: list[dict], peak_flops: float, hbm_bytes_per_s: float) -> dict:
    """MFU, MBU, attained rates and bound shares of an iteration running every op at its roofline time.

    ``records`` are :func:`ops_records` (FLOPs and bytes per call; ``count`` calls). Returns the
    :func:`predictor.efficiency.metrics` of the whole iteration plus ``op_kinds``: the same per op kind. At the
    roofline, MFU + MBU can exceed neither 1 per op; the iteration's MFU and MBU show which resource its ops
    saturate (``roofline_distance`` is 1 by construction).
    """
    from predictor.efficiency import metrics

    def totals(rows) -> dict:
        out = dict.fromkeys(("time_ms", "kernel_ms", "roofline_ms", "flops", "bytes", "compute_ms", "memory_ms",
                             "network_ms"), 0.0)
        for r in rows:
            n = r["count"]
            out["time_ms"] += r["total_ms"]
            out["kernel_ms"] += r["total_ms"]
            out["roofline_ms"] += r["total_ms"]
            out["flops"] += n * r["flops"]
            out["bytes"] += n * r["bytes"]
            out["compute_ms"] += n * r["compute_ms"]
            out["memory_ms"] += n * r["memory_ms"]
            out["network_ms"] += n * r["network_ms"]
        return out

    kinds: dict[str, list] = {}
    for r in records:
        kinds.setdefault(r["op_kind"], []).append(r)
    result = metrics(totals(records), peak_flops, hbm_bytes_per_s)
    result["op_kinds"] = {k: metrics(totals(rows), peak_flops, hbm_bytes_per_s) for k, rows in kinds.items()}
    return result


def report_frame(section: dict) -> pd.DataFrame:
    """The ``ops`` records of a report section as a flat DataFrame (for tables and plots)."""
    df = pd.DataFrame(section["ops"])
    if df.empty:
        return df
    df["share"] = df["total_ms"] / max(section["total_ms"], np.finfo(float).tiny)
    return df
