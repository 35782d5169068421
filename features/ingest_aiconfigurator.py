"""Read NVIDIA AIConfigurator's vLLM and NCCL kernel tables into the canonical kernel-profile table.

Layout read (``root`` is the ``systems`` folder, its ``data`` folder, or one ``<system>`` folder)::

    <system>/<op-family>/vllm/<version>/*.parquet       vLLM kernel sweeps (gemm, attention, moe, comm)
    <system>/comm/nccl/<version>/nccl_perf.parquet      nccl-tests collective sweeps

Every row is one rank's kernel call; ``latency`` is milliseconds per call and becomes ``measured_ms``.
The sweeps are model-agnostic: ``model=""``, ``tp=1`` and ``shape_family`` groups rows for splits.
Each source row maps to at most one canonical row; unusable rows are counted in the report per reason.

Mapping rules
-------------
System folder → gpu: a100_sxm→a100-80gb, h100_sxm→h100-sxm, h200_sxm→h200, l40s→l40s, b200_sxm→b200.
framework: ``vllm-<folder>``; nccl ``nccl-<folder>``; custom ``vllm-custom-<folder>`` (the version folder's name).
gemm_perf: op=op_kind=gemm, m/n/k as given; family ``gemm:n{n}k{k}``.
gemm_dtype: bfloat16 → w16 a16 bf16; fp8 (per-tensor scales) → w8 a8 fp8; others (nvfp4) → ``unsupported_dtype``.
fp8_block (block-scaled fp8, a different kernel family ~3× slower than per-tensor fp8 at the median on H100)
→ ``block_scaled_fp8``: our precision model has one fp8 path, and averaging the two would describe neither.
context_attention_perf: attn_prefill; batch=batch_size, q_tokens=kv_len=isl (``step`` is 0 there).
Heads: heads=num_heads, kv_heads=num_key_value_heads, head_dim; family ``attn:h{h}kv{kv}d{d}``.
Attention dtypes: attn_dtype bfloat16 → bf16 (float16 → fp16), a16; kv_bits 8 for fp8 KV cache, else 16.
Unknown attention or KV-cache dtypes → ``unsupported_dtype``.
window_size (absent in 0.14.0 files) 0 = full attention: kept, attn_pairs NaN (causal pairs derived later).
window_size > 0 → ``sliding_window``: the op model treats attention as full (module predictor.ops), and
windowed decode rows of different steps would collapse onto one shape.
generation_attention_perf: attn_decode, q_tokens=1, kv_len=step+1 (cached tokens plus the new one).
beam_width ≠ 1 → ``unsupported_beam``.
nccl_perf: all_reduce → allreduce, all_gather → allgather; reduce_scatter, alltoall → ``unsupported_collective``.
nccl message_size is in elements: msg_bytes = size × 2 (half) or × 1 (int8); other dtypes → ``unsupported_dtype``.
nccl: world_size=num_gpus, compute fp16, act_bits 16 (8 for int8); family ``allreduce:w{n}`` / ``allgather:w{n}``.
nccl repeats whose ``version`` differs from the folder keep the folder's framework, so validate() averages them.
custom_allreduce_perf: allreduce, msg_bytes = message_size × 2 (bf16 elements), world_size=num_gpus, bf16.
custom_allreduce_perf keeps CUDA-graph rows (backend vllm_graph / kernel_source with "graph") only.
Eager custom all-reduce rows → ``eager_mode``: serving replays collectives in CUDA graphs (eager adds ~40 µs launch).
moe_perf: op=moe_experts, op_kind=moe, m=num_tokens, k=hidden_size, n=inter_size // moe_tp_size.
moe experts: experts=num_experts, experts_local=num_experts // moe_ep_size, topk, gated=1.
moe family ``moe:h{hidden}i{inter_size}e{experts}k{topk}`` (full, unsharded inter_size).
moe_dtype: bfloat16 → w16 a16 bf16; fp8 → w8 a8 fp8; int4_wo, w4a16_mxfp4 → w4 a16 bf16; fp8_block → ``block_scaled_fp8``.
Other moe dtypes (nvfp4, w4a8_mxfp4_mxfp8, ...) → ``unsupported_dtype``.
moe distribution other than balanced → ``non_uniform_routing`` (the cost model assumes uniform routing).
Any other table (mla, msa, dsa, gdn, encoder_attention, quantize, ...) → all its rows ``unsupported_table``.
Empty files are skipped; unreadable files, missing or non-numeric columns raise a one-line InputError.
Finally :func:`features.schema.validate` drops invalid rows and averages duplicate keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.schema import IngestReport, empty_frame, make_rows, validate
from predictor import opcost as oc
from predictor.errors import InputError

SOURCE = "aiconfigurator"

# aiconfigurator system folder → catalogue GPU name.
SYSTEM_GPUS: dict[str, str] = {
    "a100_sxm": "a100-80gb",
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "l40s": "l40s",
    "b200_sxm": "b200",
}

# dtype name → (weight_bits, act_bits, compute_dtype).
GEMM_DTYPES: dict[str, tuple[int, int, str]] = {
    "bfloat16": (16, 16, "bf16"),
    "fp8": (8, 8, "fp8"),
}
MOE_DTYPES: dict[str, tuple[int, int, str]] = {
    **GEMM_DTYPES,
    "int4_wo": (4, 16, "bf16"),
    "w4a16_mxfp4": (4, 16, "bf16"),
}
# attention activation dtype → (act_bits, compute_dtype); KV-cache dtype → kv_bits.
ATTN_DTYPES: dict[str, tuple[int, str]] = {"bfloat16": (16, "bf16"), "float16": (16, "fp16")}
KV_CACHE_BITS: dict[str, int] = {"bfloat16": 16, "float16": 16, "auto": 16, "fp8": 8, "fp8_e4m3": 8, "fp8_e5m2": 8}
# nccl-tests dtype → (bytes per element, act_bits).
NCCL_DTYPES: dict[str, tuple[int, int]] = {"half": (2, 16), "int8": (1, 8)}
NCCL_OPS: dict[str, str] = {"all_reduce": oc.ALLREDUCE, "all_gather": oc.ALLGATHER}
# vLLM custom all-reduce dtype → compute_dtype (both 2 bytes per element).
CUSTOM_AR_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
CUSTOM_AR_BYTES = 2.0


@dataclass(frozen=True)
class _File:
    """One parquet table: where it is, which GPU measured it, and its version folder name."""

    path: Path
    gpu: str
    folder_version: str


@dataclass(frozen=True)
class _Table:
    """How to convert one table type: its required columns and its converter."""

    required: tuple[str, ...]
    convert: Callable[[pd.DataFrame, _File, IngestReport], pd.DataFrame]


# --- small vectorised helpers -------------------------------------------------------------------

def _num(df: pd.DataFrame, col: str, default: float | None = None) -> np.ndarray:
    """Column ``col`` as float64 (``default`` everywhere when absent; NaN stays NaN)."""
    if col not in df.columns:
        return np.full(len(df), np.nan if default is None else float(default))
    return df[col].to_numpy(dtype=float, na_value=np.nan)


def _text(df: pd.DataFrame, col: str, default: str = "") -> pd.Series:
    """Column ``col`` as stripped lower-case strings (``default`` when absent; missing → "")."""
    if col not in df.columns:
        return pd.Series(default, index=df.index, dtype=object)
    return df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip().str.lower()


def _lookup(values: pd.Series, table: dict) -> np.ndarray:
    """Index of each value among ``table``'s keys, -1 where absent."""
    return pd.Index(list(table), dtype=object).get_indexer(values.to_numpy(dtype=object)).astype(np.int64)


def _column_of(table: dict, codes: np.ndarray, position: int | None = None) -> np.ndarray:
    """``table``'s values (or element ``position`` of tuple values) picked by ``codes`` (all >= 0)."""
    values = list(table.values())
    if position is not None:
        values = [v[position] for v in values]
    return np.asarray(values, dtype=object)[codes]


def _keep(df: pd.DataFrame, mask: np.ndarray, reason: str, report: IngestReport) -> pd.DataFrame:
    """Rows of ``df`` where ``mask`` holds; the others are counted under ``reason``."""
    mask = np.asarray(mask, dtype=bool)
    report.reject(reason, int((~mask).sum()))
    return df.loc[mask].reset_index(drop=True) if not mask.all() else df


def _family(prefix, **parts: np.ndarray) -> np.ndarray:
    """Shape-family strings: ``prefix`` (one string or one per row) + ``label{value}`` per part.

    Values are written as integers, e.g. ``_family("gemm:", n=[4096], k=[1024])`` → ``["gemm:n4096k1024"]``.
    """
    n = len(next(iter(parts.values())))
    out = pd.Series(np.full(n, prefix, dtype=object) if isinstance(prefix, str) else np.asarray(prefix, dtype=object))
    for label, values in parts.items():
        digits = pd.Series(np.asarray(values, dtype=float)).astype("Int64").astype(str).to_numpy(object)
        out = out + label + digits
    return out.to_numpy(dtype=object)


def _rows(df: pd.DataFrame, f: _File, framework, shape_family, **columns) -> pd.DataFrame:
    """Canonical rows with the identity columns every aiconfigurator row shares."""
    return make_rows(len(df), source=SOURCE, gpu=f.gpu, framework=framework, model="", tp=1.0,
                     shape_family=shape_family, measured_ms=_num(df, "latency"), **columns)


# --- table converters ---------------------------------------------------------------------------

def _gemm(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """gemm_perf rows → gemm ops ``[m×k]·[k×n]``, bits and compute path from ``gemm_dtype``."""
    df = _not_block_fp8(df, "gemm_dtype", report)
    codes = _lookup(_text(df, "gemm_dtype"), GEMM_DTYPES)
    df = _keep(df, codes >= 0, "unsupported_dtype", report)
    codes = codes[codes >= 0]
    m, n, k = _num(df, "m"), _num(df, "n"), _num(df, "k")
    return _rows(df, f, f"vllm-{f.folder_version}", _family("gemm:", n=n, k=k),
                 op="gemm", op_kind=oc.GEMM, m=m, n=n, k=k,
                 weight_bits=_column_of(GEMM_DTYPES, codes, 0).astype(float),
                 act_bits=_column_of(GEMM_DTYPES, codes, 1).astype(float),
                 compute_dtype=_column_of(GEMM_DTYPES, codes, 2))


def _attention_dtypes(df: pd.DataFrame, report: IngestReport) -> tuple[pd.DataFrame, dict]:
    """Drop rows with unknown attention/KV dtypes; return the rest and their precision columns."""
    act = _lookup(_text(df, "attn_dtype", "bfloat16"), ATTN_DTYPES)
    kv = _lookup(_text(df, "kv_cache_dtype"), KV_CACHE_BITS)
    ok = (act >= 0) & (kv >= 0)
    df = _keep(df, ok, "unsupported_dtype", report)
    act, kv = act[ok], kv[ok]
    return df, {"act_bits": _column_of(ATTN_DTYPES, act, 0).astype(float),
                "compute_dtype": _column_of(ATTN_DTYPES, act, 1),
                "kv_bits": _column_of(KV_CACHE_BITS, kv).astype(float)}


def _attention_heads(df: pd.DataFrame) -> dict:
    """Head columns of an attention table (local query heads, KV heads, head width)."""
    return {"heads": _num(df, "num_heads"), "kv_heads": _num(df, "num_key_value_heads"),
            "head_dim": _num(df, "head_dim")}


def _full_attention(df: pd.DataFrame, report: IngestReport) -> pd.DataFrame:
    """Keep full-attention rows; count sliding-window rows as ``sliding_window``."""
    window = np.nan_to_num(_num(df, "window_size", 0.0))
    return _keep(df, window == 0, "sliding_window", report)


def _not_block_fp8(df: pd.DataFrame, column: str, report: IngestReport) -> pd.DataFrame:
    """Drop block-scaled fp8 rows (counted as ``block_scaled_fp8``)."""
    return _keep(df, (_text(df, column) != "fp8_block").to_numpy(bool), "block_scaled_fp8", report)


def _context_attention(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """context_attention_perf rows → attn_prefill over ``batch`` prompts of ``isl`` tokens."""
    df = _full_attention(df, report)
    df, precision = _attention_dtypes(df, report)
    heads = _attention_heads(df)
    batch, isl = _num(df, "batch_size"), _num(df, "isl")
    return _rows(df, f, f"vllm-{f.folder_version}",
                 _family("attn:", h=heads["heads"], kv=heads["kv_heads"], d=heads["head_dim"]),
                 op="attn_prefill", op_kind=oc.ATTN_PREFILL, batch=batch, q_tokens=isl, kv_len=isl,
                 **heads, **precision)


def _generation_attention(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """generation_attention_perf rows → attn_decode of one new token over ``step + 1`` keys."""
    df = _keep(df, np.nan_to_num(_num(df, "beam_width", 1.0), nan=1.0) == 1, "unsupported_beam", report)
    df = _full_attention(df, report)
    df, precision = _attention_dtypes(df, report)
    heads = _attention_heads(df)
    kv_len = _num(df, "step") + 1.0
    return _rows(df, f, f"vllm-{f.folder_version}",
                 _family("attn:", h=heads["heads"], kv=heads["kv_heads"], d=heads["head_dim"]),
                 op="attn_decode", op_kind=oc.ATTN_DECODE, batch=_num(df, "batch_size"), q_tokens=1.0,
                 kv_len=kv_len, **heads, **precision)


def _nccl(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """nccl_perf rows → allreduce/allgather of ``message_size`` elements across ``num_gpus``."""
    ops = _lookup(_text(df, "op_name"), NCCL_OPS)
    df = _keep(df, ops >= 0, "unsupported_collective", report)
    ops = ops[ops >= 0]
    dtypes = _lookup(_text(df, "nccl_dtype"), NCCL_DTYPES)
    df = _keep(df, dtypes >= 0, "unsupported_dtype", report)
    ops, dtypes = ops[dtypes >= 0], dtypes[dtypes >= 0]
    kind = _column_of(NCCL_OPS, ops)
    world = _num(df, "num_gpus")
    return _rows(df, f, f"nccl-{f.folder_version}", _family(kind + ":", w=world), op=kind, op_kind=kind,
                 msg_bytes=_num(df, "message_size") * _column_of(NCCL_DTYPES, dtypes, 0).astype(float),
                 world_size=world, compute_dtype="fp16",
                 act_bits=_column_of(NCCL_DTYPES, dtypes, 1).astype(float))


def _custom_allreduce(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """custom_allreduce_perf CUDA-graph rows → allreduce of ``message_size`` bf16 elements."""
    if "backend" not in df.columns and "kernel_source" not in df.columns:
        raise InputError(f"{str(f.path)!r}: missing column 'backend' (or 'kernel_source'): needed to tell "
                         "CUDA-graph from eager rows")
    graph = (_text(df, "backend") == "vllm_graph") | _text(df, "kernel_source").str.contains("graph")
    df = _keep(df, graph.to_numpy(bool), "eager_mode", report)
    dtypes = _lookup(_text(df, "allreduce_dtype", "bfloat16"), CUSTOM_AR_DTYPES)
    df = _keep(df, dtypes >= 0, "unsupported_dtype", report)
    dtypes = dtypes[dtypes >= 0]
    world = _num(df, "num_gpus")
    return _rows(df, f, f"vllm-custom-{f.folder_version}", _family("allreduce:", w=world),
                 op="allreduce", op_kind=oc.ALLREDUCE, msg_bytes=_num(df, "message_size") * CUSTOM_AR_BYTES,
                 world_size=world, compute_dtype=_column_of(CUSTOM_AR_DTYPES, dtypes), act_bits=16.0)


def _moe(df: pd.DataFrame, f: _File, report: IngestReport) -> pd.DataFrame:
    """moe_perf balanced-routing rows → fused MoE over this rank's expert slice."""
    df = _keep(df, (_text(df, "distribution") == "balanced").to_numpy(bool), "non_uniform_routing", report)
    df = _not_block_fp8(df, "moe_dtype", report)
    codes = _lookup(_text(df, "moe_dtype"), MOE_DTYPES)
    df = _keep(df, codes >= 0, "unsupported_dtype", report)
    codes = codes[codes >= 0]
    hidden, inter = _num(df, "hidden_size"), _num(df, "inter_size")
    experts, topk = _num(df, "num_experts"), _num(df, "topk")
    return _rows(df, f, f"vllm-{f.folder_version}",
                 _family("moe:", h=hidden, i=inter, e=experts, k=topk),
                 op="moe_experts", op_kind=oc.MOE, m=_num(df, "num_tokens"), k=hidden,
                 n=np.floor_divide(inter, _num(df, "moe_tp_size")), experts=experts,
                 experts_local=np.floor_divide(experts, _num(df, "moe_ep_size")), topk=topk, gated=1.0,
                 weight_bits=_column_of(MOE_DTYPES, codes, 0).astype(float),
                 act_bits=_column_of(MOE_DTYPES, codes, 1).astype(float),
                 compute_dtype=_column_of(MOE_DTYPES, codes, 2))


_ATTN_COLUMNS = ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype")
TABLES: dict[str, _Table] = {
    "gemm_perf": _Table(("gemm_dtype", "m", "n", "k", "latency"), _gemm),
    "context_attention_perf": _Table((*_ATTN_COLUMNS, "latency"), _context_attention),
    "generation_attention_perf": _Table((*_ATTN_COLUMNS, "step", "latency"), _generation_attention),
    "moe_perf": _Table(("moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
                        "moe_tp_size", "moe_ep_size", "distribution", "latency"), _moe),
    "nccl_perf": _Table(("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"), _nccl),
    "custom_allreduce_perf": _Table(("num_gpus", "message_size", "latency"), _custom_allreduce),
}
_NUMERIC = {"m", "n", "k", "latency", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
            "step", "window_size", "beam_width", "num_tokens", "hidden_size", "inter_size", "topk",
            "num_experts", "moe_tp_size", "moe_ep_size", "num_gpus", "message_size"}


# --- walking the folders ------------------------------------------------------------------------

def _is_system_folder(path: Path) -> bool:
    """Whether ``path`` looks like one ``<system>`` folder (holds ``<family>/vllm`` or ``comm/nccl``)."""
    return path.name in SYSTEM_GPUS or any(path.glob("*/vllm")) or (path / "comm" / "nccl").is_dir()


def system_folders(root: str | Path) -> list[Path]:
    """The ``<system>`` folders under ``root`` (a ``systems``, ``data`` or single ``<system>`` folder).

    Raises
    ------
    InputError
        ``root`` does not exist, is not a folder, or holds no system folders.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"aiconfigurator root {str(root)!r} does not exist")
    if not root.is_dir():
        raise InputError(f"aiconfigurator root {str(root)!r} is not a folder")
    if (root / "data").is_dir():
        root = root / "data"
    if _is_system_folder(root):
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not folders:
        raise InputError(f"aiconfigurator root {str(root)!r} holds no system folders "
                         f"(expected {', '.join(sorted(SYSTEM_GPUS))})")
    return folders


def system_gpu(folder: Path) -> str:
    """Catalogue GPU name for an aiconfigurator ``<system>`` folder."""
    gpu = SYSTEM_GPUS.get(folder.name)
    if gpu is None:
        raise InputError(f"{str(folder)!r}: unknown aiconfigurator system folder {folder.name!r}; "
                         f"allowed: {', '.join(sorted(SYSTEM_GPUS))}")
    return gpu


def _table_files(folder: Path, gpu: str) -> Iterator[_File]:
    """Parquet files under one system folder: vLLM sweeps and NCCL sweeps, in a stable order."""
    paths = [*folder.glob("*/vllm/*/*.parquet"), *folder.glob("comm/nccl/*/*.parquet")]
    for path in sorted(paths):
        if path.is_file():
            yield _File(path, gpu, path.parent.name)


def _row_count(path: Path) -> int:
    """Rows in a parquet file, from its footer (no data read)."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as err:  # noqa: BLE001 - any reader failure means "not parquet"
        raise InputError(f"{str(path)!r}: cannot be read as parquet ({type(err).__name__})") from None


def _read(path: Path, table: _Table) -> pd.DataFrame:
    """Read one table and check its required columns (one-line :class:`InputError` otherwise)."""
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any reader failure means "not parquet"
        raise InputError(f"{str(path)!r}: cannot be read as parquet ({type(err).__name__})") from None
    if df.empty:
        return df
    for col in table.required:
        if col not in df.columns:
            raise InputError(f"{str(path)!r}: missing column {col!r} (required: {', '.join(table.required)})")
    for col in _NUMERIC.intersection(df.columns):
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise InputError(f"{str(path)!r}: column {col!r} must be numeric, got {df[col].dtype}")
    return df


def _convert_file(f: _File, report: IngestReport) -> pd.DataFrame | None:
    """Canonical rows of one file; ``None`` for empty files and tables we do not use."""
    table = TABLES.get(f.path.stem)
    if table is None:
        report.reject("unsupported_table", _row_count(f.path))
        return None
    df = _read(f.path, table)
    if df.empty:
        return None
    return table.convert(df.reset_index(drop=True), f, report)


def load_aiconfigurator(root: str | Path, report: IngestReport | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Load an AIConfigurator ``systems`` tree into the canonical kernel-profile table.

    Parameters
    ----------
    root : str or Path
        The ``systems`` folder (holding ``data/<system>/...``), its ``data`` folder, or one ``<system>``.
    report : IngestReport, optional
        Report to add to; a new one when omitted.

    Returns
    -------
    (DataFrame, IngestReport)
        Validated canonical rows (``measured_ms`` in ms per call, duplicates averaged) and the report of
        kept, rejected (per reason) and merged rows.

    Raises
    ------
    InputError
        Missing root, no or unknown system folders, unreadable parquet, missing or non-numeric columns.
    """
    report = report or IngestReport()
    frames = []
    for folder in system_folders(root):
        gpu = system_gpu(folder)
        for f in _table_files(folder, gpu):
            rows = _convert_file(f, report)
            if rows is not None and len(rows):
                frames.append(rows)
    df = pd.concat(frames, ignore_index=True) if frames else empty_frame()
    return validate(df, source=f"aiconfigurator {str(root)!r}", report=report)
