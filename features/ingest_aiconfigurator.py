"""Read NVIDIA AIConfigurator's kernel tables (vLLM, SGLang, TRT-LLM, NCCL) into the canonical table.

Layout read (``root`` is the ``systems`` folder, its ``data`` folder, or one ``<system>`` folder)::

    <system>/<op-family>/<runtime>/<version>/*.parquet   runtime: vllm, sglang, trtllm
    <system>/comm/nccl/<version>/nccl_perf.parquet       nccl-tests collective sweeps

Every row is one rank's kernel call; ``latency`` is milliseconds per call and becomes ``measured_ms``.
The sweeps are model-agnostic: ``model=""``, ``tp=1`` and ``shape_family`` groups rows for splits.
Each source row maps to at most one canonical row; unusable rows are counted in the report per reason.

Mapping rules
-------------
System folder → gpu: :data:`SYSTEM_GPUS`. Rows of GPUs or compute dtypes (fp4) the catalogue lacks are
dropped by validation (``unknown_gpu``, ``unknown_compute_dtype``) until the catalogue has them.
framework (kept per row, not a feature): ``<runtime>-<version folder>``, e.g. ``sglang-0.5.10``; nccl
``nccl-<folder>``; custom all-reduce ``<runtime>-custom-<folder>``.
gemm_perf: op=op_kind=gemm, m/n/k as given; family ``gemm:n{n}k{k}``. gemm_dtype: bfloat16 → w16a16 bf16;
fp8 and fp8_block → w8a8 fp8; nvfp4 → w4a4 fp4; int8_wo / int4_wo → w8a16 / w4a16 bf16; others (fp8_static,
sq) → ``unsupported_dtype``. Block-scaled fp8 rows of a file that also measures per-tensor fp8 →
``block_scaled_fp8`` (same shape key, a different kernel family ~3× slower on H100; the per-tensor path
is kept; a file with only fp8_block keeps it as its fp8 path).
context_attention_perf: attn_prefill; batch=batch_size, q_tokens=kv_len=isl. Heads: heads=num_heads,
kv_heads=num_key_value_heads, head_dim; window=window_size (0 or absent: full attention); family
``attn:h{h}kv{kv}d{d}w{window}``. attn_dtype bfloat16 → bf16 a16 (float16 → fp16, fp8 → fp8 a8); kv_bits 8
for fp8 KV cache, else 16; unknown dtypes → ``unsupported_dtype``.
generation_attention_perf: attn_decode, q_tokens=1, kv_len=step+1 (cached tokens plus the new one),
window as above; beam_width ≠ 1 → ``unsupported_beam``.
context_mla_perf: decompressed MLA prefill, attn_prefill with heads=kv_heads=num_heads (128/tp), head_dim 192,
v_head_dim 128, latent_kv 0; q_tokens=kv_len=isl; dtype from mla_dtype and kv_cache_dtype; family ``mla_prefill:h{h}``.
generation_mla_perf: absorbed MLA decode, attn_decode with heads=num_heads, kv_heads 1, head_dim 576
(kv_lora_rank 512 + rope 64), v_head_dim 512, latent_kv 1, kv_len=step+1; family ``mla_decode:h{h}``.
moe_perf: op=moe_experts, op_kind=moe, m=num_tokens, k=hidden_size, n=inter_size // moe_tp_size,
experts=num_experts, experts_local=num_experts // moe_ep_size, topk, gated=1; routing_skew 0 for
``balanced``, a for ``power_law_<a>`` (other → ``unknown_routing``); family ``moe:h{hidden}i{inter}e{E}k{topk}``.
moe_dtype: bfloat16 → w16a16 bf16; fp8, fp8_block → w8a8 fp8 (block rule as for gemm); nvfp4 → w4a4 fp4;
int4_wo, w4a16_mxfp4 → w4a16 bf16; w4a8_mxfp4_mxfp8 → w4a8 fp8; others (w4afp8) → ``unsupported_dtype``.
gdn_perf: the delta-rule kernels (chunk_gated_delta_rule*, fused_recurrent_gated_delta_rule*) → linear_attn
with batch=batch_size, q_tokens=seq_len (1 in generation), heads=num_v_heads, head_dim=head_k_dim,
v_head_dim=head_v_dim, bf16; causal_conv1d kernels → ``gdn_conv1d``; family ``gdn:h{h}dk{dk}dv{dv}``.
nccl_perf: all_reduce → allreduce, all_gather → allgather, alltoall → alltoall (msg_bytes = the per-GPU
send buffer); reduce_scatter → ``unsupported_collective``. message_size is in elements: msg_bytes = size
× 2 (half) or × 1 (int8); other dtypes → ``unsupported_dtype``. world_size=num_gpus, compute fp16.
custom_allreduce_perf: CUDA-graph rows (backend ``*_graph`` or kernel_source with "graph") → allreduce of
message_size × 2 bytes; eager rows → ``eager_mode`` (serving replays collectives in CUDA graphs); rows that
record neither (TRT-LLM's) → ``capture_mode_unknown``.
Module-level tables (``mla_*_module``, ``msa_*``, ``dsa_*``, ``dsv4_*``, ``wideep_*``, ``mhc``) time whole
attention or MoE blocks with projections and norms: no single op matches, so → ``module_table``.
Other tables (encoder_attention, kda, mamba2, mla_bmm, quantize, oneccl, ...) → ``unsupported_table``.
A table its ``collection_meta.yaml`` (beside the parquet files) marks ``status: partial`` is an interrupted
collection (GB300's vLLM 0.14.0 context attention holds only 1-token prompts) → ``partial_table``: its rows
are not a sample of the sweep, and the same GPU has complete tables of later runtimes.
Converted rows are subsampled uniformly to at most :data:`features.aic_common.MAX_ROWS_PER_FILE` per file
(``subsampled``). Empty files are skipped; unreadable files, missing or non-numeric columns raise a one-line
InputError. Finally :func:`features.schema.validate` drops invalid rows and averages duplicate keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from features import aic_dense as dense
from features import aic_today as today
from features.aic_common import SOURCE, AicFile, AicTable, subsample
from features.schema import IngestReport, empty_frame, validate
from predictor.errors import InputError

__all__ = ["SOURCE", "SYSTEM_GPUS", "TABLES", "RUNTIMES", "load_aiconfigurator", "system_folders", "system_gpu"]

# aiconfigurator system folder → catalogue GPU name.
SYSTEM_GPUS: dict[str, str] = {
    "a100_sxm": "a100-80gb",
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "l40s": "l40s",
    "b200_sxm": "b200",
    "b300_sxm": "b300",
    "gb200": "gb200",
    "gb300": "gb300",
    "rtx_pro_6000_server": "rtx-pro-6000-server",
    "b60": "arc-pro-b60",
}
RUNTIMES = ("vllm", "sglang", "trtllm")
MODULE_TABLE_PREFIXES = ("mla_context_module", "mla_generation_module", "msa_", "dsa_", "dsv4_", "wideep_",
                         "mhc_module", "glm5_")

_ATTN_COLUMNS = ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype")
_MLA_COLUMNS = ("mla_dtype", "kv_cache_dtype", "num_heads", "batch_size", "isl", "latency")
TABLES: dict[str, AicTable] = {
    "gemm_perf": AicTable(("gemm_dtype", "m", "n", "k", "latency"), dense.gemm),
    "context_attention_perf": AicTable((*_ATTN_COLUMNS, "latency"), dense.context_attention),
    "generation_attention_perf": AicTable((*_ATTN_COLUMNS, "step", "latency"), dense.generation_attention),
    "context_mla_perf": AicTable(_MLA_COLUMNS, today.context_mla),
    "generation_mla_perf": AicTable((*_MLA_COLUMNS, "step"), today.generation_mla),
    "moe_perf": AicTable(("moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
                          "moe_tp_size", "moe_ep_size", "distribution", "latency"), today.moe),
    "gdn_perf": AicTable(("kernel_source", "phase", "batch_size", "seq_len", "num_v_heads", "head_k_dim",
                          "head_v_dim", "latency"), today.gdn),
    "nccl_perf": AicTable(("op_name", "nccl_dtype", "num_gpus", "message_size", "latency"), dense.nccl),
    "custom_allreduce_perf": AicTable(("num_gpus", "message_size", "latency"), dense.custom_allreduce),
}
_NUMERIC = {"m", "n", "k", "latency", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
            "step", "window_size", "beam_width", "num_tokens", "hidden_size", "inter_size", "topk",
            "num_experts", "moe_tp_size", "moe_ep_size", "num_gpus", "message_size", "seq_len", "num_v_heads",
            "head_k_dim", "head_v_dim"}


# --- walking the folders ------------------------------------------------------------------------

def _is_system_folder(path: Path) -> bool:
    """Whether ``path`` looks like one ``<system>`` folder (holds ``<family>/<runtime>`` or ``comm/nccl``)."""
    return (path.name in SYSTEM_GPUS or any(any(path.glob(f"*/{r}")) for r in RUNTIMES)
            or (path / "comm" / "nccl").is_dir())


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


def _table_files(folder: Path, gpu: str) -> Iterator[AicFile]:
    """Parquet files under one system folder: every runtime's sweeps and NCCL sweeps, in a stable order."""
    paths = [p for r in RUNTIMES for p in folder.glob(f"*/{r}/*/*.parquet")]
    paths += list(folder.glob("comm/nccl/*/*.parquet"))
    for path in sorted(paths):
        if path.is_file():
            yield AicFile(path, gpu, path.parent.parent.name, path.parent.name)


def _row_count(path: Path) -> int:
    """Rows in a parquet file, from its footer (no data read)."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as err:  # noqa: BLE001 - any reader failure means "not parquet"
        raise InputError(f"{str(path)!r}: cannot be read as parquet ({type(err).__name__})") from None


def partial_tables(folder: Path) -> frozenset[str]:
    """Table names the ``collection_meta.yaml`` of a version folder marks ``status: partial`` (none without one)."""
    meta_path = folder / "collection_meta.yaml"
    if not meta_path.is_file():
        return frozenset()
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{str(meta_path)!r}: not valid YAML ({type(err).__name__})") from None
    tables = meta.get("tables") if isinstance(meta, dict) else None
    if not isinstance(tables, dict):
        return frozenset()
    return frozenset(name for name, entry in tables.items()
                     if isinstance(entry, dict) and str(entry.get("status", "")).lower() == "partial")


def _read(path: Path, table: AicTable) -> pd.DataFrame:
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


def _convert_file(f: AicFile, report: IngestReport) -> pd.DataFrame | None:
    """Canonical rows of one file; ``None`` for empty files and tables we do not use."""
    table = TABLES.get(f.path.stem)
    if table is None:
        reason = "module_table" if f.path.stem.startswith(MODULE_TABLE_PREFIXES) else "unsupported_table"
        report.reject(reason, _row_count(f.path))
        return None
    if f.path.stem in partial_tables(f.path.parent):
        report.reject("partial_table", _row_count(f.path))
        return None
    df = _read(f.path, table)
    if df.empty:
        return None
    return subsample(table.convert(df.reset_index(drop=True), f, report), report)


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
