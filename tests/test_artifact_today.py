"""The shipped residual model on today's kernels: it loads with this version's features and predicts
MLA and MoE rows as the op model emits them (finite, positive, near the measured times it learned)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.canonical import load_kernels
from features.schema import make_rows
from predictor.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


def test_artifact_predicts_mla_decode_and_moe_rows(predictor):
    # DeepSeek-V3 at TP 8: 16 local heads over one 576-wide latent (absorbed decode), 4 sequences of 4096
    # cached tokens; and one MoE layer of 256 experts, top-8, EP 8, 64 tokens, power-law routing 1.2.
    mla = make_rows(1, gpu="h100-sxm", op="mla_decode", op_kind="attn_decode", compute_dtype="bf16", batch=4,
                    q_tokens=1, kv_len=4096, heads=16, kv_heads=1, head_dim=576, v_head_dim=512, latent_kv=1)
    moe = make_rows(1, gpu="h100-sxm", op="moe_experts", op_kind="moe", compute_dtype="fp8", m=64, k=7168,
                    n=2048, experts=256, experts_local=32, topk=8, weight_bits=8, act_bits=8, routing_skew=1.2)
    out = predictor.predict_ops(pd.concat([mla, moe], ignore_index=True))
    assert predictor.is_hybrid
    assert np.isfinite(out["predicted_ms"]).all() and (out["predicted_ms"] > 0).all()
    assert (out["predicted_ms"] >= 0.1 * out["roofline_ms"]).all()


@pytest.mark.slow
def test_artifact_beats_the_roofline_on_shipped_mla_and_moe_rows(predictor):
    """On the shipped MLA and MoE rows the learned residual brings the median error per op below the
    roofline's: the model has learned these kernels (a broken feature mapping would not)."""
    kernels = load_kernels(sources=("aiconfigurator",))
    rows = kernels[kernels["op"].isin(["mla_prefill", "mla_decode", "moe_experts"])]
    rows = rows.groupby("op").sample(n=2000, random_state=0)
    out = predictor.predict_ops(rows)
    measured = rows["measured_ms"].to_numpy()
    ape = pd.DataFrame({"hybrid": np.abs(out["predicted_ms"].to_numpy() - measured) / measured,
                        "roofline": np.abs(out["roofline_ms"].to_numpy() - measured) / measured}, index=rows.index)
    medians = ape.groupby(rows["op"]).median()
    assert (medians["hybrid"] < medians["roofline"]).all(), medians.to_dict()
