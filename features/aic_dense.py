"""AIConfigurator GEMM, attention and collective tables → canonical rows (see
:mod:`features.ingest_aiconfigurator` for the mapping rules of every table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.aic_common import AicFile, column_of, family, keep, keep_known, lookup, num, precision, rows, text
from features.schema import IngestReport
from predictor import opcost as oc
from predictor.errors import InputError

# dtype name → (weight_bits, act_bits, compute_dtype).
GEMM_DTYPES: dict[str, tuple[int, int, str]] = {
    "bfloat16": (16, 16, "bf16"),
    "fp8": (8, 8, "fp8"),
    "fp8_block": (8, 8, "fp8"),
    "nvfp4": (4, 4, "fp4"),
    "int8_wo": (8, 16, "bf16"),
    "int4_wo": (4, 16, "bf16"),
}
# attention activation dtype → (act_bits, compute_dtype); KV-cache dtype → kv_bits.
ATTN_DTYPES: dict[str, tuple[int, str]] = {"bfloat16": (16, "bf16"), "float16": (16, "fp16"), "fp8": (8, "fp8")}
KV_CACHE_BITS: dict[str, int] = {"bfloat16": 16, "float16": 16, "auto": 16, "fp8": 8, "fp8_e4m3": 8, "fp8_e5m2": 8}
# nccl-tests dtype → (bytes per element, act_bits).
NCCL_DTYPES: dict[str, tuple[int, int]] = {"half": (2, 16), "int8": (1, 8)}
NCCL_OPS: dict[str, str] = {"all_reduce": oc.ALLREDUCE, "all_gather": oc.ALLGATHER, "alltoall": oc.ALLTOALL}
# custom all-reduce dtype → compute_dtype (both 2 bytes per element).
CUSTOM_AR_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
CUSTOM_AR_BYTES = 2.0


def block_fp8_policy(df: pd.DataFrame, column: str, report: IngestReport) -> pd.DataFrame:
    """Drop block-scaled fp8 rows of a file that also holds per-tensor fp8 rows (``block_scaled_fp8``).

    Both map to w8a8 fp8 and no shape column tells them apart, yet on H100 the block-scaled kernels
    run ~3× slower at the median: where a file measures both, the per-tensor path is kept; where it
    measures only block-scaled fp8 (e.g. SGLang MoE), that is the file's fp8 path and is kept.
    """
    dtype = text(df, column)
    block = (dtype == "fp8_block").to_numpy(bool)
    if block.any() and (dtype == "fp8").any():
        return keep(df, ~block, "block_scaled_fp8", report)
    return df


def gemm(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """gemm_perf rows → gemm ops ``[m×k]·[k×n]``, bits and compute path from ``gemm_dtype``."""
    df = block_fp8_policy(df, "gemm_dtype", report)
    df, codes = keep_known(df, "gemm_dtype", GEMM_DTYPES, "unsupported_dtype", report)
    m, n, k = num(df, "m"), num(df, "n"), num(df, "k")
    return rows(df, f, family("gemm:", n=n, k=k), op="gemm", op_kind=oc.GEMM, m=m, n=n, k=k,
                **precision(GEMM_DTYPES, codes))


def attention_dtypes(df: pd.DataFrame, report: IngestReport, act_column: str = "attn_dtype") -> tuple[pd.DataFrame, dict]:
    """Drop rows with unknown attention/KV dtypes; return the rest and their precision columns."""
    act = lookup(text(df, act_column, "bfloat16"), ATTN_DTYPES)
    kv = lookup(text(df, "kv_cache_dtype"), KV_CACHE_BITS)
    ok = (act >= 0) & (kv >= 0)
    df = keep(df, ok, "unsupported_dtype", report)
    act, kv = act[ok], kv[ok]
    return df, {"act_bits": column_of(ATTN_DTYPES, act, 0).astype(float),
                "compute_dtype": column_of(ATTN_DTYPES, act, 1),
                "kv_bits": column_of(KV_CACHE_BITS, kv).astype(float)}


def _heads(df: pd.DataFrame) -> dict:
    """Head columns of an attention table (local query heads, KV heads, head width)."""
    return {"heads": num(df, "num_heads"), "kv_heads": num(df, "num_key_value_heads"), "head_dim": num(df, "head_dim")}


def _window(df: pd.DataFrame) -> np.ndarray:
    """Sliding window in tokens (0: full attention; the column is absent in 0.14.0 files)."""
    return np.nan_to_num(num(df, "window_size", 0.0))


def _attn_family(heads: dict, window: np.ndarray) -> np.ndarray:
    return family("attn:", h=heads["heads"], kv=heads["kv_heads"], d=heads["head_dim"], w=window)


def context_attention(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """context_attention_perf rows → attn_prefill over ``batch`` prompts of ``isl`` tokens (window kept)."""
    df, prec = attention_dtypes(df, report)
    heads, window = _heads(df), _window(df)
    isl = num(df, "isl")
    return rows(df, f, _attn_family(heads, window), op="attn_prefill", op_kind=oc.ATTN_PREFILL,
                batch=num(df, "batch_size"), q_tokens=isl, kv_len=isl, window=window, **heads, **prec)


def generation_attention(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """generation_attention_perf rows → attn_decode of one new token over ``step + 1`` keys (window kept)."""
    df = keep(df, np.nan_to_num(num(df, "beam_width", 1.0), nan=1.0) == 1, "unsupported_beam", report)
    df, prec = attention_dtypes(df, report)
    heads, window = _heads(df), _window(df)
    return rows(df, f, _attn_family(heads, window), op="attn_decode", op_kind=oc.ATTN_DECODE,
                batch=num(df, "batch_size"), q_tokens=1.0, kv_len=num(df, "step") + 1.0, window=window,
                **heads, **prec)


def nccl(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """nccl_perf rows → allreduce/allgather/alltoall of ``message_size`` elements across ``num_gpus``."""
    df, ops = keep_known(df, "op_name", NCCL_OPS, "unsupported_collective", report)
    dtypes = lookup(text(df, "nccl_dtype"), NCCL_DTYPES)
    df = keep(df, dtypes >= 0, "unsupported_dtype", report)
    ops, dtypes = ops[dtypes >= 0], dtypes[dtypes >= 0]
    kind = column_of(NCCL_OPS, ops)
    world = num(df, "num_gpus")
    return rows(df, f, family(kind + ":", w=world), op=kind, op_kind=kind,
                msg_bytes=num(df, "message_size") * column_of(NCCL_DTYPES, dtypes, 0).astype(float),
                world_size=world, compute_dtype="fp16", act_bits=column_of(NCCL_DTYPES, dtypes, 1).astype(float))


def custom_allreduce(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """custom_allreduce_perf CUDA-graph rows → allreduce of ``message_size`` bf16 elements."""
    if "backend" not in df.columns and "kernel_source" not in df.columns:
        raise InputError(f"{str(f.path)!r}: missing column 'backend' (or 'kernel_source'): needed to tell "
                         "CUDA-graph from eager rows")
    source = text(df, "kernel_source")
    graph = text(df, "backend").str.endswith("_graph") | source.str.contains("graph")
    unknown = ~graph & ~text(df, "backend").str.endswith("_eager") & ~source.str.contains("eager")
    df = keep(df, ~unknown.to_numpy(bool), "capture_mode_unknown", report)
    graph = graph[~unknown.to_numpy(bool)].reset_index(drop=True)
    df = keep(df, graph.to_numpy(bool), "eager_mode", report)
    df, dtypes = keep_known(df, "allreduce_dtype", CUSTOM_AR_DTYPES, "unsupported_dtype", report, "bfloat16")
    world = num(df, "num_gpus")
    return rows(df, f, family("allreduce:", w=world), framework=f"{f.runtime}-custom-{f.folder_version}",
                op="allreduce", op_kind=oc.ALLREDUCE, msg_bytes=num(df, "message_size") * CUSTOM_AR_BYTES,
                world_size=world, compute_dtype=column_of(CUSTOM_AR_DTYPES, dtypes), act_bits=16.0)
