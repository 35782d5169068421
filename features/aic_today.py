"""AIConfigurator tables of today's model families → canonical rows: MLA attention, MoE in every
dtype with skewed routing, and gated delta-net linear attention (mapping rules in
:mod:`features.ingest_aiconfigurator`).

The MLA tables measure DeepSeek-V3-shaped attention (``num_heads`` = 128 / ``tp_size``); the
widths below are that architecture's (``kv_lora_rank`` 512, ``qk_rope_head_dim`` 64,
``qk_nope_head_dim`` 128, ``v_head_dim`` 128), emitted exactly as the op model emits them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.aic_common import AicFile, family, keep, keep_known, num, precision, rows, text
from features.aic_dense import GEMM_DTYPES, attention_dtypes, block_fp8_policy
from features.schema import IngestReport
from predictor import opcost as oc

KV_LORA_RANK = 512
QK_ROPE_HEAD_DIM = 64
QK_NOPE_HEAD_DIM = 128
MLA_V_HEAD_DIM = 128

# MoE dtype → (weight_bits, act_bits, compute_dtype): the GEMM dtypes the MoE tables use, plus MXFP4 experts.
MOE_DTYPES: dict[str, tuple[int, int, str]] = {
    **{name: GEMM_DTYPES[name] for name in ("bfloat16", "fp8", "fp8_block", "nvfp4", "int4_wo")},
    "w4a16_mxfp4": (4, 16, "bf16"),
    "w4a8_mxfp4_mxfp8": (4, 8, "fp8"),
}
# gated delta-net kernels that are the linear-attention op (the causal_conv1d ones are the short
# convolution before it: a different kernel, counted as ``gdn_conv1d``).
GDN_KERNEL_PREFIXES = ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule")
GDN_PHASES = ("context", "generation")


def context_mla(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """context_mla_perf rows → decompressed MLA prefill: attn_prefill with heads = kv_heads = local heads,
    head_dim = qk_nope + qk_rope (192), v_head_dim 128, ``isl`` new tokens per sequence."""
    df, prec = attention_dtypes(df, report, act_column="mla_dtype")
    heads, isl = num(df, "num_heads"), num(df, "isl")
    return rows(df, f, family("mla_prefill:", h=heads), op="mla_prefill", op_kind=oc.ATTN_PREFILL,
                batch=num(df, "batch_size"), q_tokens=isl, kv_len=isl, heads=heads, kv_heads=heads,
                head_dim=float(QK_NOPE_HEAD_DIM + QK_ROPE_HEAD_DIM), v_head_dim=float(MLA_V_HEAD_DIM),
                latent_kv=0.0, **prec)


def generation_mla(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """generation_mla_perf rows → absorbed MLA decode: attn_decode with kv_heads 1, head_dim
    kv_lora_rank + qk_rope (576), v_head_dim kv_lora_rank (512), latent_kv 1, ``step + 1`` cached tokens."""
    df, prec = attention_dtypes(df, report, act_column="mla_dtype")
    heads = num(df, "num_heads")
    return rows(df, f, family("mla_decode:", h=heads), op="mla_decode", op_kind=oc.ATTN_DECODE,
                batch=num(df, "batch_size"), q_tokens=1.0, kv_len=num(df, "step") + 1.0, heads=heads, kv_heads=1.0,
                head_dim=float(KV_LORA_RANK + QK_ROPE_HEAD_DIM), v_head_dim=float(KV_LORA_RANK), latent_kv=1.0,
                **prec)


def routing_skew(distribution: pd.Series) -> np.ndarray:
    """``balanced`` → 0, ``power_law_<a>`` → a (the exponent of the expert-load power law); other → NaN."""
    values = distribution.to_numpy(dtype=object)
    exponent = pd.to_numeric(distribution.str.extract(r"^power_law_([0-9.]+)$")[0], errors="coerce").to_numpy(float)
    return np.where(values == "balanced", 0.0, exponent)


def moe(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """moe_perf rows → fused MoE over this rank's expert slice, with ``routing_skew`` from ``distribution``."""
    skew = routing_skew(text(df, "distribution"))
    df = keep(df, np.isfinite(skew), "unknown_routing", report)
    df = block_fp8_policy(df, "moe_dtype", report)
    df, codes = keep_known(df, "moe_dtype", MOE_DTYPES, "unsupported_dtype", report)
    hidden, inter = num(df, "hidden_size"), num(df, "inter_size")
    experts, topk = num(df, "num_experts"), num(df, "topk")
    return rows(df, f, family("moe:", h=hidden, i=inter, e=experts, k=topk),
                op="moe_experts", op_kind=oc.MOE, m=num(df, "num_tokens"), k=hidden,
                n=np.floor_divide(inter, num(df, "moe_tp_size")), experts=experts,
                experts_local=np.floor_divide(experts, num(df, "moe_ep_size")), topk=topk, gated=1.0,
                routing_skew=routing_skew(text(df, "distribution")), **precision(MOE_DTYPES, codes))


def gdn(df: pd.DataFrame, f: AicFile, report: IngestReport) -> pd.DataFrame:
    """gdn_perf delta-rule rows → linear_attn: batch sequences of ``seq_len`` tokens (1 in generation),
    heads = value heads, head_dim = key head width, v_head_dim = value head width, bf16.

    ``num_k_heads`` (grouped keys feeding several value heads) is not mapped: the op model's state and
    FLOPs scale with the value heads, and it emits ``kv_heads`` 0 for this kind.
    """
    source = text(df, "kernel_source")
    df = keep(df, source.str.startswith(GDN_KERNEL_PREFIXES).to_numpy(bool), "gdn_conv1d", report)
    phase = text(df, "phase")
    df = keep(df, phase.isin(GDN_PHASES).to_numpy(bool), "unknown_phase", report)
    decode = (text(df, "phase") == "generation").to_numpy(bool)
    heads = num(df, "num_v_heads")
    dk, dv = num(df, "head_k_dim"), num(df, "head_v_dim")
    return rows(df, f, family("gdn:", h=heads, dk=dk, dv=dv), op="gdn", op_kind=oc.LINEAR_ATTN,
                batch=num(df, "batch_size"), q_tokens=np.where(decode, 1.0, num(df, "seq_len")),
                heads=heads, head_dim=dk, v_head_dim=dv,
                act_bits=16.0, compute_dtype="bf16")
