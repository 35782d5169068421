"""Vidur's published profiles → canonical kernel rows.

Layout understood (as published by Vidur, and for a user's own folder in the same layout)::

    <root>/.../compute/<gpu>/<org>/<model>/mlp.csv         per-op token-level kernels
    <root>/.../compute/<gpu>/<org>/<model>/attention.csv   attention (per model)
    <root>/.../profiling/<gpu>/attention.csv               attention (older layout, no model folder)
    <root>/.../network/<node>/all_reduce.csv               all-reduce
    <root>/.../profiling/<gpu>/all_reduce.csv              all-reduce (older layout)

Mapping (times are the ``time_stats.<op>.median`` columns, ms; Vidur profiles fp16):

* ``mlp.csv``: each row is one (model, TP shard divisor, num_tokens) point; each op becomes a row whose
  shapes come from the model dimensions through :func:`predictor.ops.linear_shapes` — the same code the
  roofline uses for iterations. ``attn_pre_proj`` → ``qkv_proj`` GEMM (m = tokens, k = hidden,
  n = (heads + 2·kv_heads)·head_dim / tp), ``attn_post_proj`` → ``o_proj``, ``mlp_up_proj`` →
  ``gate_up_proj``, ``mlp_down_proj`` → ``down_proj``, ``emb`` → embedding, ``input_layernorm`` /
  ``post_attention_layernorm`` → norms, ``attn_rope`` → rope, ``mlp_act`` → act, ``add`` → residual add.
  The model's dimensions come from the catalogue when the folder name resolves to a catalogue model
  (and must agree with the file's ``n_head, n_kv_head, n_embd, n_expanded_embd``), else from the file.
* ``attention.csv``: decode rows → ``attn_decode`` (batch = batch_size, kv_len = kv_cache_size + 1);
  prefill rows → ``attn_prefill`` (q_tokens = prefill_chunk_size, kv_len = kv_cache_size + chunk).
  The measured time is the attention kernel plus ``attn_input_reshape`` (the KV-cache write, which
  our attention op includes, as vLLM's attention forward does). Heads are per TP shard.
* ``all_reduce.csv``: rows with ``num_workers == devices_per_node`` (one node, as Vidur's own model
  uses) → ``allreduce`` with msg_bytes = size, world_size = num_workers. Repeated ranks of one size
  are averaged by validation. Nodes with pairwise NVLink topologies (``*_pairwise_nvlink``) have no
  catalogue GPU describing their links and are skipped (counted as ``topology_not_in_catalogue``).

GPU folders: a100 / a100_dgx → a100-80gb, h100 / h100_dgx → h100-sxm, a40 → a40.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from features import schema
from features.schema import IngestReport
from predictor.errors import InputError
from predictor.model_spec import ModelSpec
from predictor.models import get_model, resolve_model_name
from predictor.ops import linear_shapes, rope_width

SOURCE = "vidur"
FRAMEWORK = "sarathi-serve"
GPU_FOLDERS = {"a100": "a100-80gb", "a100_dgx": "a100-80gb", "h100": "h100-sxm", "h100_dgx": "h100-sxm", "a40": "a40"}
SKIPPED_NODES = re.compile(r"pairwise_nvlink$")

MLP_KEYS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers")
ATTENTION_KEYS = ("n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
                  "prefill_chunk_size", "kv_cache_size", "is_prefill")
NETWORK_KEYS = ("num_workers", "devices_per_node", "size", "time_stats.all_reduce.median")

# Vidur op name → (our op name, op kind)
MLP_OPS = {
    "emb": ("embedding", "embedding"),
    "input_layernorm": ("input_norm", "norm"),
    "attn_pre_proj": ("qkv_proj", "gemm"),
    "attn_rope": ("rope", "rope"),
    "attn_post_proj": ("o_proj", "gemm"),
    "post_attention_layernorm": ("post_attn_norm", "norm"),
    "mlp_up_proj": ("gate_up_proj", "gemm"),
    "mlp_act": ("act", "act"),
    "mlp_down_proj": ("down_proj", "gemm"),
    "add": ("residual_add", "add"),
}
FP16 = {"compute_dtype": "fp16", "weight_bits": 16.0, "act_bits": 16.0, "kv_bits": 16.0}


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: not a readable CSV file ({type(err).__name__})") from None
    if df.empty:
        raise InputError(f"{path}: file has a header but no rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}")
    for c in required:
        if c != "is_prefill" and not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            raise InputError(f"{path}: column {c!r} must be numeric, got values like {df[c].iloc[0]!r}")
    return df


def gpu_for_folder(name: str, path: Path) -> str:
    """Catalogue GPU for a Vidur GPU or node folder name."""
    if name not in GPU_FOLDERS:
        raise InputError(f"{path}: unknown GPU folder {name!r}; allowed: {', '.join(sorted(GPU_FOLDERS))}")
    return GPU_FOLDERS[name]


def model_from_folder(org_model: str, first_row: pd.Series, path: Path) -> ModelSpec:
    """The model whose shapes a Vidur ``mlp.csv`` was profiled with (catalogue first, else the file)."""
    hidden, heads = int(first_row["n_embd"]), int(first_row["n_head"])
    kv, inter = int(first_row["n_kv_head"]), int(first_row["n_expanded_embd"])
    key = resolve_model_name(org_model)
    if key is not None:
        spec = get_model(key)
        if (spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.intermediate_size) != (hidden, heads, kv, inter):
            raise InputError(
                f"{path}: dimensions (hidden {hidden}, heads {heads}, kv {kv}, mlp {inter}) disagree with catalogue "
                f"model {key} ({spec.hidden_size}, {spec.num_heads}, {spec.num_kv_heads}, {spec.intermediate_size})"
            )
        return spec
    return ModelSpec(name=org_model, family="custom", hidden_size=hidden, intermediate_size=inter, num_layers=1,
                     num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads,
                     vocab_size=int(first_row.get("vocab_size", 32000)), max_position_embeddings=4096,
                     gated_mlp=bool(first_row["use_gated_mlp"]))


def load_mlp(path: Path, gpu: str, model: ModelSpec) -> pd.DataFrame:
    """Canonical rows from one ``mlp.csv`` (vectorised per TP degree)."""
    df = _read_csv(path, MLP_KEYS)
    parts = []
    for tp, group in df.groupby("num_tensor_parallel_workers"):
        tp = int(tp)
        try:
            model.check_tp(tp)
        except InputError:
            raise InputError(f"{path}: num_tensor_parallel_workers {tp} does not shard {model.name}") from None
        shapes = linear_shapes(model, tp)
        tokens = group["num_tokens"].to_numpy(float)
        inter_local = model.intermediate_size / tp
        for vidur_op, (op, kind) in MLP_OPS.items():
            column = f"time_stats.{vidur_op}.median"
            if column not in group.columns:
                continue  # e.g. phi-2 has no post_attention_layernorm / add
            if kind == "gemm":
                n, k = shapes[op]
                shape = {"m": tokens, "n": float(n), "k": float(k)}
            elif op == "rope":
                shape = {"m": tokens, "n": rope_width(model, tp)}
            elif op == "act":
                shape = {"m": tokens, "n": inter_local, "gated": float(model.gated_mlp)}
            else:
                shape = {"m": tokens, "n": float(model.hidden_size)}
            parts.append(schema.make_rows(
                len(group), source=SOURCE, gpu=gpu, framework=FRAMEWORK, model=model.name, op=op, op_kind=kind,
                tp=float(tp), measured_ms=group[column].to_numpy(float), **shape, **FP16,
            ))
    return pd.concat(parts, ignore_index=True) if parts else schema.empty_frame()


def load_attention(path: Path, gpu: str, model_name: str) -> pd.DataFrame:
    """Canonical rows from one Vidur ``attention.csv``."""
    df = _read_csv(path, ATTENTION_KEYS)
    for c in ("time_stats.attn_input_reshape.median",):
        if c not in df.columns:
            raise InputError(f"{path}: missing column {c!r}")
    tp = df["num_tensor_parallel_workers"].to_numpy(float)
    heads = df["n_q_head"].to_numpy(float)
    kv = df["n_kv_head"].to_numpy(float)
    head_dim = df["n_embd"].to_numpy(float) / heads
    is_prefill = df["is_prefill"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    reshape = df["time_stats.attn_input_reshape.median"].fillna(0.0).to_numpy(float)
    batch = df["batch_size"].to_numpy(float)
    chunk = df["prefill_chunk_size"].to_numpy(float)
    cached = df["kv_cache_size"].to_numpy(float)
    parts = []
    for prefill, op, column in ((True, "attn_prefill", "time_stats.attn_prefill.median"),
                                (False, "attn_decode", "time_stats.attn_decode.median")):
        sel = is_prefill == prefill
        if not sel.any():
            continue
        if column not in df.columns:
            raise InputError(f"{path}: missing column {column!r}")
        q = chunk[sel] if prefill else np.ones(sel.sum())
        parts.append(schema.make_rows(
            int(sel.sum()), source=SOURCE, gpu=gpu, framework=FRAMEWORK, model=model_name, op=op, op_kind=op,
            shape_family="" if model_name else f"attn:h{int(heads[sel][0])}kv{int(kv[sel][0])}d{int(head_dim[sel][0])}",
            tp=tp[sel], batch=batch[sel], q_tokens=q, kv_len=cached[sel] + q,
            heads=heads[sel] / tp[sel], kv_heads=np.maximum(kv[sel] / tp[sel], 1.0), head_dim=head_dim[sel],
            measured_ms=df.loc[sel, column].to_numpy(float) + reshape[sel], **FP16,
        ))
    return pd.concat(parts, ignore_index=True) if parts else schema.empty_frame()


def load_all_reduce(path: Path, gpu: str, report: IngestReport) -> pd.DataFrame:
    """Canonical rows from one Vidur ``all_reduce.csv`` (single-node rows only)."""
    df = _read_csv(path, NETWORK_KEYS)
    one_node = (df["num_workers"] == df["devices_per_node"]).to_numpy()
    report.reject("multi_node", int((~one_node).sum()))
    df = df.loc[one_node]
    return schema.make_rows(
        len(df), source=SOURCE, gpu=gpu, framework="nccl", op="allreduce", op_kind="allreduce",
        shape_family="", msg_bytes=df["size"].to_numpy(float), world_size=df["num_workers"].to_numpy(float),
        tp=df["num_workers"].to_numpy(float), measured_ms=df["time_stats.all_reduce.median"].to_numpy(float),
        **FP16,
    )


def load_vidur(root: str | Path, report: IngestReport | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Every Vidur profile file under ``root`` as validated canonical rows.

    Parameters
    ----------
    root : path
        A folder in Vidur's layout (e.g. ``vidur/data/profiling`` or a user's own profiling folder).
    report : IngestReport, optional
        Accumulates kept and rejected counts.

    Raises
    ------
    InputError
        Root missing or without profile files; a malformed file (named, with the column).
    """
    root = Path(root)
    report = report or IngestReport()
    if not root.exists():
        raise InputError(f"--source vidur: {str(root)!r} does not exist")
    if not root.is_dir():
        raise InputError(f"--source vidur: {str(root)!r} is not a folder")
    parts = []
    for path in sorted(root.rglob("*.csv")):
        rel = path.relative_to(root).parts
        parents = path.parts
        if path.name == "mlp.csv" and "compute" in parents:
            i = parents.index("compute")
            gpu = gpu_for_folder(parents[i + 1], path)
            org_model = "/".join(parents[i + 2:-1])
            first = _read_csv(path, MLP_KEYS).iloc[0]
            parts.append(load_mlp(path, gpu, model_from_folder(org_model, first, path)))
        elif path.name == "attention.csv":
            if "compute" in parents:
                i = parents.index("compute")
                gpu = gpu_for_folder(parents[i + 1], path)
                key = resolve_model_name("/".join(parents[i + 2:-1]))
                model_name = key or "/".join(parents[i + 2:-1])
            else:
                gpu, model_name = gpu_for_folder(path.parent.name, path), ""
            if "network" in parents:
                report.reject("misplaced_file", len(pd.read_csv(path, usecols=[0])))
                continue
            parts.append(load_attention(path, gpu, model_name))
        elif path.name == "all_reduce.csv":
            node = path.parent.name
            if SKIPPED_NODES.search(node):
                report.reject("topology_not_in_catalogue", len(pd.read_csv(path, usecols=[0])))
                continue
            parts.append(load_all_reduce(path, gpu_for_folder(node, path), report))
        elif len(rel) and path.name in ("send_recv.csv", "cpu_overheads.csv"):
            continue  # not kernel rows (send/recv is pipeline-parallel; CPU overheads are loaded elsewhere)
    if not parts:
        raise InputError(f"--source vidur: no mlp.csv, attention.csv or all_reduce.csv under {str(root)!r}")
    df = pd.concat(parts, ignore_index=True)
    return schema.validate(df, source=str(root), report=report)
